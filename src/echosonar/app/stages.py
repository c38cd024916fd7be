"""Thin adapters from the app to the stages' public APIs — the only place the app calls them.

Every function here is a call into another stage plus shape bookkeeping; none holds model
logic. :func:`echosonar.app.pipeline.analyze_study` takes any object with these functions
(tests inject fakes), so the pipeline never imports a stage directly.

    load_view_classifier(dir) / load_detector(dir) / load_encoder(dir) / load_vlm(dir)
    ingest(paths, cfg) -> (list[Study], [(basename, reason)])      views left unknown
    label_views(study, model, cfg)                                  in place
    features(bundle, study, cfg, timer) -> (StudyFeatures, [detections per clip])
    keyframe_indices(clip, det) -> (ed, es, estimated)
    clip_structures(det, ed, es) -> [{"name", "score", "present", "box_ed", "box_es"}]
    clip_measurements(det) -> {name: float}
    generate(vlm, sf, max_new_tokens) -> str                        greedy
    label_scores(vlm, sf) -> [float] * len(taxonomy.LABEL_KEYS)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from echosonar.taxonomy import STRUCTURE_INDEX, STRUCTURES


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

def load_view_classifier(path: str | Path) -> Any:
    from echosonar.ingest import ViewClassifier

    return ViewClassifier.from_pretrained(path).eval()


def load_detector(path: str | Path) -> Any:
    from echosonar.detect import Detector

    return Detector.from_pretrained(path).eval()


def load_encoder(path: str | Path) -> Any:
    from echosonar.encode import load_encoder as _load

    return _load(path)


def load_vlm(path: str | Path) -> Any:
    from echosonar.reason.model import EchoSonarR

    return EchoSonarR.from_pretrained(path).eval()


# ---------------------------------------------------------------------------------------------
# Analysis steps
# ---------------------------------------------------------------------------------------------

def ingest(paths: list[str | Path], cfg: Any) -> tuple[list[Any], list[tuple[str, str]]]:
    """Decode + preprocess, grouped into studies; views stay unknown (labelled next)."""
    from echosonar.ingest import ingest_paths

    return ingest_paths(paths, cfg, workers=1, view_model=False)


def label_views(study: Any, model: Any, cfg: Any) -> None:
    from echosonar.ingest import label_views as _label

    _label([study], model, float(cfg.ingest.view_min_conf))


def features(bundle: Any, study: Any, cfg: Any, timer: Any) -> tuple[Any, list[Any]]:
    """The encode stage's ``encode_study`` with the detect stage's ``detect_clip`` as its
    detector hook; the raw detections are kept for the report (end-systolic boxes)."""
    import torch

    from echosonar.detect import detect_clip
    from echosonar.encode.features import encode_study

    dets: list[Any] = []

    def detect(clip: Any) -> tuple[np.ndarray, np.ndarray, dict, dict]:
        with timer("detect"), torch.no_grad():
            det = detect_clip(bundle.detector, clip)
        dets.append(det)
        # the same conversion as echosonar.encode.features.detector_hook (the cache path)
        scores = np.asarray(_np(det.scores), np.float32)
        score = scores.max(0) if scores.ndim == 2 else scores
        return (np.asarray(_np(det.tokens), np.float32), score.astype(np.float32),
                {s: [float(v) for v in b] for s, b in (det.ed_boxes or {}).items()},
                {k: float(v) for k, v in (det.measurements or {}).items()})

    with timer("_detect_encode"):
        sf = encode_study(bundle.encoder, study, detect, int(cfg.encode.batch_size))
    sec = timer.seconds
    sec["encode"] = sec.get("encode", 0.0) + sec.pop("_detect_encode") - sec.get("detect", 0.0)
    return sf, dets


def keyframe_indices(clip: Any, det: Any) -> tuple[int, int, bool]:
    """End-diastole / end-systole frames: from ingest when known, else the frames of largest
    and smallest detected LV box (``estimated=True``), else first and middle frame."""
    t = int(clip.frames.shape[0])
    if clip.ed_index >= 0 and clip.es_index >= 0:
        return int(clip.ed_index), int(clip.es_index), False
    boxes = _np(getattr(det, "boxes", np.zeros((0,))))
    k = STRUCTURE_INDEX["LV"]
    if boxes.ndim == 3 and boxes.shape[0] == t and _present(det, k):
        b = boxes[:, k]
        area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
        if float(area.max()) > 0:
            return int(area.argmax()), int(area.argmin()), True
    return 0, t // 2, True


def _present(det: Any, k: int) -> bool:
    return STRUCTURES[k] in (det.ed_boxes or {})


def clip_structures(det: Any, ed: int, es: int) -> list[dict[str, Any]]:
    """Per structure class: clip-level score, found or not, ED box (what the model reads) and
    the ES box from the per-frame track."""
    scores = np.asarray(_np(det.scores), np.float32)
    score = scores.max(0) if scores.ndim == 2 else scores
    boxes = _np(getattr(det, "boxes", np.zeros((0,))))
    out = []
    for k, s in enumerate(STRUCTURES):
        ed_box = (det.ed_boxes or {}).get(s)
        es_box = None
        if ed_box is not None and boxes.ndim == 3 and es < boxes.shape[0]:
            es_box = [float(min(1.0, max(0.0, v))) for v in boxes[es, k]]
        out.append({"name": s, "score": float(score[k]), "present": ed_box is not None,
                    "box_ed": None if ed_box is None else
                    [float(min(1.0, max(0.0, v))) for v in ed_box],
                    "box_es": es_box})
    return out


def clip_measurements(det: Any) -> dict[str, float]:
    return {k: float(v) for k, v in (getattr(det, "measurements", None) or {}).items()
            if isinstance(v, (int, float, np.floating)) and np.isfinite(v)}


def generate(vlm: Any, sf: Any, max_new_tokens: int) -> str:
    import torch

    with torch.no_grad():
        return vlm.generate([sf], max_new_tokens=int(max_new_tokens), do_sample=False)[0][0]


def label_scores(vlm: Any, sf: Any) -> list[float]:
    import torch

    with torch.no_grad():
        return [float(v) for v in _np(vlm.label_scores([sf]))[0]]
