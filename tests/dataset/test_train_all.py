"""``train all``: the plan for each kind of data, and one tiny end-to-end run on the five-study
example (in process), resumed and partly redone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.dataset.example import build_example

from echosonar.app.train_all import NO_A4C_METHODS, TrainAll, TrainAllError, inspect, plan
from echosonar.cli import main

#: the quickstart's "tiny" budget: every stage runs, nothing is really trained
TINY = """\
ingest: {image_size: 32}
detect: {epochs: 1, max_clips: 8, frames_per_clip: 1, eval_every: 0}
encode: {pretrain: {epochs: 1, max_clips: 8}, baselines: {epochs: 2}}
lm: {hidden_size: 32, layers: 1, heads: 2, vocab_size: 384}
sft: {steps: 2, batch_size: 2, warmup: 1, eval_every: 0, val_studies: 1, sample_every: 0,
      samples: 0}
grpo: {steps: 1, group_size: 2, studies_per_step: 1, micro_batch_studies: 1,
       max_completion_length: 16}
eval: {bootstrap: 10, max_new_tokens: 16, meteor: false, embedding: false}
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The five-study example as a dataset: splits 3 train, 1 val, 1 test; views from views.csv."""
    root = tmp_path_factory.mktemp("train_all")
    ex = build_example(root, studies=5, image_size=48, views=True)
    out = root / "ds"
    assert main(["dataset", "build", str(ex["studies"]), "--labels", str(ex["labels"]),
                 "--views", str(ex["views"]), "--out", str(out), "--quiet", "--set",
                 "ingest.image_size=32"]) == 0
    return out


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """An untrained tiny detector: what a user passes with --detector (a trained one, really)."""
    from echosonar.config import DetectConfig
    from echosonar.detect.model import Detector

    d = tmp_path_factory.mktemp("det") / "detector"
    Detector(DetectConfig(embed_dim=32, widths=[8, 16, 24, 32], decoder_layers=1, heads=2,
                          image_size=32)).save_pretrained(d)
    return d


def _names(t: TrainAll) -> list[str]:
    return [s.name for s in plan(inspect(t))]


def test_a_dataset_without_boxes_needs_a_detector(dataset, tmp_path):
    with pytest.raises(TrainAllError, match="no ground-truth boxes.*--detector"):
        inspect(TrainAll(dataset, tmp_path))


def test_plan_for_a_dataset(dataset, detector, tmp_path):
    t = TrainAll(dataset, tmp_path, detector=detector)
    names = _names(t)
    # views were given (views.csv), no --view-model: the view classifier is trained on them
    assert names == ["view", "encoder", "encode", "targets", "baselines", "sft", "bundle",
                     "evaluate", "evaluate_guided", "evaluate_baseline"]
    steps = {s.name: s for s in plan(t)}
    assert steps["encode"].argv[steps["encode"].argv.index("--detector") + 1] == str(detector)
    assert "--view-classifier" in steps["bundle"].argv
    given = TrainAll(dataset, tmp_path, detector=detector, view_model=detector, grpo=True)
    assert _names(given)[:1] == ["encoder"] and "grpo" in _names(given)
    assert str(tmp_path / "grpo" / "final") in {s.name: s for s in plan(given)}["bundle"].argv


def test_plan_for_a_simulated_set_is_the_quickstart_chain(tmp_path):
    (tmp_path / "sim").mkdir()
    (tmp_path / "sim" / "manifest.json").write_text("{}")
    names = _names(TrainAll(tmp_path / "sim", tmp_path / "run"))
    assert names == ["ingest", "view", "detector", "encoder", "encode", "ingest_e2e",
                     "encode_e2e", "baselines", "baselines_e2e", "sft", "bundle", "evaluate",
                     "evaluate_guided", "evaluate_baseline"]


def test_not_a_dataset_and_missing_splits(dataset, detector, tmp_path):
    with pytest.raises(TrainAllError, match="neither a dataset"):
        inspect(TrainAll(tmp_path, tmp_path / "run"))
    import shutil

    bad = tmp_path / "ds"
    shutil.copytree(dataset, bad)
    index = json.loads((bad / "index.json").read_text())
    for e in index["studies"]:
        e["split"] = "train"
        for c in e["clips"]:
            c["view"] = "A2C" if c["view"] == "A4C" else c["view"]
    (bad / "index.json").write_text(json.dumps(index))
    with pytest.raises(TrainAllError, match="5 train, 0 val and 0 test studies"):
        inspect(TrainAll(bad, tmp_path / "run", detector=detector))
    index["studies"][-1]["split"], index["studies"][-2]["split"] = "test", "val"
    (bad / "index.json").write_text(json.dumps(index))
    steps = {s.name: s for s in plan(inspect(TrainAll(bad, tmp_path / "run", detector=detector)))}
    assert NO_A4C_METHODS in steps["baselines"].argv  # single-view needs A4C clips


@pytest.mark.slow
def test_train_all_on_the_example_to_a_bundle_and_a_test_evaluation(dataset, detector, tmp_path,
                                                                    capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run = tmp_path / "run"
    args = ["train", "all", "--data", str(dataset), "--out", str(run), "--detector",
            str(detector), "--config", str(cfg), "--in-process", "--set", "sft.seed=1"]
    assert main(args) == 0, capsys.readouterr()
    summary = json.loads((run / "train_all.json").read_text())
    assert all(r["status"] == "ok" for r in summary["steps"].values()), summary["steps"]
    assert summary["detector"] == "given" and summary["view_classifier"] == "trained"
    assert (run / "bundle" / "bundle.json").is_file()
    m = json.loads((run / "eval" / "echosonar_r" / "metrics_test.json").read_text())
    assert m["n_studies"] == 1 and "controls" in m and m["source"]["protocol"] == "end-to-end"
    assert set(summary["metrics_test"]) == {"echosonar_r", "echosonar_r_guided",
                                            "attention_fusion_evidence"}
    feats = json.loads((run / "features" / "index.json").read_text())
    assert feats["targets"]["reasoning"] == "echosonar.reason.evidence_targets"
    assert all(e["reasoning"] for e in feats["studies"])
    # the one resolved config every step read
    assert "sft:" in (run / "config.yaml").read_text()
    # rerun: every step is a finished one, nothing runs again
    before = {p.name: p.stat().st_mtime_ns for p in (run / "steps").iterdir()}
    capsys.readouterr()
    assert main(args) == 0
    assert not [ln for ln in capsys.readouterr().out.splitlines() if "] " in ln]
    assert {p.name: p.stat().st_mtime_ns for p in (run / "steps").iterdir()} == before
    # --redo sft: sft and every step after it run again, the encoder does not
    assert main(args + ["--redo", "sft"]) == 0
    ran = [ln.split("] ")[1].split(":")[0] for ln in capsys.readouterr().out.splitlines()
           if "] " in ln]
    assert ran == ["sft", "bundle", "evaluate", "evaluate_guided"]


def test_an_unfinished_step_restarts_from_an_empty_out_folder_inside_the_run_only(tmp_path):
    from echosonar.app.train_all import clearing
    from echosonar.evaluate.benchmark import Step

    run, outside = tmp_path / "run", tmp_path / "mine"
    for d in (run / "sft", outside):
        d.mkdir(parents=True)
        (d / "checkpoint").write_text("half-written")
    seen = []
    runner = clearing(lambda st, log: seen.append(sorted(p.name for p in Path(
        st.argv[st.argv.index("--out") + 1]).glob("*"))), run)
    runner(Step("sft", ["echosonar", "train", "sft", "--out", str(run / "sft")]), tmp_path / "l")
    runner(Step("x", ["echosonar", "encode", "--out", str(outside)]), tmp_path / "l")
    runner(Step("y", ["echosonar", "bundle", "--out", str(run)]), tmp_path / "l")
    # the run's own sft folder was emptied; a folder outside the run and the run itself were not
    assert seen == [[], ["checkpoint"], []]
    assert (outside / "checkpoint").is_file() and run.is_dir()


def test_one_resolved_config_budget_then_file_then_set(tmp_path):
    import yaml

    from echosonar.app.train_all_cli import resolve_config

    user = tmp_path / "my.yaml"
    user.write_text("sft: {steps: 7}\nlm: {layers: 3}\n")
    path = resolve_config(tmp_path / "run", "tiny", str(user), ["lm.layers=4"])
    cfg = yaml.safe_load(path.read_text())
    assert cfg["sft"]["steps"] == 7          # the file beats the budget (tiny: 20)
    assert cfg["sft"]["batch_size"] == 4     # the budget beats the default (8)
    assert cfg["lm"]["layers"] == 4          # --set beats the file
    assert cfg["encode"]["baselines"]["epochs"] == 5 and cfg["dataset"]["id_from"] == "folder"
    mtime = path.stat().st_mtime_ns
    resolve_config(tmp_path / "run", "tiny", str(user), ["lm.layers=4"])
    assert path.stat().st_mtime_ns == mtime  # unchanged settings: the file is left alone
