"""Clip cache: one safetensors shard per study + ``index.json``; what detect/encode train on.

Layout of ``CACHE/``::

    index.json = {"version": 1, "format": "echosonar-clip-cache", "dtype": "uint8",
                  "studies": [entry, ...]}
    studies/<key>.safetensors:
        "{i}.frames"       uint8 [T, C, H, W] (value = round(255 * x)) or float16, clip i
        "{i}.frame_times"  float32 [T] seconds
        "{i}.boxes"        float32 [T, K, 4] pixel boxes in taxonomy.STRUCTURES order, NaN = absent
                           (only for clips with ground-truth boxes)
      header metadata "entry": the study's index entry as JSON (so the index can be rebuilt)

    entry = {"key", "split", "file", "labels", "measurements", "reasoning", "report", "warnings",
             "clips": [{"view", "view_conf", "cm_per_px" (null = unknown), "ed_index",
                        "es_index", "source", "channels", "n_frames", "has_boxes"}, ...]}

Each shard is written atomically, then the index. Writing again into the same folder skips
studies whose shard is already there (resume after an interrupted run); shards that an
interrupted run wrote but never indexed are picked up from their own metadata.
uint8 frames make shards 4x smaller than float32 (a 16x64x64 B-mode clip is 64 KiB) and load
with one memory-mapped read; the quantisation step (1/255) is far below speckle noise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from echosonar.io.atomic import atomic_write_bytes, atomic_write_json
from echosonar.schema import Clip, Study
from echosonar.taxonomy import STRUCTURE_INDEX, STRUCTURES

INDEX = "index.json"
SHARDS = "studies"
FORMAT = "echosonar-clip-cache"


class CacheError(ValueError):
    """A clip cache is missing, incomplete or malformed."""


def _file_for(key: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in key)
    return f"{SHARDS}/{safe}.safetensors"


def _entry(study: Study) -> dict[str, Any]:
    return {
        "key": study.key, "split": study.split, "file": _file_for(study.key),
        "labels": study.labels, "measurements": study.measurements,
        "reasoning": study.reasoning, "report": study.report, "warnings": list(study.warnings),
        "clips": [{"view": c.view, "view_conf": float(c.view_conf),
                   "cm_per_px": None if math.isnan(c.cm_per_px) else float(c.cm_per_px),
                   "ed_index": int(c.ed_index), "es_index": int(c.es_index), "source": c.source,
                   "channels": int(c.frames.shape[1]), "n_frames": int(c.frames.shape[0]),
                   "has_boxes": c.boxes is not None} for c in study.clips],
    }


def _boxes_tensor(boxes: list[dict[str, list[float]]]) -> np.ndarray:
    out = np.full((len(boxes), len(STRUCTURES), 4), np.nan, np.float32)
    for t, fb in enumerate(boxes):
        for name, b in fb.items():
            out[t, STRUCTURE_INDEX[name]] = b
    return out


def write_study(root: str | Path, study: Study, dtype: str = "uint8") -> dict[str, Any]:
    """Write one study's shard atomically; returns its index entry."""
    from safetensors.numpy import save

    if dtype not in ("uint8", "float16"):
        raise ValueError(f"cache dtype must be uint8 or float16, got {dtype!r}")
    entry = _entry(study)
    tensors: dict[str, np.ndarray] = {}
    for i, c in enumerate(study.clips):
        f = np.asarray(c.frames, np.float32)
        tensors[f"{i}.frames"] = (np.rint(np.clip(f, 0, 1) * 255).astype(np.uint8)
                                  if dtype == "uint8" else f.astype(np.float16))
        tensors[f"{i}.frame_times"] = np.asarray(c.frame_times, np.float32)
        if c.boxes is not None:
            tensors[f"{i}.boxes"] = _boxes_tensor(c.boxes)
    path = Path(root) / entry["file"]
    path.parent.mkdir(parents=True, exist_ok=True)
    # serialised in memory, then one atomic write: safetensors' save_file stages its own
    # ".tmpXXXXXX" file beside the target, which a kill would leave in studies/ unnamed by pid
    atomic_write_bytes(path, save(tensors, metadata={"entry": json.dumps(entry),
                                                     "dtype": dtype}))
    return entry


