"""The measurement head, its checkpointing, and refitting the label heads on a frozen LM."""

import json
import math

import pytest
import torch

from echosonar.cli import main
from echosonar.reason.head_fit import fit_label_heads
from echosonar.reason.measure_head import MeasurementHead, raw_values
from echosonar.reason.model import EchoSonarR
from echosonar.reason.synthetic import synthetic_studies, tiny_setup, write_synthetic_cache
from echosonar.taxonomy import LABEL_KEYS


def test_features_standardise_and_mark_missing():
    studies = synthetic_studies(30, seed=4)
    h = MeasurementHead(len(LABEL_KEYS))
    j = h.slots.index(("PLAX", "lvedd_cm"))
    vals = [raw_values(sf, h.slots)[j] for sf in studies]
    seen = [v for v in vals if not math.isnan(v)]
    assert 5 <= len(seen) < len(vals)  # some studies lack PLAX
    h.fit_stats(studies)
    assert float(h.mean[j]) == pytest.approx(sum(seen) / len(seen), rel=1e-5)
    x = h.features(studies)
    k = len(h.slots)
    assert x.shape == (30, 2 * k)
    for v, row in zip(vals, x, strict=True):
        if math.isnan(v):
            assert row[j] == 0 and row[k + j] == 0
        else:
            z = (v - float(h.mean[j])) / float(h.std[j])
            assert row[k + j] == 1 and float(row[j]) == pytest.approx(z, abs=1e-4)
    # slots no study measures keep mean 0 / std 1 and read "missing"
    never = h.slots.index(("PLAX_COLOR", "ar_jet_ratio"))
    assert h.mean[never] == 0 and h.std[never] == 1 and (x[:, k + never] == 0).all()
    assert torch.isfinite(h(studies)).all() and (h(studies) == 0).all()  # zero start


def test_zero_start_and_checkpoint_round_trip(tmp_path):
    studies, _, model = tiny_setup(n=6, seed=5)
    assert model.meas_head is not None  # on by default for new models
    with torch.no_grad():
        base = torch.sigmoid(model.label_head(model._pooled(
            model._hidden(*model.prompt_embeds(studies[:3])), model.prompt_embeds(studies[:3])[1])))
        assert torch.allclose(model.label_scores(studies[:3]), base, atol=1e-6)
    model.meas_head.fit_stats(studies)
    torch.nn.init.normal_(model.meas_head.linear.weight)
    model.save_pretrained(tmp_path / "m")
    again = EchoSonarR.from_pretrained(tmp_path / "m")
    assert torch.equal(again.meas_head.mean, model.meas_head.mean)
    with torch.no_grad():
        assert torch.allclose(again.label_scores(studies[:3]), model.label_scores(studies[:3]))
    # a model saved before the measurement head existed loads without one
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    old = _without_meas_head(model, tmp_path / "old")
    assert "measurement_head" not in json.loads((old / "config.json").read_text())["config"]
    assert EchoSonarR.from_pretrained(old).meas_head is None
    assert cfg["config"]["measurement_head"] is True


def _without_meas_head(model, path):
    from safetensors.torch import load_file

    from echosonar.io.checkpoint import save_tensors

    model.save_pretrained(path)
    w = load_file(str(path / "model.safetensors"))
    cfg = json.loads((path / "config.json").read_text())
    del cfg["config"]["measurement_head"]
    cfg["sha256"] = save_tensors(path / "model.safetensors",
                                 {k: v for k, v in w.items() if not k.startswith("meas_head.")})
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_refit_learns_from_measurements_and_keeps_the_lm(tmp_path):
    studies, _, model = tiny_setup(n=4, seed=6)
    old = _without_meas_head(model, tmp_path / "old")
    model = EchoSonarR.from_pretrained(old)
    train, val = synthetic_studies(120, seed=7), synthetic_studies(40, seed=8, split="val")
    lm_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    head_before = model.label_head[1].weight.clone()
    res = fit_label_heads(model, train, val, epochs=150, lr=5e-2, log=lambda s: None)
    assert model.meas_head is not None and model.config.measurement_head
    assert res["val_bce"] < res["val_bce_start"] and res["n_train"] == 120
    assert torch.equal(model.label_head[1].weight, head_before)  # by default: kept
    assert all(torch.equal(v, model.lm.state_dict()[k]) for k, v in lm_before.items())
    # LV size is measured in PLAX/A4C: its weight on LV enlargement is positive
    j = model.meas_head.slots.index(("PLAX", "lvedd_cm"))
    assert model.meas_head.linear.weight[LABEL_KEYS.index("lv_enlargement"), j] > 0
    fit_label_heads(model, train, [], epochs=20, lr=5e-2, fit_hidden=True, log=lambda s: None)
    assert not torch.equal(model.label_head[1].weight, head_before)
    with pytest.raises(ValueError, match="no labelled"):
        fit_label_heads(model, [], val, log=lambda s: None)


def test_cli_train_head(tmp_path, capsys):
    _, _, model = tiny_setup(n=4, seed=9)
    model.save_pretrained(tmp_path / "m")
    write_synthetic_cache(tmp_path / "f", {"train": 20, "val": 8}, d_enc=32, d_det=16)
    args = ["train", "head", "--from", str(tmp_path / "m"), "--features", str(tmp_path / "f"),
            "--out", str(tmp_path / "m2"), "--set", "head.epochs=20", "--threads", "1"]
    assert main(args) == 0
    fit = json.loads((tmp_path / "m2" / "head_fit.json").read_text())
    assert fit["n_train"] == 20 and fit["n_val"] == 8 and fit["epochs"] == 20
    assert EchoSonarR.from_pretrained(tmp_path / "m2").meas_head is not None
    assert main(args) == 2 and "exists" in capsys.readouterr().err
    same = ["train", "head", "--from", str(tmp_path / "m"), "--features", str(tmp_path / "f"),
            "--out", str(tmp_path / "m")]
    assert main(same) == 2
