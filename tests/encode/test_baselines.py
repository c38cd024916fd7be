import json

import numpy as np
import pytest
import torch

from echosonar.config.encode import BaselineConfig
from echosonar.encode.baseline_models import (
    BaselineModelConfig,
    FusionClassifier,
    study_set,
)
from echosonar.encode.baselines import PRED_FORMAT, run_baselines
from echosonar.encode.metrics import best_threshold, evaluate_scores
from echosonar.schema import StudyFeatures, ViewFeatures
from echosonar.taxonomy import LABEL_KEYS, STRUCTURES, VIEWS


def _features(n: int, seed: int = 0, d: int = 16) -> list[StudyFeatures]:
    """Label lv_systolic_dysfunction is visible in A4C tokens, mitral_regurgitation only in
    colour-view tokens: fusion has to read the right view."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        lv, mr = int(rng.random() < 0.5), int(rng.random() < 0.4)
        views = []
        for v in VIEWS:
            if v != "A4C" and rng.random() < 0.25:
                continue
            tok = rng.normal(size=(3, d)).astype(np.float32) * 0.5
            if v == "A4C":
                tok[:, 0] += 2.0 * lv
            if v in ("A4C_COLOR", "PLAX_COLOR"):
                tok[:, 1] += 2.0 * mr
            views.append(ViewFeatures(view=v, clip_tokens=tok,
                                      structure_tokens=np.zeros((len(STRUCTURES), 4), np.float32),
                                      structure_scores=np.zeros(len(STRUCTURES), np.float32)))
        labels = {k: 0 for k in LABEL_KEYS}
        labels["lv_systolic_dysfunction"], labels["mitral_regurgitation"] = lv, mr
        labels["healthy"] = int(not (lv or mr))
        split = ["train"] * 6 + ["val"] * 2 + ["test"] * 2
        out.append(StudyFeatures(key=f"s{i}", views=views, labels=labels,
                                 split=split[i % 10]))
    return out


def test_study_set_padding_and_fusion_masks_missing_views():
    ss = study_set(_features(12))
    assert ss.tokens.shape[1] == max(int(p.sum()) for p in ss.present)
    torch.manual_seed(0)
    model = FusionClassifier(BaselineModelConfig(kind="fusion", dim=16, hidden=16, heads=2,
                                                 dropout=0.0, mix_layers=1)).eval()
    torch.nn.init.normal_(model.score.weight)  # non-uniform clip weights
    i = int(torch.nonzero(~ss.present.all(1))[0])  # a study with a missing view
    a = model(ss.tokens[i:i + 1], ss.views[i:i + 1], ss.present[i:i + 1])
    junk = ss.tokens[i:i + 1].clone()
    junk[~ss.present[i:i + 1]] = 1e3  # whatever sits in a missing slot must not matter
    b = model(junk, ss.views[i:i + 1], ss.present[i:i + 1])
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="at least one present clip"):
        model(ss.tokens[:1], ss.views[:1], torch.zeros_like(ss.present[:1]))


def test_thresholds_and_metrics():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.35, 0.3, 0.9])
    thr = best_threshold(y, s)
    assert ((s >= thr) == np.array([0, 0, 0, 1, 1])).all() or \
        ((s >= thr) == np.array([0, 0, 1, 1, 1])).all()
    assert best_threshold(np.zeros(4), np.random.rand(4)) == 0.5
    ys = np.stack([y, np.zeros(5)], 1)
    m = evaluate_scores(ys, np.stack([s, s], 1), {"a": thr, "b": 0.5}, ["a", "b"])
    assert m["per_label"]["b"]["bacc"] is None and m["n_labels_bacc"] == 1
    assert m["macro_bacc"] == m["per_label"]["a"]["bacc"] >= 0.8


def test_run_baselines_writes_common_predictions(tmp_path):
    ss = study_set(_features(80))
    cfg = BaselineConfig(epochs=12, hidden=32, heads=2, batch_size=16, lr=5e-3, threads=1)
    res = run_baselines(ss, tmp_path, cfg, log=lambda s: None)
    methods = res["methods"]
    assert list(methods) == ["prior", "single_view", "late_fusion", "attention_fusion",
                             "attention_fusion_evidence"]
    assert methods["prior"]["macro_bacc"] == pytest.approx(0.5)
    lv, mr = (lambda m, k: m["per_label"][k]["bacc"]), "mitral_regurgitation"
    assert lv(methods["single_view"], "lv_systolic_dysfunction") > 0.8
    assert lv(methods["attention_fusion"], mr) > lv(methods["single_view"], mr)
    pred = json.loads((tmp_path / "attention_fusion" / "predictions_test.json").read_text())
    assert pred["format"] == PRED_FORMAT and pred["split"] == "test"
    test_keys = [k for k, s in zip(ss.keys, ss.splits, strict=True) if s == "test"]
    assert sorted(pred["studies"]) == sorted(test_keys)
    one = pred["studies"][test_keys[0]]
    assert set(one["labels"]) == set(LABEL_KEYS) == set(one["scores"])
    assert all(v in (0, 1) for v in one["labels"].values())
    for m in ("attention_fusion", "attention_fusion_evidence"):
        assert (tmp_path / m / "model" / "model.safetensors").is_file()
        assert (tmp_path / m / "predictions_val.json").is_file()
    table = (tmp_path / "results.md").read_text()
    assert "bicuspid_aortic_valve" in table and "| attention_fusion_evidence |" in table
