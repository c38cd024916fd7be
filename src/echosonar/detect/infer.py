"""Inference: a clip (or study) in, boxes, tracks, structure tokens and measurements out.

``detect_clip`` runs every frame of the clip through the detector in one batch (no Python loop
over frames), then works on whole ``[T, K]`` arrays:

* clip-level presence: mean score of each class over its best quarter of frames (jets are
  visible only in systole or diastole, so a plain mean would miss them) >= ``score_threshold``;
* structure tokens: score-weighted mean of the per-frame embeddings, zeros where absent;
* tracks: per-frame boxes smoothed over ``smooth_frames`` with score weights;
* end-diastole / end-systole: the clip's ``ed_index`` / ``es_index`` when known, else the frames
  of largest / smallest LV box area;
* measurements: :mod:`echosonar.detect.measure` rules on the tracks, in cm via ``cm_per_px``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from echosonar.detect.measure import apply_rules, rule_features
from echosonar.detect.model import Detector, view_indices
from echosonar.schema import Box, Clip, Study, ViewFeatures
from echosonar.taxonomy import STRUCTURE_INDEX, STRUCTURES

K = len(STRUCTURES)
_LV = STRUCTURE_INDEX["LV"]


@dataclass
class ClipDetections:
    """Detector output for one clip (T frames, K = ``len(taxonomy.STRUCTURES)`` classes).

    Attributes:
        view: the clip's view.
        boxes: float32 [T, K, 4] per-frame boxes x0, y0, x1, y1 in 0..1 of the clip frame (the
            ultrasound region after ingest), one per class whether present or not.
        scores: float32 [T, K] presence probability per class per frame.
        clip_scores: float32 [K] clip-level presence score (mean of the best quarter of frames).
        present: bool [K] structure found in the clip (``clip_scores >= score_threshold``).
        tokens: float32 [K, D] structure tokens, score-weighted over frames; zeros where absent.
        tracks: ``{structure: float32 [T, 4]}`` smoothed box track, present structures only.
        ed_index, es_index: frames used as end-diastole / end-systole.
        ed_boxes: ``{structure: box01}`` at end-diastole, present structures only.
        measurements: physical measurements (``taxonomy.MEASUREMENTS`` keys where the same
            quantity is estimated, plus ``lv_fs_pct`` and ``ef_proxy_pct``).
        cm_per_px: spacing of the clip frames (NaN when unknown: no cm measurements then).
        frame_hw: (H, W) of the clip frames, pixels.
    """

    view: str
    boxes: np.ndarray
    scores: np.ndarray
    clip_scores: np.ndarray
    present: np.ndarray
    tokens: np.ndarray
    tracks: dict[str, np.ndarray]
    ed_index: int
    es_index: int
    ed_boxes: dict[str, Box]
    measurements: dict[str, float]
    cm_per_px: float
    frame_hw: tuple[int, int]
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, per_frame: bool = True) -> dict[str, Any]:
        """JSON-able summary (boxes rounded to 1e-4; per-frame arrays only when asked)."""
        d: dict[str, Any] = {
            "view": self.view, "source": self.source,
            "present": [s for s, p in zip(STRUCTURES, self.present, strict=True) if p],
            "clip_scores": {s: round(float(v), 4) for s, v in zip(STRUCTURES, self.clip_scores,
                                                                 strict=True)},
            "ed_index": self.ed_index, "es_index": self.es_index, "ed_boxes": self.ed_boxes,
            "measurements": {k: round(v, 4) for k, v in self.measurements.items()},
            "cm_per_px": None if not math.isfinite(self.cm_per_px) else self.cm_per_px,
            "frame_hw": list(self.frame_hw),
        }
        if per_frame:
            d["tracks"] = {s: np.round(t, 4).tolist() for s, t in self.tracks.items()}
            d["scores"] = np.round(self.scores, 4).tolist()
        return d

    def view_features(self, clip_tokens: np.ndarray, view_conf: float = 1.0) -> ViewFeatures:
        """Combine with the encoder's clip tokens into the language model's ``ViewFeatures``."""
        return ViewFeatures(view=self.view, clip_tokens=np.asarray(clip_tokens, np.float32),
                            structure_tokens=self.tokens.astype(np.float32),
                            structure_scores=self.clip_scores.astype(np.float32),
                            boxes=dict(self.ed_boxes), measurements=dict(self.measurements),
                            view_conf=view_conf)


@torch.no_grad()
def _predict(model: Detector, clips: list[Clip], max_batch: int = 512) -> list[dict[str, np.ndarray]]:
    """Run all frames of ``clips`` through the model in batches of whole tensors."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    xs, vs, lens = [], [], []
    for c in clips:
        f = torch.as_tensor(np.asarray(c.frames))
        f = f.float() / 255.0 if f.dtype == torch.uint8 else f.float()
        xs.append(model.prepare(f.to(dev)))
        vs.append(view_indices([c.view] * f.shape[0]))
        lens.append(f.shape[0])
    x, v = torch.cat(xs), torch.cat(vs).to(dev)
    parts = [model.predict(x[i:i + max_batch], v[i:i + max_batch])
             for i in range(0, x.shape[0], max_batch)]
    out = {k: torch.cat([p[k] for p in parts]).float().cpu().numpy() for k in parts[0]}
    model.train(was_training)
    res, start = [], 0
    for n in lens:
        res.append({k: a[start:start + n] for k, a in out.items()})
        start += n
    return res


