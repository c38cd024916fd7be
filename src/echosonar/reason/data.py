"""SFT data: studies from the feature cache, targets from textformat, a resumable batch order.

The order is a pure function of ``(seed, step)``: the global sample stream is the concatenation
of per-epoch permutations (epoch e uses ``seed + e``), step ``s`` takes items
``[s*B, (s+1)*B)`` of it, and DDP rank ``r`` of ``W`` takes the ``r``-th of ``W`` equal slices of
that global batch. So resuming at step ``s`` needs no sampler state, and 1 or ``W`` processes
see the same global batches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echosonar.io.features import FeatureCacheError, iter_features
from echosonar.schema import StudyFeatures
from echosonar.textformat import target_text


def sft_target(sf: StudyFeatures) -> str:
    """The SFT target text of a study (EOS is appended by the model's target encoder)."""
    if sf.reasoning is None or sf.labels is None or sf.report is None:
        raise ValueError(f"study {sf.key} has no reasoning/labels/report target")
    return target_text(sf.reasoning, sf.labels, sf.report)


def load_split(features: str | Path, split: str, require_targets: bool = True,
               limit: int = 0) -> list[StudyFeatures]:
    """All studies of ``split`` in the cache at ``features`` (the first ``limit`` if > 0)."""
    out = []
    for sf in iter_features(features, split):
        if require_targets and (not sf.reasoning or sf.labels is None or not sf.report):
            raise FeatureCacheError(f"{features}: study {sf.key} ({split}) has no reasoning/"
                                    "labels/report, which SFT needs")
        out.append(sf)
        if limit and len(out) >= limit:
            break
    return out


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0,
                  world: int = 1) -> list[int]:
    """Dataset indices of this rank's share of global batch ``step`` (see module docstring).

    >>> batch_indices(5, 4, 0, 0) + batch_indices(5, 4, 1, 0)[:1] == \
        np.random.default_rng(0).permutation(5).tolist()
    True
    """
    if batch_size % world:
        raise ValueError(f"global batch {batch_size} is not divisible by {world} processes")
    start = step * batch_size
    items = []
    for g in range(start, start + batch_size):
        epoch, i = divmod(g, n)
        items.append(int(_perm(n, seed + epoch)[i]))
    per = batch_size // world
    return items[rank * per:(rank + 1) * per]


_PERMS: dict[tuple[int, int], np.ndarray] = {}


def _perm(n: int, seed: int) -> np.ndarray:
    key = (n, seed)
    if key not in _PERMS:
        if len(_PERMS) > 8:
            _PERMS.clear()
        _PERMS[key] = np.random.default_rng(seed).permutation(n)
    return _PERMS[key]
