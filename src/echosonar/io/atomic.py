"""Write files so that a crash never leaves a half-written one: temp file in the same folder,
fsync, then ``os.replace`` (atomic on POSIX).

Kill-safety (SIGKILL at any instruction):

* A file or folder is only ever visible complete: writers fill a temporary sibling, then rename.
* Replacing an existing *folder* uses Linux ``renameat2(RENAME_EXCHANGE)``, so there is no instant
  at which the old folder is gone and the new one not yet in place (a resumed training run always
  finds its checkpoint). Elsewhere it falls back to two renames through ``.NAME.old``; a writer
  that finds the folder missing and ``.NAME.old`` present restores it first.
* Temporary names carry the writer's process id (``.NAME.<pid>.<random>.tmp[.suffix]``). Before a
  write, temporaries of the same target left by dead processes are removed, so a restarted run
  cleans up after the one that was killed; :func:`remove_stale_temps` sweeps a whole folder.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: ``.{stem}.{pid}.{8 random}.tmp{suffix}`` (files) / ``.{name}.{pid}.{8 random}.tmp`` (folders)
_TEMP = re.compile(r"^\..*\.(?P<pid>\d+)\.[a-z0-9_]{8}\.tmp(\.[^/]*)?$")


def _temp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _clean_siblings(path: Path) -> None:
    """Remove temporaries of ``path`` (file or folder) left by processes that no longer run."""
    for stem in {path.stem, path.name}:
        for cand in path.parent.glob(f".{glob.escape(stem)}.*.tmp*"):
            m = _TEMP.match(cand.name)
            if m and not _alive(int(m["pid"])):
                _remove(cand)


def remove_stale_temps(folder: str | Path, recursive: bool = True) -> int:
    """Delete temporaries under ``folder`` left by killed writers (their process is gone);
    returns how many were removed. Temporaries of live processes are kept."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")
    n = 0
    for cand in sorted(found, key=lambda p: len(p.parts)):
        m = _TEMP.match(cand.name)
        if m and cand.exists() and not _alive(int(m["pid"])):
            _remove(cand)
            n += 1
    return n


def unwritable_reason(path: str | Path) -> str | None:
    """Why ``path`` cannot be used as an output *folder* (it is a file, or the nearest existing
    ancestor is a file or not writable), or None when it can. CLIs call this before any work."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            return f"{path} exists and is not a folder"
        if not os.access(path, os.W_OK | os.X_OK):
            return f"{path} is not writable"
        return None
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot create {path}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"cannot create {path}: {parent} is not writable"
    return None


def _mkdir_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(unwritable_reason(path.parent)
                                 or f"cannot create folder {path.parent}") from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    The temporary name keeps the final suffix so writers that infer formats from it still work.
    """
    path = Path(path)
    _mkdir_parent(path)
    _clean_siblings(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.stem), suffix=f".tmp{path.suffix}",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 1) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, default=_json_default))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


_RENAMEAT2: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False when
    the platform or file system cannot (then the caller falls back to two renames)."""
    global _RENAMEAT2
    if not sys.platform.startswith("linux"):
        return False
    if _RENAMEAT2 is None:
        try:
            fn = ctypes.CDLL(None, use_errno=True).renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
            fn.restype = ctypes.c_int
            _RENAMEAT2 = fn
        except (OSError, AttributeError):  # glibc < 2.28
            _RENAMEAT2 = False
    if _RENAMEAT2 is False:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if _RENAMEAT2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``path`` (an old one is removed)."""
    path = Path(path)
    _mkdir_parent(path)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not path.exists():  # a fallback swap was killed half-way: undo it
        os.replace(old, path)
    _clean_siblings(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
        elif _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        else:
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
