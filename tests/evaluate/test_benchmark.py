"""`echosonar benchmark` orchestration: the plan, resumable execution, failure propagation and
RESULTS.md rendering (stages replaced by a fake runner; the real pipeline is far too slow)."""

import json

from echosonar.cli import main
from echosonar.evaluate.benchmark import BUDGETS, ROWS, execute, plan, write_config
from echosonar.evaluate.results import render


def test_plan_covers_every_row_on_both_presets(tmp_path):
    steps = plan(tmp_path, "tiny")
    names = [s.name for s in steps]
    assert len(names) == len(set(names))
    for row, _, _ in ROWS:
        assert f"eval_{row}_default" in names and f"eval_{row}_shifted" in names
    # Dependencies always come earlier (the executor runs in order).
    for i, s in enumerate(steps):
        assert all(d in names[:i] for d in s.deps), s.name
    by = {s.name: s for s in steps}
    assert "--preset shifted" in by["simulate_shifted"].command
    assert "lm.use_structure_tokens=false" in by["sft_nostruct"].command
    assert by["grpo"].deps == ["sft"] and "sft/model" in by["grpo"].command
    assert "--train-features" in by["eval_sft_shifted"].command
    assert all(s.argv[0] in ("echosonar", "python") for s in steps)


def test_write_config_applies_budget(tmp_path):
    import yaml

    from echosonar.config import load_config

    path = write_config(tmp_path, "tiny", ["sft.lr=0.01"])
    cfg = yaml.safe_load(path.read_text())
    assert cfg["sft"]["steps"] == 20 and cfg["sft"]["lr"] == 0.01
    assert "grpo" in cfg and "sim" not in cfg  # only the overrides are stored
    assert load_config(path).sft.lr == 0.01
    assert set(BUDGETS) == {"tiny", "small", "full"}


def _fake_metrics(out, row, preset, bacc):
    d = out / "eval" / f"{row}_{preset}"
    d.mkdir(parents=True)
    m = {"n_studies": 5, "classification": {
        "macro_balanced_accuracy": bacc, "macro_balanced_accuracy_ci": [bacc - .1, bacc + .1],
        "macro_f1": .4, "macro_auroc": None},
        "rare_labels": {"bicuspid_aortic_valve": {"balanced_accuracy": .5},
                        "pericardial_effusion": {"balanced_accuracy": .75}}}
    if row.startswith("sft") or row == "grpo":
        m.update(green_rule={"green_rule": .8}, text={"bleu4": .5, "rougeL": .6},
                 well_formed_rate=.9, reasoning={"agreement_rate": 1, "grounded_rate": .5,
                                                 "no_unassessable_claims_rate": 1})
    name = "metrics_test.json" if preset == "default" else "metrics_test_shifted.json"
    (d / name).write_text(json.dumps(m))


def test_execute_resumes_and_propagates_failures(tmp_path):
    steps = plan(tmp_path, "tiny")
    ran = []

    def runner(step, log_path):
        ran.append(step.name)
        if step.name == "grpo":
            raise RuntimeError("exit code 1: out of patience")
        if step.name.startswith("eval_"):
            row, preset = step.name[5:].rsplit("_", 1)
            _fake_metrics(tmp_path, row, preset, 0.6 if row != "prior" else 0.5)

    status = execute(steps, tmp_path, log=lambda s: None, runner=runner)
    assert status["grpo"]["status"] == "failed" and "patience" in status["grpo"]["error"]
    assert status["eval_grpo_default"]["status"] == "skipped"
    assert "grpo" in status["eval_grpo_default"]["reason"]
    assert status["eval_sft_shifted"]["status"] == "ok"
    n_first = len(ran)
    # Second run: only the failed step and its dependents are attempted again.
    ran.clear()
    status = execute(steps, tmp_path, log=lambda s: None, runner=runner)
    assert ran == ["grpo"] and n_first == len(steps) - 2
    md = render(tmp_path, "tiny", status)
    assert "| Prior baseline | 50.0 [40.0, 60.0] | – | 40.0 | – | 50.0 | 75.0 |" in md
    assert "VLM SFT + GRPO (EchoSonar-R) | not available: grpo failed" in md
    assert "BAcc bicuspid_aortic_valve %" in md and "Tiny budget" in md
    assert "| grpo | failed: exit code 1: out of patience |" in md


def test_cli_dry_run_and_bad_budget(tmp_path, capsys):
    assert main(["benchmark", "--budget", "small", "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "echosonar train grpo --from" in out and "sft.steps=300" in out
    assert not (tmp_path / "config.yaml").exists()  # a dry run writes nothing
    assert main(["benchmark", "--out", str(tmp_path), "--redo", "nope"]) == 2


def test_baseline_shift_rescores_saved_models(tmp_path):
    import torch

    from echosonar.config.encode import BaselineConfig
    from echosonar.encode.baseline_models import (
        BaselineModelConfig,
        ClipClassifier,
        FusionClassifier,
    )
    from echosonar.evaluate.baseline_shift import main as shift_main
    from echosonar.evaluate.predictions import read_predictions
    from echosonar.reason.synthetic import write_synthetic_cache
    from echosonar.taxonomy import LABEL_KEYS

    kw = dict(d_enc=8, d_det=4, n_tokens=2, min_views=2)
    write_synthetic_cache(tmp_path / "feat", {"train": 6}, **kw)
    write_synthetic_cache(tmp_path / "shift", {"test": 4}, seed=5, **kw)
    base = tmp_path / "base"
    torch.manual_seed(0)
    for method, cls, kind in (("prior", None, None), ("single_view", ClipClassifier, "clip"),
                              ("late_fusion", ClipClassifier, "clip"),
                              ("attention_fusion", FusionClassifier, "fusion")):
        if cls is not None:
            cls(BaselineModelConfig(kind=kind, dim=8, hidden=8, heads=2)).save_pretrained(
                base / method / "model")
        (base / method).mkdir(parents=True, exist_ok=True)
        (base / method / "predictions_test.json").write_text(json.dumps(
            {"thresholds": {k: 0.5 for k in LABEL_KEYS}}))
    assert BaselineConfig().single_view == "A4C"
    assert shift_main([str(base), str(tmp_path / "feat"), str(tmp_path / "shift")]) == 0
    for method in ("prior", "single_view", "late_fusion", "attention_fusion"):
        meta, preds = read_predictions(base / method / "predictions_test_shifted.json")
        assert meta["split"] == "test" and len(preds) == 4
        assert all(p.scores is not None for p in preds.values())
    assert shift_main([str(tmp_path / "nothing"), str(tmp_path / "feat"),
                       str(tmp_path / "shift")]) == 2
