"""`echosonar benchmark` orchestration and `echosonar results`: the plan (end-to-end protocol,
seeds), resumable execution, failure propagation and RESULTS.md rendering (stages replaced by a
fake runner; the real pipeline is far too slow)."""

import json

from echosonar.cli import main
from echosonar.evaluate.benchmark import BUDGETS, ROWS, execute, plan, write_config
from echosonar.evaluate.results import load_rows, render


def test_plan_scores_every_row_end_to_end_with_seeds(tmp_path):
    steps = plan(tmp_path, "small")
    names = [s.name for s in steps]
    assert len(names) == len(set(names))
    for row, _, _, headline in ROWS:
        for k in range(3 if headline else 1):
            assert f"eval_{row}_s{k}" in names
        assert f"eval_{row}_shifted" in names
    for i, s in enumerate(steps):  # dependencies always come earlier (run in order)
        assert all(d in names[:i] for d in s.deps), s.name
    by = {s.name: s for s in steps}
    # the evaluated cache is the end-to-end one, ingested blind with the trained view model
    assert "--end-to-end" in by["ingest_e2e"].command and "runs/view" in by["ingest_e2e"].command
    assert "--end-to-end" not in by["ingest"].command
    assert "features_e2e" in by["eval_sft_s2"].command
    assert "eval.decoding" not in by["eval_grpo_s1"].command  # free decoding: the default
    assert "eval.decoding=guided" in by["eval_sft_guided"].command
    assert "eval.protocol=oracle" in by["eval_sft_oracle"].command
    assert "predictions_test_e2e.json" in by["eval_attention_fusion_s1"].command
    assert "sft.seed=2" in by["sft_s2"].command and by["grpo_s1"].deps == ["sft_s1"]
    assert "--preset shifted" in by["eval_sft_shifted"].command
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
    for b in BUDGETS:
        write_config(tmp_path / b, b)  # every budget's overrides are valid config keys


def _fake_metrics(out, tag, bacc, protocol="end-to-end", decoding=None, preset="default",
                  row=None):
    d = out / "eval" / tag
    d.mkdir(parents=True, exist_ok=True)
    row = row or tag.rsplit("_s", 1)[0]
    m = {"n_studies": 5, "classification": {
        "macro_balanced_accuracy": bacc, "macro_balanced_accuracy_ci": [bacc - .1, bacc + .1],
        "macro_f1": .4, "macro_auroc": None, "per_label": {
            "bicuspid_aortic_valve": {"balanced_accuracy": .5}}},
        "rare_labels": {"bicuspid_aortic_valve": {"balanced_accuracy": .5}},
        "cutoff_rule": {"macro_bacc": .7, "macro_bacc_ci": [.6, .8]},
        "controls": {"constant_report": {"macro_bacc": .5, "green_rule": .2}},
        "source": {"name": row, "protocol": protocol, "preset": preset, "decoding": decoding,
                   "command": f"echosonar evaluate {tag}"}}
    if row.startswith("sft") or row == "grpo":
        m.update(green_rule={"green_rule": .8}, text={"bleu4": .5, "rougeL": .6},
                 well_formed_rate=.9, reasoning={"agreement_rate": 1, "grounded_rate": .5,
                                                 "no_unassessable_claims_rate": 1})
    (d / "metrics_test.json").write_text(json.dumps(m))


def test_execute_resumes_and_propagates_failures(tmp_path):
    steps = plan(tmp_path, "tiny")
    ran = []

    def runner(step, log_path):
        ran.append(step.name)
        if step.name == "grpo_s0":
            raise RuntimeError("exit code 1: out of patience")

    status = execute(steps, tmp_path, log=lambda s: None, runner=runner)
    assert status["grpo_s0"]["status"] == "failed" and "patience" in status["grpo_s0"]["error"]
    assert status["eval_grpo_s0"]["status"] == "skipped"
    assert "grpo_s0" in status["eval_grpo_s0"]["reason"]
    assert status["eval_sft_shifted"]["status"] == "ok"
    n_first = len(ran)
    ran.clear()  # second run: only the failed step and its dependents are attempted again
    status = execute(steps, tmp_path, log=lambda s: None, runner=runner)
    assert ran == ["grpo_s0"] and n_first == len(steps) - 2


def test_results_headline_needs_seeds_end_to_end_and_no_forcing(tmp_path, capsys):
    for k, v in enumerate((.6, .7, .8)):
        _fake_metrics(tmp_path, f"sft_s{k}", v)
        _fake_metrics(tmp_path, f"prior_s{k}", .5)
    _fake_metrics(tmp_path, "sft_guided", .9, decoding="guided", row="sft")
    _fake_metrics(tmp_path, "sft_oracle", .95, protocol="oracle", row="sft")
    _fake_metrics(tmp_path, "grpo_s0", .99)  # one seed only
    rows = {(r.name, r.protocol, r.decoding): r for r in load_rows(tmp_path / "eval")}
    assert len(rows[("sft", "end-to-end", None)].metrics) == 3
    md = render(tmp_path / "eval", min_seeds=3)
    head, rest = md.split("## Reference rows")
    assert "| EchoSonar-R SFT | 3 | 70.0 ± 10.0 | [50.0, 70.0] |" in head
    assert "| Prior baseline | 3 |" in head
    for explo in ("GUIDED decoding", "ORACLE protocol", "| EchoSonar-R SFT + GRPO | 1 |"):
        assert explo not in head and explo in rest
    assert "| EchoSonar-R SFT (GUIDED decoding: findings forced) | 1 | 90.0 |" in rest
    assert "forced" in rest.split("GUIDED decoding")[1].split("\n")[0]
    assert "detector cut-off rule (no learning) | 70.0 [60.0, 80.0]" in rest
    assert "control: constant_report | 50.0 | 0.200" in rest
    assert "`echosonar evaluate sft_s1`" in rest
    assert main(["results", str(tmp_path / "eval"), "--out", str(tmp_path / "R.md")]) == 0
    assert (tmp_path / "R.md").read_text() == md
    assert main(["results", str(tmp_path / "nothing"), "--out", str(tmp_path / "X.md")]) == 2
    assert "no metrics" in capsys.readouterr().err
