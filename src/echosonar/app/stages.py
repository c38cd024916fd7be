"""Thin adapters from the app to the stages' public APIs — the only place the app calls them.

Every function here is a call into another stage plus shape bookkeeping; none holds model
logic. :func:`echosonar.app.pipeline.analyze_study` takes any object with these functions
(tests inject fakes), so the pipeline never imports a stage directly.

    load_view_classifier(dir) / load_detector(dir) / load_encoder(dir) / load_vlm(dir)
    ingest(paths, cfg) -> (list[Study], [(basename, reason)])      views left unknown
    label_views(study, model, cfg)                                  in place
    assess_ood(study, model) -> [ood dict per clip]                 the view classifier's guard
    features(bundle, study, cfg, timer) -> (StudyFeatures, [detections per clip])
    keyframe_indices(clip, det) -> (ed, es, estimated)
    clip_structures(det, ed, es) -> [{"name", "score", "present", "box_ed", "box_es"}]
    clip_measurements(det) -> {name: float}
    generate(vlm, sf, max_new_tokens, thresholds, engine)
        -> (str, [float] * len(taxonomy.LABEL_KEYS))                greedy text, label scores
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from echosonar.taxonomy import STRUCTURES


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
    from echosonar.detect.model import Detector

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


def assess_ood(study: Any, model: Any) -> list[dict[str, Any]]:
    """The out-of-distribution guard of the view classifier, one dict per clip
    (:func:`echosonar.ingest.view_ood.assess_clips`)."""
    from echosonar.ingest.view_ood import assess_clips

    return assess_clips(model, study.clips)


def features(bundle: Any, study: Any, cfg: Any, timer: Any) -> tuple[Any, list[Any]]:
    """The encode stage's ``encode_study`` with the detect stage's ``detect_clip`` as its
    detector hook; the raw detections are kept for the report (end-systolic boxes)."""
    import torch

    from echosonar.detect.infer import detect_clip
    from echosonar.encode.features import encode_study

    dets: list[Any] = []

    def detect(clip: Any) -> tuple[np.ndarray, np.ndarray, dict, dict]:
        with timer("detect"), torch.no_grad():
            det = detect_clip(bundle.detector, clip)
        dets.append(det)
        # the same conversion as echosonar.encode.features.detector_hook (the cache path the
        # language model was trained on): clip_scores, or max over frames for older detectors
        score = getattr(det, "clip_scores", None)
        score = _np(det.scores).max(0) if score is None else _np(score)
        return (np.asarray(_np(det.tokens), np.float32), np.asarray(score, np.float32),
                {s: [float(v) for v in b] for s, b in (det.ed_boxes or {}).items()},
                {k: float(v) for k, v in (det.measurements or {}).items()})

    with timer("_detect_encode"):
        sf = encode_study(bundle.encoder, study, detect, int(cfg.encode.batch_size))
    sec = timer.seconds
    sec["encode"] = sec.get("encode", 0.0) + sec.pop("_detect_encode") - sec.get("detect", 0.0)
    return sf, dets


def keyframe_indices(clip: Any, det: Any) -> tuple[int, int, bool]:
    """End-diastole / end-systole frames as the detector chose them (the clip's own indices
    when ingest knows them, else largest / smallest LV box); ``estimated`` when ingest did not
    know them."""
    t = int(clip.frames.shape[0])
    estimated = clip.ed_index < 0 or clip.es_index < 0
    ed = getattr(det, "ed_index", clip.ed_index)
    es = getattr(det, "es_index", clip.es_index)
    if ed is None or es is None or ed < 0 or es < 0:
        return 0, t // 2, True
    return int(ed), int(es), bool(estimated)


def clip_structures(det: Any, ed: int, es: int) -> list[dict[str, Any]]:
    """Per structure class: the detector's clip-level score, found or not, the end-diastolic
    box (what the language model reads) and the end-systolic box of its smoothed track."""
    if getattr(det, "clip_scores", None) is not None:
        score = np.asarray(_np(det.clip_scores), np.float32)
    else:
        scores = np.asarray(_np(det.scores), np.float32)
        score = scores.max(0) if scores.ndim == 2 else scores
    tracks = getattr(det, "tracks", None) or {}
    boxes = _np(getattr(det, "boxes", np.zeros((0,))))
    out = []
    for k, s in enumerate(STRUCTURES):
        ed_box = (det.ed_boxes or {}).get(s)
        es_box = None
        if ed_box is not None:
            track = _np(tracks[s]) if s in tracks else (
                boxes[:, k] if boxes.ndim == 3 else None)
            if track is not None and es < len(track):
                es_box = _box01(track[es])
        out.append({"name": s, "score": float(score[k]), "present": ed_box is not None,
                    "box_ed": None if ed_box is None else _box01(ed_box), "box_es": es_box})
    return out


def _box01(b: Any) -> list[float]:
    return [float(min(1.0, max(0.0, v))) for v in b]


def clip_measurements(det: Any) -> dict[str, float]:
    return {k: float(v) for k, v in (getattr(det, "measurements", None) or {}).items()
            if isinstance(v, (int, float, np.floating)) and np.isfinite(v)}


def generate(vlm: Any, sf: Any, max_new_tokens: int,
             thresholds: dict[str, float] | None = None, engine: str = "auto"
             ) -> tuple[str, list[float]]:
    """Greedy generation and the label scores (one pass over the prompt serves both); guided
    by the label head at ``thresholds`` when given; ``engine`` picks the decode step
    (``reason.decode.make_step``: auto, int8 or hf)."""
    import torch

    with torch.no_grad():
        texts, scores = vlm.generate([sf], max_new_tokens=int(max_new_tokens), do_sample=False,
                                     thresholds=thresholds, engine=engine, return_scores=True)
    return texts[0][0], [float(v) for v in _np(scores)[0]]
