"""Feature cache: per-study ``<key>.safetensors`` (tensors) + ``index.json`` (everything else).

Layout of ``FEATURES/``::

    index.json = {"version": 1, "encoder": {...}, "detector": {...},
                  "studies": [{"key", "split", "file", "labels", "measurements", "reasoning",
                               "report", "views": [{"view", "view_conf", "boxes",
                                                    "measurements"}, ...]}, ...]}
    <key>.safetensors: "{i}.clip_tokens" [1+N, D_enc], "{i}.structure_tokens" [K, D_det],
                       "{i}.structure_scores" [K] for view i

Written study by study (each file atomically) and the index last, so an interrupted run leaves
a readable cache of the studies it finished.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from echosonar.io.atomic import atomic_write_json
from echosonar.schema import StudyFeatures, ViewFeatures

INDEX = "index.json"


class FeatureCacheError(ValueError):
    """A feature cache is missing or malformed."""


def _file_for(key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in key)
    return f"{safe}.safetensors"


def write_study_features(root: str | Path, sf: StudyFeatures) -> dict[str, Any]:
    """Write one study's tensors; returns its index entry (pass all entries to write_index)."""
    import torch

    from echosonar.io.checkpoint import save_tensors

    root = Path(root)
    tensors = {}
    for i, v in enumerate(sf.views):
        tensors[f"{i}.clip_tokens"] = torch.as_tensor(np.asarray(v.clip_tokens, np.float32))
        tensors[f"{i}.structure_tokens"] = torch.as_tensor(
            np.asarray(v.structure_tokens, np.float32))
        tensors[f"{i}.structure_scores"] = torch.as_tensor(
            np.asarray(v.structure_scores, np.float32))
    fname = _file_for(sf.key)
    save_tensors(root / fname, tensors)
    return {
        "key": sf.key, "split": sf.split, "file": fname, "labels": sf.labels,
        "measurements": sf.measurements, "reasoning": sf.reasoning, "report": sf.report,
        "views": [{"view": v.view, "view_conf": float(v.view_conf), "boxes": v.boxes,
                   "measurements": v.measurements} for v in sf.views],
    }


def write_index(root: str | Path, entries: list[dict[str, Any]], **meta: Any) -> Path:
    path = Path(root) / INDEX
    atomic_write_json(path, {"version": 1, **meta, "studies": entries})
    return path


def read_index(root: str | Path) -> dict[str, Any]:
    path = Path(root) / INDEX
    if not path.is_file():
        raise FeatureCacheError(f"no feature cache index at {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FeatureCacheError(f"malformed feature index {path}: {e}") from e


def load_study_features(root: str | Path, entry: dict[str, Any]) -> StudyFeatures:
    from echosonar.io.checkpoint import load_tensors

    t = load_tensors(Path(root) / entry["file"])
    views = []
    for i, v in enumerate(entry["views"]):
        views.append(ViewFeatures(
            view=v["view"], view_conf=v.get("view_conf", 1.0), boxes=v.get("boxes", {}),
            measurements=v.get("measurements", {}),
            clip_tokens=t[f"{i}.clip_tokens"].numpy(),
            structure_tokens=t[f"{i}.structure_tokens"].numpy(),
            structure_scores=t[f"{i}.structure_scores"].numpy()))
    return StudyFeatures(key=entry["key"], views=views, labels=entry.get("labels"),
                         measurements=entry.get("measurements"), reasoning=entry.get("reasoning"),
                         report=entry.get("report"), split=entry.get("split"))


def iter_features(root: str | Path, split: str | None = None) -> Iterator[StudyFeatures]:
    """Yield every study (optionally of one split) from a feature cache."""
    for entry in read_index(root)["studies"]:
        if split is None or entry.get("split") == split:
            yield load_study_features(root, entry)
