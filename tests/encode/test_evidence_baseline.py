"""The evidence baseline (attention fusion + detector structure tokens + measurements), and the
measurement vector it shares with the VLM's measurement head (``detect.measure``)."""

import json
import math

import numpy as np
import pytest
import torch

from echosonar.config.encode import BaselineConfig
from echosonar.detect.measure import measurement_slots, slot_statistics
from echosonar.encode.baseline_models import (
    BaselineModelConfig,
    EvidenceFusionClassifier,
    slot_names,
    study_set,
)
from echosonar.encode.baselines import predict, prevalence, run_baselines
from echosonar.io.features import write_index, write_study_features
from echosonar.reason.synthetic import synthetic_studies
from echosonar.taxonomy import LABEL_KEYS, STRUCTURES

LVE = "lv_enlargement"
CUT = 5.3   # lvedd_cm is drawn U(4.0, 6.6): the label is about half positive


def _toy(n: int, seed: int, split: str) -> list:
    """Synthetic studies (``reason.synthetic``: the detector's ``lvedd_cm`` sits in the A4C and
    PLAX views) whose clip tokens are pure noise and whose only label is LV enlargement =
    measured LVEDD > CUT: a label clip-token baselines cannot learn, a cut-off rule can."""
    rng = np.random.default_rng(seed + 17)
    studies = [sf for sf in synthetic_studies(n, seed=seed, d_enc=8, d_det=6, n_tokens=2,
                                              min_views=3, split=split)
               if any(v.view in ("A4C", "PLAX") for v in sf.views)]
    for sf in studies:
        lvedd = next(v.measurements["lvedd_cm"] for v in sf.views if v.view in ("A4C", "PLAX"))
        sf.labels = {k: 0 for k in LABEL_KEYS}
        sf.labels[LVE] = int(lvedd > CUT)
        for v in sf.views:
            v.clip_tokens = rng.normal(0, 1, v.clip_tokens.shape).astype(np.float32)
    return studies


def _toy_set(n_train: int = 160, n_val: int = 50, n_test: int = 60):
    return study_set(_toy(n_train, 1, "train") + _toy(n_val, 2, "val") + _toy(n_test, 3, "test"))


CFG = BaselineConfig(methods=["attention_fusion", "attention_fusion_evidence"], epochs=25,
                     hidden=16, heads=2, batch_size=32, lr=1e-2, measure_lr=0.1, dropout=0.0,
                     threads=1)


def test_study_set_carries_structure_tokens_and_raw_measurements():
    studies = _toy(12, 4, "train")
    ss = study_set(studies)
    s, c = ss.present.shape
    assert ss.structure_tokens.shape == (s, c, len(STRUCTURES), 6)
    assert ss.structure_scores.shape == (s, c, len(STRUCTURES))
    assert ss.measurements.shape == (s, len(measurement_slots())) == (s, len(slot_names()))
    j = measurement_slots().index(("A4C", "lvedd_cm"))
    for i, sf in enumerate(studies):
        a4c = [v for v in sf.views if v.view == "A4C"]
        got = float(ss.measurements[i, j])
        assert (got == pytest.approx(a4c[0].measurements["lvedd_cm"]) if a4c
                else math.isnan(got))
        for jj, v in enumerate(sf.views):
            np.testing.assert_array_equal(ss.structure_tokens[i, jj].numpy(), v.structure_tokens)
    sub = ss.subset("train")
    assert torch.equal(sub.structure_scores, ss.structure_scores)
    assert torch.equal(sub.measurements.isnan(), ss.measurements.isnan())


