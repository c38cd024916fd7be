"""Progress bars that stay quiet when output is not a terminal (CI logs stay readable)."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def progress(it: Iterable[T], desc: str = "", total: int | None = None, **kw: Any) -> Iterable[T]:
    from tqdm.auto import tqdm

    return tqdm(it, desc=desc, total=total, disable=not sys.stderr.isatty() and
                kw.pop("force", False) is False, dynamic_ncols=True, **kw)
