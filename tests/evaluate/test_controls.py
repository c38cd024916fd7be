"""Negative controls: a constant or shuffled answer is scored on the same studies as the model,
and the headline check names metrics a control passes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from echosonar.evaluate.controls import (
    control_predictions,
    derangement,
    headline_check,
    mode_report,
)
from echosonar.taxonomy import REPORT_SECTIONS


def _entry(key, labels, text):
    return {"key": key, "labels": labels, "report": {s: f"{text} {s}" for s in REPORT_SECTIONS}}


@pytest.mark.parametrize("n", [2, 3, 10, 101])
def test_derangement_moves_every_study(n):
    for seed in range(5):
        p = derangement(n, seed)
        assert sorted(p.tolist()) == list(range(n)) and (p != np.arange(n)).all()
    with pytest.raises(ValueError):
        derangement(1)


def test_controls_are_what_they_say():
    train = [_entry("a", {"healthy": 1}, "normal"), _entry("b", {"healthy": 1}, "normal"),
             _entry("c", {"tricuspid_regurgitation": 1}, "tr")]
    truth = [_entry(f"t{i}", {"tricuspid_regurgitation": 1} if i % 2 else {"healthy": 1},
                    f"study{i}") for i in range(6)]
    ctl = control_predictions(truth, train, seed=1)
    assert set(ctl) == {"constant_answer", "constant_report", "shuffled_reports", "empty_report"}
    assert all(p.labels == {"healthy"} and p.report is None
               for p in ctl["constant_answer"].values())
    assert all(p.report == mode_report(train) == train[0]["report"]
               for p in ctl["constant_report"].values())
    reports = {json.dumps(e["report"]) for e in truth}
    for e in truth:  # another study's report and labels, never its own
        p = ctl["shuffled_reports"][e["key"]]
        assert p.report != e["report"] and json.dumps(p.report) in reports
    assert all(p.labels == set() and not any(p.report.values())
               for p in ctl["empty_report"].values())


def test_headline_check_fails_a_metric_a_control_passes():
    model = {"classification": {"macro_balanced_accuracy": 0.75},
             "green_rule": {"green_rule": 0.82, "abnormal_f1": 0.6}}
    controls = {"constant_report": {"macro_bacc": 0.5, "green_rule": 0.86, "abnormal_f1": 0.0},
                "shuffled_reports": {"macro_bacc": 0.52, "green_rule": 0.78, "abnormal_f1": 0.3}}
    hc = headline_check(model, controls)
    assert hc["macro_bacc"]["passes"] and hc["abnormal_f1"]["passes"]
    assert not hc["green_rule"]["passes"] and hc["green_rule"]["control"] == "constant_report"


def test_evaluate_scores_controls_and_refuses_an_oracle_cache(tmp_path, capsys):
    from echosonar.cli import main
    from echosonar.evaluate.predictions import StudyPrediction, write_predictions
    from echosonar.io.features import iter_features
    from echosonar.reason.synthetic import write_synthetic_cache

    root = tmp_path / "f"
    write_synthetic_cache(root, {"train": 10, "test": 8}, d_enc=8, d_det=4, n_tokens=2)
    test = list(iter_features(root, "test"))
    preds = {sf.key: StudyPrediction({k for k, v in sf.labels.items() if v},
                                     report=dict(sf.report)) for sf in test}
    run = tmp_path / "run"
    write_predictions(run / "predictions_test.json", preds, "truth", "test")
    args = ["evaluate", str(run), "--features", str(root), "--set", "eval.embedding=false",
            "--set", "eval.meteor=false", "--set", "eval.bootstrap=20"]
    assert main(args) == 0
    m = json.loads((run / "metrics_test.json").read_text())
    assert m["source"]["protocol"] == "end-to-end"
    assert set(m["controls"]) == {"constant_answer", "constant_report", "shuffled_reports",
                                  "empty_report"}
    assert m["controls"]["empty_report"]["bleu4"] == 0.0
    assert m["headline_check"]["macro_bacc"]["model"] == 1.0
    assert "Negative controls" in (run / "metrics_test.md").read_text()
    # a cache built from manifest hints is refused unless asked for, then labelled ORACLE
    oracle = tmp_path / "o"
    write_synthetic_cache(oracle, {"train": 10, "test": 8}, d_enc=8, d_det=4, n_tokens=2,
                          protocol="oracle")
    args[3] = str(oracle)
    capsys.readouterr()
    assert main(args) == 2
    assert "--end-to-end" in capsys.readouterr().err
    assert main([*args, "--set", "eval.protocol=oracle"]) == 0
    assert "ORACLE protocol" in (run / "metrics_test.md").read_text()
