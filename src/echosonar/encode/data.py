"""Clip tables for encoder pretraining: every clip of every study, with view-masked targets.

A study's labels and measurements are study-level facts; a single clip can only show some of
them (``taxonomy.visible_label_mask``). Each clip therefore carries its study's targets plus a
0/1 mask of what its view can show, and the losses ignore the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from echosonar.schema import Study
from echosonar.taxonomy import FINDING_BY_KEY, LABEL_KEYS, MEASUREMENTS, VIEWS, visible_label_mask

#: Which finding's views can show each regressed measurement (``None`` would mean every view).
#: Not regressed: ``sex`` (not an image quantity) and ``heart_rate_bpm`` (ingest resamples a
#: clip to a fixed frame count, so one cycle looks the same at any rate). This maps taxonomy
#: keys onto taxonomy keys; it keeps no list of views of its own.
MEASUREMENT_FINDING: dict[str, str | None] = {
    "ef_pct": "lv_systolic_dysfunction",
    "lvedd_cm": "lv_enlargement", "lvesd_cm": "lv_systolic_dysfunction",
    "ivs_cm": "lv_hypertrophy", "lvpw_cm": "lv_hypertrophy",
    "la_ap_cm": "la_enlargement", "ra_minor_cm": "ra_enlargement",
    "rv_basal_cm": "rv_enlargement",
    "av_cusps": "bicuspid_aortic_valve", "av_opening_cm": "aortic_stenosis",
    "mv_calc_score": "mitral_valve_calcification",
    "mr_jet_ratio": "mitral_regurgitation", "tr_jet_ratio": "tricuspid_regurgitation",
    "ar_jet_ratio": "aortic_regurgitation", "pe_depth_cm": "pericardial_effusion",
}
MEASURE_KEYS: tuple[str, ...] = tuple(k for k in MEASUREMENTS if k in MEASUREMENT_FINDING)
assert all(f is None or f in FINDING_BY_KEY for f in MEASUREMENT_FINDING.values())
assert set(MEASUREMENT_FINDING) <= set(MEASUREMENTS)


def visible_measure_mask(view: str) -> list[int]:
    """Per-measurement 0/1 mask (``MEASURE_KEYS`` order) of what one clip of ``view`` shows."""
    out = []
    for k in MEASURE_KEYS:
        f = MEASUREMENT_FINDING[k]
        out.append(int(view in VIEWS if f is None else view in FINDING_BY_KEY[f].views))
    return out


@dataclass
class ClipTable:
    """All clips of a set of studies, in memory.

    Attributes:
        frames: per clip, uint8 or float ``[T, C, H, W]`` (C = 1 or 3), as the cache stores it.
        views: LongTensor ``[M]`` indices into ``taxonomy.CLASSIFIER_VIEWS``.
        labels, label_mask: float ``[M, L]`` (``LABEL_KEYS`` order); mask = visible and known.
        measures, measure_mask: float ``[M, K]`` raw values (``MEASURE_KEYS``) and 0/1 presence
            x visibility.
        study: per clip, the study key.
    """

    frames: list[np.ndarray]
    views: torch.Tensor
    labels: torch.Tensor
    label_mask: torch.Tensor
    measures: torch.Tensor
    measure_mask: torch.Tensor
    study: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frames)


def _as_float(v: object) -> float:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return x


def clip_table(studies: Iterable[Study], max_clips: int = 0) -> ClipTable:
    """Build a :class:`ClipTable` from ingested studies (clips of unknown view are skipped)."""
    from echosonar.encode.models import VIEW_INDEX

    frames, views, labels, lmask, meas, mmask, keys = [], [], [], [], [], [], []
    for st in studies:
        lab = st.labels or {}
        m = st.measurements or {}
        for clip in st.clips:
            if clip.view not in VIEWS:  # OTHER: nothing to supervise
                continue
            vis = visible_label_mask(clip.view)
            frames.append(clip.frames)
            views.append(VIEW_INDEX[clip.view])
            labels.append([float(lab.get(k, 0)) for k in LABEL_KEYS])
            lmask.append([float(vis[i] and k in lab) for i, k in enumerate(LABEL_KEYS)])
            vals = [_as_float(m.get(k)) for k in MEASURE_KEYS]
            mvis = visible_measure_mask(clip.view)
            meas.append([0.0 if math.isnan(v) else v for v in vals])
            mmask.append([float(mvis[i] and not math.isnan(v)) for i, v in enumerate(vals)])
            keys.append(st.key)
            if max_clips and len(frames) >= max_clips:
                break
        if max_clips and len(frames) >= max_clips:
            break
    if not frames:
        raise ValueError("no clips with a known view in the given studies")
    return ClipTable(frames, torch.tensor(views), torch.tensor(labels),
                     torch.tensor(lmask), torch.tensor(meas), torch.tensor(mmask), keys)


def stack_frames(frames: list[np.ndarray]) -> torch.Tensor:
    """Clips ``[T, C, H, W]`` (uint8 0..255 or float 0..1; C 1 or 3) -> float ``[B, T, 3, H, W]``.

    All clips of a batch must share T, H and W (ingest resamples them to one size).
    """
    out = []
    for f in frames:
        t = torch.from_numpy(np.ascontiguousarray(f))
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        if t.shape[1] == 1:
            t = t.expand(-1, 3, -1, -1)
        out.append(t)
    shapes = {tuple(t.shape) for t in out}
    if len(shapes) != 1:
        raise ValueError(f"clips in one batch differ in shape: {sorted(shapes)}; "
                         "re-ingest with one clip_len and image_size")
    return torch.stack(out)


def augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Photometric + small geometric + temporal-phase jitter on ``[B, T, 3, H, W]`` in [0, 1].

    Gain and gamma act on all channels alike, so colour stays colour; shifts are at most
    ``max_shift`` pixels (the encoder standardises each pixel against a per-view mean image,
    so a large shift looks like a different anatomy: ±3 px slowed learning a lot); the cine is
    rolled in time (a heart cycle has no fixed start).
    """
    b, t = x.shape[:2]
    u = torch.rand(b, 4, generator=gen)
    gain = (0.8 + 0.4 * u[:, 0]).view(b, 1, 1, 1, 1)
    gamma = (0.8 + 0.45 * u[:, 1]).view(b, 1, 1, 1, 1)
    x = (x.clamp(0, 1) ** gamma * gain).clamp(0, 1)
    out = torch.empty_like(x)
    for i in range(b):
        dy, dx = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
        dt = int(torch.randint(0, t, (1,), generator=gen))
        out[i] = torch.roll(x[i], shifts=(dt, dy, dx), dims=(0, 2, 3))
    return out
