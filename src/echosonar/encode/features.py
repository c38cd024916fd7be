"""Build the feature cache (``io/features``) from an ingest cache: what the language model reads.

Per clip: ``clip_tokens [1 + N, D_enc]`` from a :class:`VideoEncoder`; from the detector (when
given) ``structure_tokens [K, D_det]``, ``structure_scores [K]``, ED ``boxes`` in 0..1 and
detector measurements. Without a detector the structure tokens and scores are zeros, boxes and
measurements empty, and the index says so (``index["detector"]["used"] = false``).

Resumable: studies already in ``FEATURES/index.json`` whose tensor file exists are skipped; the
index is rewritten every ``index_every`` studies and at the end.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echosonar.encode.data import stack_frames
from echosonar.encode.protocol import VideoEncoder
from echosonar.io.features import INDEX, read_index, write_index, write_study_features
from echosonar.schema import Clip, Study, StudyFeatures, ViewFeatures
from echosonar.taxonomy import STRUCTURES

#: Signature of a detector hook: clip -> (structure_tokens [K, D], scores [K], boxes, meas).
DetectFn = Callable[[Clip], tuple[np.ndarray, np.ndarray, dict[str, list[float]],
                                  dict[str, float]]]


def no_detector(dim: int) -> DetectFn:
    """Zeros for every structure (the LM still gets a fixed-shape input)."""
    def fn(clip: Clip) -> tuple[np.ndarray, np.ndarray, dict, dict]:
        return (np.zeros((len(STRUCTURES), dim), np.float32),
                np.zeros(len(STRUCTURES), np.float32), {}, {})
    return fn


def detector_hook(path: str | Path) -> tuple[DetectFn, dict[str, Any]]:
    """Load the detect stage's detector from ``path``; returns ``(hook, index info)``.

    Uses ``echosonar.detect``: ``Detector.from_pretrained(dir)`` and ``detect_clip(model, clip)
    -> ClipDetections`` with ``tokens [K, D]``, ``clip_scores [K]`` (presence over the clip;
    older builds: max over ``scores [T, K]``), ``ed_boxes {S: box01}`` and ``measurements``.
    """
    from echosonar.detect.infer import detect_clip
    from echosonar.detect.model import Detector

    model = Detector.from_pretrained(path)
    model.eval()

    def fn(clip: Clip) -> tuple[np.ndarray, np.ndarray, dict, dict]:
        with torch.no_grad():
            det = detect_clip(model, clip)
        tokens = np.asarray(_np(det.tokens), np.float32)
        score = getattr(det, "clip_scores", None)
        score = _np(det.scores).max(0) if score is None else _np(score)
        boxes = {s: [float(v) for v in b] for s, b in (det.ed_boxes or {}).items()}
        meas = {k: float(v) for k, v in (det.measurements or {}).items()}
        return tokens, np.asarray(score, np.float32), boxes, meas

    return fn, {"used": True, "path": str(path), "kind": "detector",
                "dim": int(getattr(getattr(model, "config", None), "embed_dim", 0) or 0)}


def _np(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


@torch.no_grad()
def encode_clips(encoder: VideoEncoder, clips: list[Clip], batch_size: int = 16) -> np.ndarray:
    """Clip tokens for ``clips`` -> float32 ``[len(clips), 1 + N, D]`` (same-shape batches)."""
    out: list[np.ndarray | None] = [None] * len(clips)
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(clips):   # colour and grey clips batch together (3 channels)
        t, _, h, w = c.frames.shape
        groups.setdefault((t, h, w), []).append(i)
    for idx in groups.values():
        for s in range(0, len(idx), batch_size):
            part = idx[s:s + batch_size]
            x = stack_frames([clips[i].frames for i in part])
            tok = encoder.encode(x, [clips[i].view for i in part]).float().cpu().numpy()
            for j, i in enumerate(part):
                out[i] = tok[j]
    return np.stack(out).astype(np.float32)  # type: ignore[arg-type]


def encode_study(encoder: VideoEncoder, study: Study, detect: DetectFn,
                 batch_size: int = 16) -> StudyFeatures:
    """One study -> :class:`StudyFeatures` with its ground truth carried over."""
    tokens = encode_clips(encoder, study.clips, batch_size) if study.clips else []
    views = []
    for clip, tok in zip(study.clips, tokens, strict=True):
        st, sc, boxes, meas = detect(clip)
        views.append(ViewFeatures(view=clip.view, clip_tokens=tok, structure_tokens=st,
                                  structure_scores=sc, boxes=boxes, measurements=meas,
                                  view_conf=float(clip.view_conf)))
    return StudyFeatures(key=study.key, views=views, labels=study.labels,
                         measurements=study.measurements, reasoning=study.reasoning,
                         report=study.report, split=study.split)


def build_feature_cache(studies: Iterable[Study], out: str | Path, encoder: VideoEncoder,
                        encoder_info: dict[str, Any], detect: DetectFn | None = None,
                        detector_info: dict[str, Any] | None = None, batch_size: int = 16,
                        index_every: int = 10, total: int | None = None,
                        log: Callable[[str], None] = print,
                        protocol: str = "end-to-end") -> dict[str, Any]:
    """Write ``out/<key>.safetensors`` per study and ``out/index.json``; returns counts.

    ``protocol`` is the ingest cache's (``"oracle"``: true views/sectors/phases;
    ``"end-to-end"``: as a user's files), recorded so that evaluation can say which it scored.
    An existing cache made with a different encoder or protocol is refused (features would be
    mixed).
    """
    from echosonar.config.detect import DetectConfig
    from echosonar.utils.progress import progress

    out = Path(out)
    if detect is None:
        dim = DetectConfig().embed_dim
        detect = no_detector(dim)
        detector_info = {"used": False, "dim": dim,
                         "note": "no detector given: structure_tokens and structure_scores are "
                                 "zeros, boxes and view measurements empty"}
    encoder_info = json.loads(json.dumps(encoder_info))  # compare as the index stores it
    meta = {"encoder": encoder_info, "detector": detector_info or {}, "protocol": protocol}
    entries: list[dict[str, Any]] = []
    if (out / INDEX).is_file():
        old = read_index(out)
        if old.get("encoder") != encoder_info:
            raise ValueError(f"{out} already holds features from another encoder "
                             f"({old.get('encoder')}); use a new --out folder")
        if old.get("protocol", "oracle") != protocol:
            raise ValueError(f"{out} holds {old.get('protocol', 'oracle')!r}-protocol features; "
                             f"these studies were ingested {protocol!r}: use a new --out folder")
        entries = [e for e in old["studies"] if (out / e["file"]).is_file()]
    done = {e["key"] for e in entries}
    written = skipped = 0
    for study in progress(studies, desc="encode", total=total):
        if study.key in done:
            skipped += 1
            continue
        sf = encode_study(encoder, study, detect, batch_size)
        entries.append(write_study_features(out, sf))
        done.add(study.key)
        written += 1
        if written % max(1, index_every) == 0:
            write_index(out, entries, **meta)
    write_index(out, entries, **meta)
    log(f"feature cache {out}: {written} studies written, {skipped} already present, "
        f"{len(entries)} in index")
    return {"written": written, "skipped": skipped, "total": len(entries)}
