import math

import numpy as np
import pytest
import torch

from echosonar.config.detect import DetectConfig
from echosonar.detect.infer import smooth_tracks, summarize_clip
from echosonar.detect.measure import (
    DEFAULT_CALIB,
    RULES,
    apply_rules,
    ef_teichholz,
    fit_calibration,
    rule_features,
    study_measurements,
)
from echosonar.detect.model import Detector
from echosonar.schema import Clip
from echosonar.taxonomy import STRUCTURE_INDEX, STRUCTURES

K = len(STRUCTURES)
LV, LA, MR = STRUCTURE_INDEX["LV"], STRUCTURE_INDEX["LA"], STRUCTURE_INDEX["MR_JET"]


def _tracks(t=8):
    tr = np.zeros((t, K, 4), np.float32)
    tr[:] = [0.4, 0.4, 0.5, 0.5]
    # LV: width 0.5 of a 64-px frame at ED (frame 0), 0.35 at ES (frame 3)
    widths = np.full(t, 0.45, np.float32)
    widths[0], widths[3] = 0.5, 0.35
    tr[:, LV] = np.stack([0.5 - widths / 2, np.full(t, 0.1), 0.5 + widths / 2,
                          np.full(t, 0.8)], 1)
    return tr


def test_lv_measurements_from_known_boxes_and_spacing():
    tr = _tracks()
    present = np.zeros(K, bool)
    present[[LV, LA]] = True
    scores = np.where(present, 0.9, 0.01)[None].repeat(8, 0)
    feats = rule_features("A4C", tr, scores, present, ed=0, es=3, cm_per_px=0.15,
                          frame_hw=(64, 64))
    m = apply_rules("A4C", feats, DEFAULT_CALIB)
    assert m["lvedd_cm"] == pytest.approx(0.5 * 64 * 0.15)   # 4.8 cm
    assert m["lvesd_cm"] == pytest.approx(0.35 * 64 * 0.15)  # 3.36 cm
    assert m["lv_fs_pct"] == pytest.approx(30.0)
    assert m["ef_proxy_pct"] == pytest.approx(ef_teichholz(4.8, 3.36))
    assert 50 < m["ef_proxy_pct"] < 70
    # absent MR jet is not measured in a B-mode view; RA/RV absent -> no value, not zero
    assert "mr_jet_ratio" not in m and "ra_minor_cm" not in m
    # unknown spacing: no cm measurements at all
    assert apply_rules("A4C", rule_features("A4C", tr, scores, present, 0, 3, math.nan,
                                            (64, 64)), DEFAULT_CALIB) == {}


def test_plax_reads_lv_height_and_jet_ratio_is_unit_free():
    tr = _tracks()
    present = np.zeros(K, bool)
    present[[LV, LA, MR]] = True
    tr[:, LA] = [0.5, 0.5, 0.9, 0.9]         # area 0.16
    tr[:, MR] = [0.6, 0.6, 0.8, 0.7]         # area 0.02 -> ratio 0.125
    scores = np.where(present, 0.9, 0.01)[None].repeat(8, 0)
    m = apply_rules("PLAX_COLOR", rule_features("PLAX_COLOR", tr, scores, present, 0, 3,
                                                float("nan"), (64, 64)), DEFAULT_CALIB)
    assert m == {"mr_jet_ratio": pytest.approx(0.125), "ar_jet_ratio": 0.0}  # no AR jet: 0
    p = apply_rules("PLAX", rule_features("PLAX", tr, scores, present, 0, 3, 0.1, (64, 32)),
                    DEFAULT_CALIB)
    assert p["lvedd_cm"] == pytest.approx(0.7 * 64 * 0.1)  # box height in PLAX
    # a colour view whose jet is absent measures 0 (a sonographer would report "no jet")
    present[MR] = False
    m = apply_rules("A4C_COLOR", rule_features("A4C_COLOR", tr, scores, present, 0, 3, 0.1,
                                               (64, 64)), DEFAULT_CALIB)
    assert m["mr_jet_ratio"] == 0.0 and "lvedd_cm" not in m  # colour views do not size the LV


def test_fit_calibration_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    f1, f2 = rng.uniform(3, 7, 50), rng.uniform(5, 9, 50)
    y = 0.9 * f1 - 0.1 * f2 + 0.3
    i = next(j for j, r in enumerate(RULES) if r.key == "lvedd_cm" and r.view == "A4C")
    calib = fit_calibration([(i, a, b, c) for a, b, c in zip(f1, f2, y, strict=True)],
                            ridge=0.0)
    assert calib[i] == pytest.approx([0.9, -0.1, 0.3], abs=1e-4)
    others = [j for j in range(len(RULES)) if j != i]
    assert np.array_equal(calib[others], DEFAULT_CALIB[others])  # too few samples: default


def test_smooth_tracks_and_summary_through_the_detector():
    boxes = np.tile(np.array([0.2, 0.2, 0.6, 0.6], np.float32), (6, K, 1))
    boxes[2, 0] = [0.3, 0.3, 0.7, 0.7]
    sm = smooth_tracks(boxes, np.ones((6, K), np.float32), 3)
    assert sm.shape == boxes.shape and np.allclose(sm[5], boxes[5])
    assert np.allclose(sm[2, 0], (2 * boxes[1, 0] + boxes[2, 0]) / 3)
    model = Detector(DetectConfig(embed_dim=32, widths=[8, 16, 24, 32], decoder_layers=1,
                                  heads=2, smooth_frames=1))
    tr = _tracks()
    scores = np.full((8, K), 0.01, np.float32)
    scores[:, LV] = 0.95
    tokens = np.random.default_rng(0).normal(size=(8, K, 32)).astype(np.float32)
    clip = Clip(view="A2C", frames=np.zeros((8, 1, 64, 64), np.float32), cm_per_px=0.15,
                frame_times=np.arange(8) / 30.0)   # ED/ES unknown: from the LV area
    det = summarize_clip(model, clip, {"scores": scores, "boxes": tr, "tokens": tokens})
    assert det.ed_index == 0 and det.es_index == 3
    assert det.present.tolist() == [s == "LV" for s in STRUCTURES]
    assert np.allclose(det.tokens[LV], tokens[:, LV].mean(0), atol=1e-5)
    assert not det.tokens[[k for k in range(K) if k != LV]].any()   # zeros where absent
    assert list(det.tracks) == ["LV"] and det.tracks["LV"].shape == (8, 4)
    assert det.ed_boxes["LV"] == pytest.approx([0.25, 0.1, 0.75, 0.8], abs=1e-4)
    assert det.measurements["lvedd_cm"] == pytest.approx(4.8, abs=1e-4)
    assert study_measurements([det.measurements, {"lvedd_cm": 5.2}])["lvedd_cm"] == \
        pytest.approx(5.0, abs=1e-4)
    torch.testing.assert_close(model.measure_calib, torch.as_tensor(DEFAULT_CALIB))
