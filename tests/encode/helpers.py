"""Tiny synthetic studies and configs for the encode tests (no simulator needed)."""

from __future__ import annotations

import numpy as np

from echosonar.config.encode import EncoderModelConfig
from echosonar.schema import Clip, Study
from echosonar.taxonomy import COLOR_VIEWS, LABEL_KEYS, VIEWS, labels_from_measurements


def tiny_model_config(arch: str = "conv21d") -> EncoderModelConfig:
    return EncoderModelConfig(arch=arch, dim=32, depth=1, heads=2, mlp_ratio=2.0, dropout=0.0,
                              image_size=32, clip_len=8, stem_widths=[8, 16], stem_patch=4,
                              tubelet=[2, 8, 8], token_t=2, token_s=2)


def measurements(rng: np.random.Generator, sick: bool) -> dict:
    return dict(sex="M", heart_rate_bpm=70.0, ef_pct=35.0 if sick else 60.0,
                lvedd_cm=5.0, lvesd_cm=3.5, ivs_cm=0.9, lvpw_cm=0.9, la_ap_cm=3.5,
                ra_minor_cm=3.8, rv_basal_cm=3.5, av_cusps=3, av_opening_cm=2.0,
                mv_calc_score=0.1, mr_jet_ratio=0.05 + 0.3 * rng.random(), tr_jet_ratio=0.05,
                ar_jet_ratio=0.0, pe_depth_cm=0.0)


def make_clip(view: str, bright: float, rng: np.random.Generator, t: int = 8,
              size: int = 32) -> Clip:
    c = 3 if view in COLOR_VIEWS else 1
    frames = (rng.random((t, c, size, size)) * 0.3 + bright * 0.6).astype(np.float32)
    if c == 3:
        frames[:, 0] *= 1.5  # "red" jet-ish colour
        frames = frames.clip(0, 1)
    return Clip(view=view, frames=frames, cm_per_px=0.1,
                frame_times=np.arange(t, dtype=np.float32) / 30.0)


def make_studies(n: int, seed: int = 0, drop_views: bool = True) -> list[Study]:
    """Studies whose LV dysfunction shows as brighter A4C/A2C/PLAX clips."""
    rng = np.random.default_rng(seed)
    out = []
    splits = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    for i in range(n):
        sick = bool(i % 2)
        m = measurements(rng, sick)
        views = [v for v in VIEWS if v == "A4C" or not (drop_views and rng.random() < 0.3)]
        clips = [make_clip(v, 0.8 if sick and v in ("A4C", "A2C", "PLAX") else 0.2, rng)
                 for v in views]
        labels = labels_from_measurements(m)
        assert set(labels) == set(LABEL_KEYS)
        out.append(Study(key=f"study{i:03d}", clips=clips, labels=labels, measurements=m,
                         reasoning="r", report={"LV": "x"}, split=splits[i % 10]))
    return out