def smooth_tracks(boxes: np.ndarray, scores: np.ndarray, window: int) -> np.ndarray:
    """Score-weighted moving average over time: boxes [T, K, 4], scores [T, K] -> [T, K, 4].

    Edges use the frames available (no wrap-around: a clip need not be exactly one cycle).
    """
    if window <= 1 or boxes.shape[0] < 2:
        return boxes.copy()
    r = window // 2
    t = boxes.shape[0]
    w = np.maximum(scores, 1e-3)[..., None]
    num = np.zeros_like(boxes, dtype=np.float64)
    den = np.zeros_like(w, dtype=np.float64)
    for d in range(-r, r + 1):  # loop over the window offsets, not the frames
        lo, hi = max(0, -d), min(t, t - d)
        num[lo:hi] += (boxes * w)[lo + d:hi + d]
        den[lo:hi] += w[lo + d:hi + d]
    return (num / den).astype(np.float32)


def summarize_clip(model: Detector, clip: Clip, pred: dict[str, np.ndarray]) -> ClipDetections:
    """Turn per-frame predictions ``{"scores" [T, K], "boxes" [T, K, 4], "tokens" [T, K, D]}``
    of ``clip`` into a :class:`ClipDetections`."""
    cfg = model.config
    scores, boxes, tokens = pred["scores"], pred["boxes"], pred["tokens"]
    t = scores.shape[0]
    q = max(1, math.ceil(t / 4))
    clip_scores = np.sort(scores, axis=0)[-q:].mean(0)
    present = clip_scores >= cfg.score_threshold
    w = scores[..., None]
    pooled = (w * tokens).sum(0) / np.maximum(w.sum(0), 1e-6)
    pooled = np.where(present[:, None], pooled, 0.0).astype(np.float32)
    smooth = smooth_tracks(boxes, scores, cfg.smooth_frames)
    lv_area = (smooth[:, _LV, 2] - smooth[:, _LV, 0]) * (smooth[:, _LV, 3] - smooth[:, _LV, 1])
    ed = clip.ed_index if 0 <= clip.ed_index < t else (int(lv_area.argmax()) if present[_LV]
                                                       else 0)
    es = clip.es_index if 0 <= clip.es_index < t else (int(lv_area.argmin()) if present[_LV]
                                                       else 0)
    hw = (int(clip.frames.shape[2]), int(clip.frames.shape[3]))
    feats = rule_features(clip.view, smooth, scores, present, ed, es, float(clip.cm_per_px), hw,
                          cfg.score_threshold)
    meas = apply_rules(clip.view, feats, model.measure_calib.detach().cpu().numpy())
    return ClipDetections(
        view=clip.view, boxes=boxes.astype(np.float32), scores=scores.astype(np.float32),
        clip_scores=clip_scores.astype(np.float32), present=present, tokens=pooled,
        tracks={s: smooth[:, k] for k, s in enumerate(STRUCTURES) if present[k]},
        ed_index=ed, es_index=es,
        ed_boxes={s: [round(float(x), 4) for x in smooth[ed, k]]
                  for k, s in enumerate(STRUCTURES) if present[k]},
        measurements=meas, cm_per_px=float(clip.cm_per_px), frame_hw=hw, source=clip.source,
        meta={"features": feats})


def detect_clip(model: Detector, clip: Clip) -> ClipDetections:
    """Detect structures in every frame of ``clip`` (one batched forward pass)."""
    return summarize_clip(model, clip, _predict(model, [clip])[0])


def detect_study(model: Detector, study: Study) -> list[ClipDetections]:
    """Detect structures in every clip of ``study`` (all frames of all clips in one batch)."""
    if not study.clips:
        return []
    preds = _predict(model, study.clips)
    return [summarize_clip(model, c, p) for c, p in zip(study.clips, preds, strict=True)]