def test_evidence_model_reads_its_new_inputs():
    ss = study_set(_toy(16, 5, "train"))
    cfg = BaselineModelConfig(kind="fusion_evidence", dim=8, hidden=16, heads=2, dropout=0.0,
                              mix_layers=0, structures=len(STRUCTURES), struct_dim=6,
                              slots=slot_names())
    torch.manual_seed(0)
    model = EvidenceFusionClassifier(cfg).eval()
    model.fit_stats(ss.measurements)
    args = (ss.tokens, ss.views, ss.present, ss.structure_tokens, ss.structure_scores,
            ss.measurements)
    plain = model(*args)
    assert torch.equal(plain, model(ss.tokens, ss.views, ss.present,
                                    torch.randn_like(ss.structure_tokens),
                                    ss.structure_scores, ss.measurements * 2))  # zero start
    torch.nn.init.normal_(model.struct_out[1].weight)
    torch.nn.init.normal_(model.meas.weight)
    out = model(*args)
    more = ss.structure_tokens.clone()
    more[ss.present] += torch.randn_like(more[ss.present])
    assert not torch.allclose(out, model(ss.tokens, ss.views, ss.present, more,
                                         ss.structure_scores, ss.measurements))
    assert not torch.allclose(out, model(*args[:5], ss.measurements + 1.0))
    junk = ss.structure_tokens.clone()
    junk[~ss.present] = 1e3   # a missing clip's tokens must not matter
    torch.testing.assert_close(out, model(ss.tokens, ss.views, ss.present, junk,
                                          ss.structure_scores, ss.measurements))
    # a slot read in a view the study has no clip of is "missing", whatever the vector says
    j = measurement_slots().index(("A4C", "lvedd_cm"))
    keep = ss.present & (ss.views != model.slot_view[j])
    rows = keep.any(1) & ~ss.measurements[:, j].isnan()
    assert rows.any()
    x = model.measurement_inputs(ss.measurements[rows], ss.views[rows], keep[rows])
    assert (x[:, j] == 0).all() and (x[:, len(slot_names()) + j] == 0).all()
    x = model.measurement_inputs(ss.measurements[rows], ss.views[rows], ss.present[rows])
    assert (x[:, len(slot_names()) + j] == 1).all()


def test_evidence_baseline_learns_a_measurement_label_fusion_cannot(tmp_path):
    ss = _toy_set()
    res = run_baselines(ss, tmp_path, CFG, log=lambda s: None)["methods"]
    plain = res["attention_fusion"]["per_label"][LVE]
    evid = res["attention_fusion_evidence"]["per_label"][LVE]
    print(f"toy {LVE} test BAcc / AUROC: attention_fusion {plain['bacc']:.3f} / "
          f"{plain['auroc']:.3f}, attention_fusion_evidence {evid['bacc']:.3f} / "
          f"{evid['auroc']:.3f}")
    assert evid["bacc"] >= 0.85 and evid["auroc"] >= 0.9
    assert evid["bacc"] > plain["bacc"] + 0.2
    model = EvidenceFusionClassifier.from_pretrained(tmp_path / "attention_fusion_evidence"
                                                     / "model")
    # it learnt a positive weight on the LVEDD z-scores, from training-split statistics
    lab = LABEL_KEYS.index(LVE)
    for view in ("A4C", "PLAX"):
        assert model.meas.weight[lab, measurement_slots().index((view, "lvedd_cm"))] > 0
    mean, std = slot_statistics(ss.subset("train").measurements)
    torch.testing.assert_close(model.meas_mean, mean.float())
    torch.testing.assert_close(model.meas_std, std.float())
    pred = json.loads((tmp_path / "attention_fusion_evidence" / "predictions_test.json")
                      .read_text())
    assert len(pred["studies"]) == len(ss.subset("test"))


