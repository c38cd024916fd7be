"""Preprocessing: sector estimate and masking, crop/resize with physical spacing, colour, time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echosonar.config.ingest import IngestConfig
from echosonar.ingest import preprocess, read_file
from echosonar.ingest.preproc import temporal_plan
from echosonar.ingest.raw import RawClip
from echosonar.ingest.sector import estimate_sector, geometric_sector_mask


def _raw(frames: np.ndarray, **kw) -> RawClip:
    f = frames if frames.ndim == 4 else frames[..., None]
    kw.setdefault("frame_times", np.arange(len(f)) / 30.0)
    return RawClip(frames=f, source="x.dcm", **kw)


def test_sector_estimate_ignores_burned_in_text(fan):
    frames, truth = fan(n=12, h=96, w=128)
    mask, info = estimate_sector(frames.astype(np.float32))
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert info["kind"] == "sector" and iou > 0.9
    assert not mask[2:9, 3:30].any() and not mask[-10:].any()  # text block and ECG trace


def test_sector_estimate_still_and_linear_probe():
    # a single frame (no motion): intensity-based; a rectangle (linear probe) gives a band
    img = np.zeros((1, 80, 100), np.float32)
    img[0, 10:70, 20:80] = np.random.default_rng(0).uniform(20, 200, (60, 60))
    mask, info = estimate_sector(img)
    assert info["kind"] in ("band", "hull")
    assert abs(int(mask.sum()) - 3600) < 250


def test_text_outside_sector_is_zero_after_preprocess(tmp_path, dicom_factory, fan):
    frames, truth = fan(n=12, h=96, w=128)
    raw = read_file(dicom_factory(tmp_path / "t.dcm", frames, region=None))
    clip = preprocess(raw, IngestConfig(image_size=64, clip_len=8))
    assert clip.frames.shape == (8, 1, 64, 64) and clip.frames.dtype == np.float32
    assert clip.frames.min() >= 0 and clip.frames.max() <= 1
    # the crop is the fan's box (no region): nothing of the text (value 255/200/220) survives
    # as a bright static pattern; masked pixels are exactly zero in every frame
    zero = (clip.frames == 0).all(axis=(0, 1))
    assert zero.mean() > 0.2  # corners outside the sector
    static = clip.frames.std(axis=0)[0]
    assert (static[~zero] > 0).mean() > 0.95  # everything kept moves (speckle), nothing static
    assert math.isnan(clip.cm_per_px) and clip.view == "OTHER" and clip.view_conf == 0.0


def test_region_crop_spacing_and_aspect(tmp_path, dicom_factory, fan):
    frames, _ = fan(n=6, h=96, w=128)
    raw = read_file(dicom_factory(tmp_path / "r.dcm", frames, region=(8, 0, 119, 95),
                                  delta_cm=0.05))
    clip = preprocess(raw, IngestConfig(image_size=56, clip_len=6))
    # region is 112 x 96 px at 0.05 cm: the longer side (112 px = 5.6 cm) fills 56 px
    assert clip.cm_per_px == pytest.approx(112 * 0.05 / 56)
    rows = np.flatnonzero(clip.frames.max(axis=(0, 1, 3)) > 0)
    assert rows.max() < 49  # 96 px tall -> 48 rows, top aligned, zero padding below


def test_anisotropic_spacing_becomes_isotropic():
    f = np.zeros((4, 40, 80, 1), np.uint8)
    f[:, 10:30, 20:60] = 200
    raw = _raw(f, region=(0, 0, 80, 40), spacing=(0.1, 0.2))
    clip = preprocess(raw, IngestConfig(image_size=32, clip_len=4, sector_from_image=False))
    # physical size: 8 cm wide, 8 cm tall -> square 32 x 32 at 0.25 cm/px
    assert clip.cm_per_px == pytest.approx(0.25)
    nz = np.argwhere(clip.frames[0, 0] > 0.5 * 200 / 255)
    h, w = np.ptp(nz[:, 0]) + 1, np.ptp(nz[:, 1]) + 1
    assert abs(h - 16) <= 1 and abs(w - 16) <= 1  # 4 cm x 4 cm block


def test_colour_decision(fan):
    grey, _ = fan(n=6, color=False)
    col, _ = fan(n=6, color=True)
    cfg = IngestConfig(clip_len=6)
    g3 = np.repeat(grey[..., None], 3, -1)  # grey stored as RGB (typical US export)
    assert preprocess(_raw(g3), cfg).frames.shape[1] == 1
    c = preprocess(_raw(col), cfg)
    assert c.frames.shape[1] == 3
    assert (c.frames[:, 0] - c.frames[:, 1]).max() > 0.5  # red survives
    # a manifest view overrides: colour view -> 3 channels even for grey pixels
    assert preprocess(_raw(g3, view="A4C_COLOR"), cfg).frames.shape[1] == 3


def test_temporal_resampling_by_real_time():
    # frame i has intensity 10*i; irregular times: frames bunch up early
    t = np.array([0.0, 0.01, 0.02, 0.03, 0.2, 0.4, 0.6, 0.8])
    f = np.zeros((8, 32, 32, 1), np.uint8)
    for i in range(8):
        f[i, 4:28, 4:28] = 10 * (i + 1)
    clip = preprocess(_raw(f, frame_times=t), IngestConfig(image_size=32, clip_len=5,
                                                           sector_from_image=False))
    picked = np.rint(clip.frames[:, 0, 16, 16] * 255 / 10).astype(int) - 1
    assert picked.tolist() == [0, 4, 5, 6, 7]  # want 0, .2, .4, .6, .8 s
    np.testing.assert_allclose(clip.frame_times, [0, 0.2, 0.4, 0.6, 0.8], atol=1e-6)
    idx, w, tt = temporal_plan(t, 3, interp="linear")
    assert idx.shape == (3, 2) and 0 <= w.min() and w.max() <= 1


def test_cycle_window_and_still():
    idx, _, tt = temporal_plan(np.arange(60) / 30.0, 4, window="cycle", heart_rate=60.0)
    assert tt[-1] == pytest.approx(1.0, abs=0.02)  # one beat at 60 bpm, not the 2 s clip
    f = np.full((1, 20, 20, 1), 100, np.uint8)
    clip = preprocess(_raw(f, frame_times=np.zeros(1)), IngestConfig(clip_len=4, image_size=20,
                                                                     sector_from_image=False))
    assert clip.frames.shape[0] == 4 and np.ptp(clip.frames, axis=0).max() == 0


def test_boxes_ed_es_and_geometric_sector_follow_the_crop():
    h, w, n = 100, 120, 10
    sector = {"apex": [60, 0], "radius": 95, "half_angle_deg": 40}
    truth = geometric_sector_mask((h, w), sector)
    f = np.zeros((n, h, w, 1), np.uint8)
    boxes = []
    for t in range(n):
        f[t][truth] = 40
        x0, y0 = 40 + t, 30
        f[t, y0:y0 + 20, x0:x0 + 30] = 250  # a bright "LV" moving right
        # pixel-centre convention (as the simulator): columns x0..x0+29 span x0-0.5..x0+29.5
        boxes.append({"LV": [x0 - 0.5, y0 - 0.5, x0 + 29.5, y0 + 19.5],
                      "NOT_A_STRUCTURE": [0, 0, 1, 1]})
    raw = _raw(f, frame_times=np.arange(n) / 25, spacing=(0.1, 0.1), sector=sector, boxes=boxes,
               ed_frames=[0], es_frames=[6], view="A4C")
    clip = preprocess(raw, IngestConfig(image_size=48, clip_len=5))
    assert clip.view == "A4C" and clip.view_conf == 1.0
    assert clip.ed_index == 0 and clip.es_index == 3  # source 6 ~ output times 0,.1,.2,.3,.4
    for t in range(5):
        b = clip.boxes[t]["LV"]
        assert set(clip.boxes[t]) == {"LV"}
        bright = np.argwhere(clip.frames[t, 0] > 0.6)  # pixel centres of the block
        assert abs(bright[:, 1].min() - 0.5 - b[0]) <= 1 and abs(bright[:, 1].max() + 0.5 - b[2]) <= 1
        assert abs(bright[:, 0].min() - 0.5 - b[1]) <= 1 and abs(bright[:, 0].max() + 0.5 - b[3]) <= 1
    # crop = the sector's bounding box; spacing scales with it
    ys, xs = np.nonzero(truth)
    side = max(np.ptp(xs) + 1, np.ptp(ys) + 1)
    assert clip.cm_per_px == pytest.approx(side * 0.1 / 48)