def _shard_entry(path: Path) -> dict[str, Any] | None:
    """The index entry stored in a shard's header, or None if the shard is unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            return json.loads((f.metadata() or {})["entry"])
    except Exception:  # noqa: BLE001 - a damaged shard is simply rewritten
        return None


class CacheWriter:
    """Stream studies into a cache folder; ``close()`` (or leaving the ``with``) writes the index.

    Resumes: studies already in the folder (``has(key)``) are kept and not rewritten.
    """

    def __init__(self, root: str | Path, dtype: str = "uint8", flush_every: int = 100,
                 protocol: str = "end-to-end") -> None:
        """``protocol``: ``"oracle"`` when clips carry a simulator's true views, sectors and
        phases (training caches), ``"end-to-end"`` when they were read as a user's files are
        (what evaluation must score); recorded in the index and carried into feature caches."""
        self.root, self.dtype, self.flush_every = Path(root), dtype, flush_every
        self.protocol = protocol
        self.root.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict[str, Any]] = {}
        if (self.root / INDEX).is_file():
            old = read_index(self.root)
            if old.get("protocol", "oracle") != protocol:
                raise CacheError(f"{self.root} holds a {old.get('protocol', 'oracle')!r} cache; "
                                 f"studies ingested with the {protocol!r} protocol cannot be "
                                 "added to it (use a new --out folder)")
            for e in old["studies"]:
                if (self.root / e["file"]).is_file():
                    self.entries[e["key"]] = e
        known = {e["file"] for e in self.entries.values()}
        for p in sorted((self.root / SHARDS).glob("*.safetensors")):
            rel = f"{SHARDS}/{p.name}"
            if p.name.startswith("."):  # a temporary being (or left half-) written
                continue
            if rel not in known and (e := _shard_entry(p)) is not None and e["file"] == rel:
                self.entries[e["key"]] = e
        self._since_flush = 0

    def has(self, key: str) -> bool:
        return key in self.entries

    def add(self, study: Study, overwrite: bool = False) -> bool:
        """Write ``study`` unless already cached (returns whether it was written)."""
        if self.has(study.key) and not overwrite:
            return False
        self.entries[study.key] = write_study(self.root, study, self.dtype)
        self._since_flush += 1
        if self._since_flush >= self.flush_every:
            self.flush()
        return True

    def reorder(self, keys: list[str]) -> None:
        """Index ``keys`` first, in that order, then every other cached study as before: a run
        that resumed (shards found on disk, not yet indexed) ends with the index order of an
        uninterrupted run."""
        rank = {k: i for i, k in enumerate(keys)}
        items = sorted(self.entries.items(), key=lambda kv: rank.get(kv[0], len(rank)))
        self.entries = dict(items)

    def flush(self) -> Path:
        self._since_flush = 0
        path = self.root / INDEX
        atomic_write_json(path, {"version": 1, "format": FORMAT, "dtype": self.dtype,
                                 "protocol": self.protocol,
                                 "studies": list(self.entries.values())})
        return path

    close = flush

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.flush()


def write_cache(studies: Iterable[Study], out_dir: str | Path, dtype: str = "uint8",
                overwrite: bool = False, protocol: str = "end-to-end") -> Path:
    """Write studies into ``out_dir`` (resumable; see module docstring); returns the index path.
    ``protocol``: see :class:`CacheWriter`."""
    with CacheWriter(out_dir, dtype, protocol=protocol) as w:
        for s in studies:
            w.add(s, overwrite=overwrite)
    return Path(out_dir) / INDEX


def read_index(root: str | Path) -> dict[str, Any]:
    path = Path(root) / INDEX
    if not path.is_file():
        raise CacheError(f"no clip cache index at {path} (run `echosonar ingest SRC --out DIR`)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CacheError(f"malformed clip cache index {path}: {e}") from e
    if data.get("format") != FORMAT:
        raise CacheError(f"{path} is not an EchoSonar clip cache index")
    return data


def load_study(root: str | Path, entry: dict[str, Any], as_float: bool = True) -> Study:
    """Load one indexed study. ``as_float=False`` keeps frames as stored (uint8/float16)."""
    from safetensors.numpy import load_file

    path = Path(root) / entry["file"]
    if not path.is_file():
        raise CacheError(f"clip cache shard missing: {entry['file']}")
    try:
        t = load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise CacheError(f"clip cache shard unreadable: {entry['file']} ({type(e).__name__})") \
            from None
    clips = []
    for i, c in enumerate(entry["clips"]):
        fr = t[f"{i}.frames"]
        if as_float:
            fr = fr.astype(np.float32) / 255.0 if fr.dtype == np.uint8 else fr.astype(np.float32)
        boxes = None
        if c.get("has_boxes"):
            b = t[f"{i}.boxes"]
            boxes = [{STRUCTURES[k]: [float(v) for v in b[f, k]] for k in range(b.shape[1])
                      if not np.isnan(b[f, k, 0])} for f in range(b.shape[0])]
        cm = c.get("cm_per_px")
        clips.append(Clip(view=c["view"], view_conf=c["view_conf"], frames=fr,
                          cm_per_px=math.nan if cm is None else float(cm),
                          frame_times=t[f"{i}.frame_times"], ed_index=c["ed_index"],
                          es_index=c["es_index"], source=c["source"], boxes=boxes))
    return Study(key=entry["key"], clips=clips, labels=entry.get("labels"),
                 measurements=entry.get("measurements"), reasoning=entry.get("reasoning"),
                 report=entry.get("report"), split=entry.get("split"),
                 warnings=list(entry.get("warnings", [])))


def iter_cache(cache_dir: str | Path, split: str | None = None, as_float: bool = True,
               views: Iterable[str] | None = None) -> Iterator[Study]:
    """Yield cached studies (optionally of one split; ``views`` keeps only those clips)."""
    keep = set(views) if views is not None else None
    for entry in read_index(cache_dir)["studies"]:
        if split is not None and entry.get("split") != split:
            continue
        s = load_study(cache_dir, entry, as_float)
        if keep is not None:
            s.clips = [c for c in s.clips if c.view in keep]
        yield s