def test_checkpoint_round_trip_keeps_standardisation(tmp_path):
    ss = study_set(_toy(30, 6, "train"))
    cfg = BaselineModelConfig(kind="fusion_evidence", dim=8, hidden=8, heads=2, mix_layers=0,
                              structures=len(STRUCTURES), struct_dim=6, slots=slot_names())
    torch.manual_seed(1)
    model = EvidenceFusionClassifier(cfg, prevalence(ss.labels)).eval()
    model.fit_stats(ss.measurements)
    for p in (model.meas.weight, model.struct_out[1].weight):
        torch.nn.init.normal_(p)
    assert (model.meas_std != 1).any() and (model.meas_mean != 0).any()  # not the identity
    model.save_pretrained(tmp_path / "m")
    again = EvidenceFusionClassifier.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(again.meas_mean, model.meas_mean)
    assert torch.equal(again.meas_std, model.meas_std)
    assert again.config.slots == slot_names()
    prior = prevalence(ss.labels)
    np.testing.assert_array_equal(
        predict("attention_fusion_evidence", model, ss, prior, BaselineConfig()),
        predict("attention_fusion_evidence", again, ss, prior, BaselineConfig()))
    again.config.slots = list(reversed(again.config.slots))
    with pytest.raises(ValueError, match="other measurement slots"):
        predict("attention_fusion_evidence", again, ss, prior, BaselineConfig())


def test_ablations_switch_inputs_off(tmp_path):
    ss = _toy_set(40, 16, 16)
    cfg = BaselineConfig(methods=["attention_fusion_evidence"], epochs=2, hidden=8, heads=2,
                         evidence_structures=False, evidence_measurements=False)
    run_baselines(ss, tmp_path, cfg, log=lambda s: None)
    model = EvidenceFusionClassifier.from_pretrained(tmp_path / "attention_fusion_evidence"
                                                     / "model")
    assert model.struct_in is None and model.meas is None and model.config.slots == []


def _write_cache(root, studies):
    write_index(root, [write_study_features(root, sf) for sf in studies],
                encoder={"name": "synthetic"}, detector={"name": "synthetic"})


def test_baseline_shift_rescores_the_evidence_baseline(tmp_path):
    from echosonar.evaluate.baseline_shift import shifted_predictions
    from echosonar.evaluate.predictions import read_predictions

    train, shifted = _toy(40, 7, "train"), _toy(20, 8, "test")
    for sf in shifted:   # a shifted scanner: every reading 30 % larger
        for v in sf.views:
            v.measurements = {k: x * 1.3 for k, x in v.measurements.items()}
    _write_cache(tmp_path / "feat", train)
    _write_cache(tmp_path / "shift", shifted)
    tr = study_set(train)
    cfg = BaselineModelConfig(kind="fusion_evidence", dim=8, hidden=8, heads=2, mix_layers=0,
                              structures=len(STRUCTURES), struct_dim=6, slots=slot_names())
    torch.manual_seed(2)
    model = EvidenceFusionClassifier(cfg).eval()
    model.fit_stats(tr.measurements)
    torch.nn.init.normal_(model.meas.weight)
    mdir = tmp_path / "base" / "attention_fusion_evidence"
    model.save_pretrained(mdir / "model")
    (mdir / "predictions_test.json").write_text(json.dumps(
        {"thresholds": {k: 0.5 for k in LABEL_KEYS}}))
    paths = shifted_predictions(tmp_path / "base", tmp_path / "feat", tmp_path / "shift",
                                BaselineConfig())
    assert paths == [mdir / "predictions_test_shifted.json"]
    meta, preds = read_predictions(paths[0])
    assert meta["method"] == "attention_fusion_evidence" and len(preds) == len(shifted)
    ss = study_set(shifted)
    want = predict("attention_fusion_evidence", model, ss, prevalence(tr.labels),
                   BaselineConfig())
    got = np.array([[preds[k].scores[lab] for lab in LABEL_KEYS] for k in ss.keys])
    np.testing.assert_allclose(got, want, atol=1e-5)
    # read with the training statistics: refitting them on the shifted set would differ
    model.fit_stats(ss.measurements)
    other = predict("attention_fusion_evidence", model, ss, prevalence(tr.labels),
                    BaselineConfig())
    assert not np.allclose(other, want, atol=1e-3)


def test_measurement_helpers_have_one_home():
    from echosonar.detect import measure
    from echosonar.reason import measure_head, prompt

    assert prompt.numeric_measurements is measure.numeric_measurements
    assert measure_head.raw_values is measure.raw_values
    assert measure_head.Z_CLIP == measure.Z_CLIP
