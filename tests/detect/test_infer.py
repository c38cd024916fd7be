import json

import numpy as np
import torch

from echosonar.config.detect import DetectConfig
from echosonar.detect.data import clip_targets
from echosonar.detect.evaluate import coco_map, evaluate_studies
from echosonar.detect.infer import detect_clip, detect_study
from echosonar.detect.model import Detector
from echosonar.detect.synthetic import synthetic_studies
from echosonar.taxonomy import STRUCTURES

TINY = dict(embed_dim=32, widths=[8, 16, 24, 32], decoder_layers=1, heads=2, image_size=32)


def test_coco_map_is_one_for_perfect_boxes_and_drops_for_wrong_ones():
    st = synthetic_studies(3, seed=4, clips=2, frames=3, size=32)
    pres, boxes = zip(*(clip_targets(c) for s in st for c in s.clips), strict=True)
    p, b = np.concatenate(pres), np.concatenate(boxes)
    scores = np.where(p, 0.9, 0.1)
    perfect = coco_map(p, b, scores, b, 32)
    assert perfect["map50"] == 1.0 and perfect["map"] == 1.0
    assert all(v["ap50"] in (None, 1.0) for v in perfect["per_class"].values())
    shifted = b.copy()
    shifted[..., [0, 2]] += 0.15   # boxes moved sideways: most fail IoU 0.75, some IoU 0.5
    worse = coco_map(p, b, scores, np.clip(shifted, 0, 1), 32)
    assert worse["map"] < 0.6 and worse["map50"] < 1.0
    absent = coco_map(p, b, np.where(p, 0.1, 0.9), b, 32)  # confident on absent classes
    assert absent["map50"] < perfect["map50"]


def test_detect_study_batches_clips_and_matches_detect_clip():
    torch.manual_seed(0)
    model = Detector(DetectConfig(**TINY)).eval()
    study = synthetic_studies(1, seed=5, clips=3, frames=5, size=32, channels=3)[0]
    study.clips[1].frames = study.clips[1].frames[:, :1]  # a grey clip among colour ones
    dets = detect_study(model, study)
    assert len(dets) == 3
    for c, d in zip(study.clips, dets, strict=True):
        one = detect_clip(model, c)
        np.testing.assert_allclose(d.boxes, one.boxes, atol=1e-5)
        np.testing.assert_allclose(d.tokens, one.tokens, atol=1e-5)
        assert d.boxes.shape == (5, 12, 4) and d.scores.shape == (5, 12)
        assert d.tokens.shape == (12, 32) and d.present.dtype == bool
        assert not d.tokens[~d.present].any()
        found = {s for s, p in zip(STRUCTURES, d.present, strict=True) if p}
        assert set(d.ed_boxes) == set(d.tracks) == found
        json.dumps(d.to_dict(per_frame=True))
        vf = d.view_features(np.zeros((5, 8), np.float32))
        assert vf.structure_tokens.shape == (12, 32) and vf.structure_scores.shape == (12,)
    assert model.training is False


def test_evaluate_studies_reports_coco_presence_and_calibration_samples():
    torch.manual_seed(0)
    model = Detector(DetectConfig(**TINY, score_threshold=0.0))  # everything "present"
    st = synthetic_studies(2, seed=6, clips=2, frames=3, size=32)
    for s in st:
        s.measurements = {"lvedd_cm": 5.0, "lvesd_cm": 3.2, "ef_pct": 60.0}
    res = evaluate_studies(model, st, collect_calibration=True)
    assert res["n_clips"] == 4 and 0 <= res["coco"]["map50"] <= 1
    assert res["measure_n"]["lvedd_cm"] == 2 and res["measure_mae"]["lvedd_cm"] >= 0
    assert res["calib_samples"] and all(len(x) == 4 for x in res["calib_samples"])
    assert model.training  # restored after inference
