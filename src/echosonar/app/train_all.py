"""``train all``: every training stage in order, on a user's dataset or on a simulated set.

The plan is a list of ``echosonar ...`` command lines, run and recorded by the benchmark's step
machinery (:func:`echosonar.evaluate.benchmark.execute`: ``RUN/steps/<step>.json`` with status,
seconds, command and config digest; a finished step with the same command and config is skipped,
so an interrupted run resumes from the last finished stage; a failed step skips the steps that
need it). Every step reads one resolved config, ``RUN/config.yaml``.

**Dataset** (``echosonar dataset build`` output: ``dataset.json`` + clip cache)::

    [train view-classifier]   only without --view-model and with clips whose view was given
    [train detector]          only without --detector and with ground-truth boxes (a user
                              dataset has none: pass --detector, e.g. a bundle's detector/)
    train encoder -> encode -> dataset targets (reasoning from the detector's evidence)
    -> train baselines -> train sft [-> train grpo] -> bundle -> evaluate test (VLM with free
    decoding -- the headline -- and with guided decoding, as ``analyze`` runs it; the fair
    baseline; a dataset is end-to-end by construction: its views, sectors and phases were
    never given by a simulator)

**Simulated set** (a folder with ``manifest.json``; the quickstart's chain)::

    ingest (oracle) -> train view-classifier, detector, encoder -> encode -> ingest val/test
    end to end -> encode -> baselines (+ re-scored end to end) -> sft [-> grpo] -> bundle
    -> evaluate test end to end
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echosonar.evaluate.benchmark import Step

#: the classifier baseline evaluated beside the VLM (the fair one: it reads the same evidence)
BASELINE = "attention_fusion_evidence"
#: baselines trained when no training study has an A4C clip (the single-view one needs it)
NO_A4C_METHODS = "prior,late_fusion,attention_fusion,attention_fusion_evidence"
CONFIG = "config.yaml"
SUMMARY = "train_all.json"


class TrainAllError(ValueError):
    """The data or the options cannot make a plan; the message says what to pass."""


@dataclass
class TrainAll:
    """Inputs of a ``train all`` run (paths as given)."""

    data: Path
    out: Path
    detector: Path | None = None
    view_model: Path | None = None
    grpo: bool = False
    kind: str = ""  # "dataset" or "simulated", filled by inspect()
    info: dict[str, Any] = field(default_factory=dict)


def inspect(t: TrainAll) -> TrainAll:
    """Say what ``t.data`` is (dataset or simulated set) and what it holds; raises
    :class:`TrainAllError` with the fix when no plan can be made from it."""
    d = t.data
    if (d / "manifest.json").is_file():
        t.kind, t.info = "simulated", {}
        return t
    if not (d / "dataset.json").is_file() or not (d / "index.json").is_file():
        raise TrainAllError(f"{d} is neither a dataset (dataset.json + index.json, from "
                            "`echosonar dataset build`) nor a simulated set (manifest.json)")
    summary = json.loads((d / "dataset.json").read_text())
    index = json.loads((d / "index.json").read_text())
    clips = [c for e in index["studies"] for c in e["clips"]]
    splits = {s: sum(1 for e in index["studies"] if e.get("split") == s)
              for s in ("train", "val", "test")}
    vs = summary.get("view_source", {})
    t.kind = "dataset"
    t.info = {"splits": splits, "boxes": sum(1 for c in clips if c.get("has_boxes")),
              "a4c_train": any(c["view"] == "A4C" for e in index["studies"]
                               if e.get("split") == "train" for c in e["clips"]),
              "given_views": int(vs.get("views_file", 0)) + int(vs.get("dicom_header", 0))}
    if not all(splits.values()):
        raise TrainAllError(f"{d} has {splits['train']} train, {splits['val']} val and "
                            f"{splits['test']} test studies; training needs a train split, the "
                            "baselines and the bundle's thresholds a val split, evaluation a "
                            "test split (give a split column or other dataset.split_fractions)")
    if t.detector is None and not t.info["boxes"]:
        raise TrainAllError(f"{d} has no ground-truth boxes to train a detector on; pass "
                            "--detector DIR (a trained detector, e.g. a bundle's detector/)")
    return t


def plan(t: TrainAll) -> list[Step]:
    """The ordered steps (pure: nothing runs). Call :func:`inspect` first."""
    if not t.kind:
        inspect(t)
    return _plan_dataset(t) if t.kind == "dataset" else _plan_simulated(t)


def _paths(t: TrainAll) -> dict[str, Path]:
    r = t.out
    return {"view": t.view_model or r / "view", "detector": t.detector or r / "detector",
            "encoder": r / "encoder", "features": r / "features", "baselines": r / "baselines",
            "sft": r / "sft", "grpo": r / "grpo", "bundle": r / "bundle", "eval": r / "eval"}


def _tail(t: TrainAll, p: dict[str, Path], train_feats: Path, eval_feats: Path,
          baseline_pred: Path, feats_dep: str, eval_dep: str, base_dep: str,
          view: Path | None, view_dep: list[str], cfg: list[str]) -> list[Step]:
    """baselines -> sft [-> grpo] -> bundle -> evaluate, shared by both kinds of data."""
    es = ["echosonar"]
    det_dep = [] if t.detector else ["detector"]
    vlm, vlm_dep = (p["grpo"] / "final", "grpo") if t.grpo else (p["sft"] / "model", "sft")
    methods = [] if t.info.get("a4c_train", True) else ["--methods", NO_A4C_METHODS]
    steps = [Step("baselines", es + ["train", "baselines", "--cache", str(train_feats),
                                     "--out", str(p["baselines"])] + methods + cfg,
                  [feats_dep]),
             Step("sft", es + ["train", "sft", "--features", str(train_feats), "--out",
                               str(p["sft"])] + cfg, [feats_dep])]
    if t.grpo:
        steps.append(Step("grpo", es + ["train", "grpo", "--from", str(p["sft"] / "model"),
                                        "--features", str(train_feats), "--out",
                                        str(p["grpo"])] + cfg, ["sft"]))
    bundle = es + ["bundle", "--out", str(p["bundle"]), "--detector", str(p["detector"]),
                   "--encoder", str(p["encoder"]), "--vlm", str(vlm), "--features",
                   str(eval_feats), "--copy"] + (["--view-classifier", str(view)] if view else [])
    steps.append(Step("bundle", bundle + cfg, [vlm_dep, "encoder", *det_dep, *view_dep,
                                               eval_dep]))
    ev = ["--features", str(eval_feats), "--split", "test", "--train-features",
          str(train_feats)]
    steps.append(Step("evaluate", es + ["evaluate", str(p["bundle"] / "vlm"), *ev, "--out",
                                        str(p["eval"] / "echosonar_r"), "--name",
                                        "EchoSonar-R"] + cfg, ["bundle"]))
    steps.append(Step("evaluate_guided", es + [
        "evaluate", str(p["bundle"] / "vlm"), *ev, "--out", str(p["eval"] / "echosonar_r_guided"),
        "--name", "EchoSonar-R", "--set", "eval.decoding=guided"] + cfg, ["bundle"]))
    steps.append(Step("evaluate_baseline", es + ["evaluate", str(baseline_pred), *ev, "--out",
                                                 str(p["eval"] / BASELINE), "--name",
                                                 BASELINE] + cfg, [base_dep, eval_dep]))
    return steps


def _plan_dataset(t: TrainAll) -> list[Step]:
    p, es, d = _paths(t), ["echosonar"], t.data
    cfg = ["--config", str(t.out / CONFIG)]
    steps: list[Step] = []
    view: Path | None = t.view_model
    view_dep: list[str] = []
    if t.view_model is None and t.info.get("given_views"):
        steps.append(Step("view", es + ["train", "view-classifier", "--data", str(d), "--out",
                                        str(p["view"])] + cfg))
        view, view_dep = p["view"], ["view"]
    if t.detector is None:
        steps.append(Step("detector", es + ["train", "detector", "--cache", str(d), "--out",
                                            str(p["detector"])] + cfg))
    det_dep = [] if t.detector else ["detector"]
    steps += [
        Step("encoder", es + ["train", "encoder", "--cache", str(d), "--out",
                              str(p["encoder"])] + cfg),
        Step("encode", es + ["encode", str(d), "--out", str(p["features"]), "--encoder",
                             str(p["encoder"]), "--detector", str(p["detector"])] + cfg,
             ["encoder", *det_dep]),
        Step("targets", es + ["dataset", "targets", str(p["features"])], ["encode"]),
    ]
    pred = p["baselines"] / BASELINE / "predictions_test.json"
    return steps + _tail(t, p, p["features"], p["features"], pred, "targets", "targets",
                         "baselines", view, view_dep, cfg)


def _plan_simulated(t: TrainAll) -> list[Step]:
    p, es, s = _paths(t), ["echosonar"], t.data
    cfg = ["--config", str(t.out / CONFIG)]
    cache, cache_e2e = t.out / "data" / "cache", t.out / "data" / "cache_e2e"
    feats_e2e = t.out / "features_e2e"
    steps = [Step("ingest", es + ["ingest", str(s), "--out", str(cache)] + cfg)]
    view_dep = [] if t.view_model else ["view"]
    if t.view_model is None:
        steps.append(Step("view", es + ["train", "view-classifier", "--data", str(cache),
                                        "--out", str(p["view"])] + cfg, ["ingest"]))
    if t.detector is None:
        steps.append(Step("detector", es + ["train", "detector", "--cache", str(cache), "--out",
                                            str(p["detector"])] + cfg, ["ingest"]))
    det_dep = [] if t.detector else ["detector"]
    enc = ["--encoder", str(p["encoder"]), "--detector", str(p["detector"])] + cfg
    steps += [
        Step("encoder", es + ["train", "encoder", "--cache", str(cache), "--out",
                              str(p["encoder"])] + cfg, ["ingest"]),
        Step("encode", es + ["encode", str(cache), "--out", str(p["features"])] + enc,
             ["encoder", *det_dep]),
        Step("ingest_e2e", es + ["ingest", str(s), "--out", str(cache_e2e), "--end-to-end",
                                 "--split", "val", "--split", "test", "--view-model",
                                 str(p["view"])] + cfg, view_dep),
        Step("encode_e2e", es + ["encode", str(cache_e2e), "--out", str(feats_e2e)] + enc,
             ["encoder", "ingest_e2e", *det_dep]),
    ]
    tail = _tail(t, p, p["features"], feats_e2e,
                 p["baselines"] / BASELINE / "predictions_test_e2e.json", "encode",
                 "encode_e2e", "baselines_e2e", p["view"], view_dep, cfg)
    shift = Step("baselines_e2e", ["python", "-m", "echosonar.evaluate.baseline_shift",
                                   str(p["baselines"]), str(p["features"]), str(feats_e2e),
                                   "--suffix", "e2e"] + cfg, ["baselines", "encode_e2e"])
    return steps + tail[:1] + [shift] + tail[1:]


def metrics_of(out: Path) -> dict[str, Any]:
    """Test-split headline numbers of the run's evaluations (absent ones are left out)."""
    got: dict[str, Any] = {}
    for row in ("echosonar_r", "echosonar_r_guided", BASELINE):
        f = out / "eval" / row / "metrics_test.json"
        if not f.is_file():
            continue
        m = json.loads(f.read_text())
        c = m.get("classification", {})
        got[row] = {"macro_balanced_accuracy": c.get("macro_balanced_accuracy"),
                    "macro_balanced_accuracy_ci": c.get("macro_balanced_accuracy_ci"),
                    "macro_f1": c.get("macro_f1"), "macro_auroc": c.get("macro_auroc"),
                    "n_studies": m.get("n_studies"),
                    "well_formed_rate": m.get("well_formed_rate")}
    return got


def clearing(runner: Any, out: Path) -> Any:
    """Wrap a step runner so that a step which is not recorded as finished starts from an empty
    ``--out`` folder when that folder lies inside the run: a stage killed half-way (or redone)
    left a checkpoint there that ``train sft``/``train grpo`` refuse without ``--resume`` and
    ``encode`` would mix with new features. Folders outside the run (a given detector or view
    classifier, the dataset) are never touched."""
    import shutil

    root = out.resolve()

    def run(step: Step, log_path: Path) -> None:
        if "--out" in step.argv:
            target = Path(step.argv[step.argv.index("--out") + 1]).resolve()
            if target != root and root in target.parents and target.exists():
                shutil.rmtree(target)
        runner(step, log_path)

    return run
