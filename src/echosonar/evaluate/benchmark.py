"""``echosonar benchmark``: train and evaluate every results-table row at a stated budget.

The pipeline is the documented CLI of each stage, run as subprocesses (so the table is made
exactly the way a user would make it), each step timed and skipped when it already finished
(``OUT/steps/<name>.json``), so an interrupted benchmark resumes:

    simulate (default + shifted) -> ingest (oracle: the training cache) -> train view
    classifier, detector, encoder -> encode -> ingest val+test END TO END (views from the view
    classifier, sector and phases from the images) and the shifted set -> encode them
    -> train baselines (per seed) and re-score them end to end -> train sft / grpo (per seed)
    -> evaluate every row -> docs/RESULTS.md (``echosonar results OUT/eval``)

Models train on the oracle cache (training may read the simulator's truth); every headline row is
scored on the end-to-end cache, which the manifest enters only as the scoring truth. The
headline rows (baselines, SFT, GRPO; free decoding) run once per seed; the exploratory rows
(no structure tokens, guided decoding, the oracle protocol, the shifted preset) once.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from echosonar.io.atomic import atomic_write_json

#: Per budget: simulated studies (default set; shifted test set), seeds of the headline rows and
#: config overrides. "tiny" checks the pipeline end to end in minutes on 2 CPU cores (numbers
#: are noise); "small" is the CPU table (hours on 2 cores; >= 200 end-to-end test studies);
#: "full" is meant for a GPU machine.
BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {"studies": 60, "shifted_studies": 20, "seeds": 1, "set": [
        "ingest.view_train.epochs=2", "ingest.view_train.max_clips=120",
        "detect.epochs=1", "detect.max_clips=120", "encode.pretrain.epochs=1",
        "encode.pretrain.max_clips=120", "encode.baselines.epochs=5",
        "lm.hidden_size=64", "lm.layers=2", "lm.heads=2", "lm.vocab_size=1024",
        "sft.steps=20", "sft.batch_size=4", "sft.warmup=2", "sft.eval_every=0",
        "sft.sample_every=0", "sft.save_every=20", "sft.val_studies=4",
        "grpo.steps=2", "grpo.studies_per_step=2", "grpo.group_size=2",
        "grpo.max_completion_length=256", "grpo.save_every=2",
        "eval.bootstrap=200", "eval.max_new_tokens=256"]},
    "small": {"studies": 700, "shifted_studies": 80, "seeds": 3, "set": [
        "sim.split_fractions=[0.55,0.1,0.35]", "detect.max_clips=1000",
        "encode.pretrain.max_clips=1500", "sft.steps=900", "sft.precision=bf16",
        "sft.sample_every=0", "grpo.steps=30", "grpo.temperature=0.3",
        "grpo.studies_per_step=4", "grpo.group_size=8", "eval.bootstrap=1000"]},
    "full": {"studies": 2000, "shifted_studies": 400, "seeds": 3, "set": [
        "sim.split_fractions=[0.7,0.1,0.2]", "detect.epochs=24", "encode.pretrain.epochs=12",
        "lm.hidden_size=512", "lm.layers=8", "lm.heads=8", "sft.steps=3000",
        "sft.batch_size=16", "grpo.steps=300", "grpo.studies_per_step=8", "grpo.group_size=8",
        "eval.bootstrap=1000"]},
}

#: (row id, label, run folder relative to OUT/runs -- ``{s}`` is the seed -- headline row?)
ROWS: tuple[tuple[str, str, str, bool], ...] = (
    ("prior", "Prior baseline", "baselines_s{s}/prior", True),
    ("single_view", "Single-view classifier (A4C)", "baselines_s{s}/single_view", True),
    ("late_fusion", "Multi-view late fusion", "baselines_s{s}/late_fusion", True),
    ("attention_fusion", "Multi-view attention fusion", "baselines_s{s}/attention_fusion", True),
    ("attention_fusion_evidence", "Attention fusion + detector structures and measurements",
     "baselines_s{s}/attention_fusion_evidence", True),
    ("sft", "EchoSonar-R SFT", "sft_s{s}/model", True),
    ("grpo", "EchoSonar-R SFT + GRPO", "grpo_s{s}/final", True),
    ("sft_nostruct", "EchoSonar-R SFT, no structure tokens", "sft_nostruct/model", False),
)
PRESETS = ("default", "shifted")
CONFIG = "config.yaml"


def write_config(out: Path, budget: str, extra_set: Sequence[str] = ()) -> Path:
    """Write the budget's overrides (+ ``extra_set``) as a partial ``OUT/config.yaml``, which
    every step reads with ``--config`` (defaults fill the rest). Only overrides are stored, so a
    finished step stays valid when an unrelated default changes in the code."""
    import yaml

    from echosonar.config import load_config
    from echosonar.config.base import _parse_scalar
    from echosonar.io.atomic import atomic_write_text

    sets = [*BUDGETS[budget]["set"], *extra_set]
    load_config(None, sets)  # validate every key and value now, with a clear ConfigError
    tree: dict[str, Any] = {}
    for item in sets:
        path, raw = item.split("=", 1)
        *parents, leaf = path.strip().split(".")
        node = tree
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = _parse_scalar(raw)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / CONFIG, yaml.safe_dump(tree, sort_keys=True))
    return out / CONFIG


@dataclass
class Step:
    """One pipeline step: a command line, its dependencies and the rows it trains."""

    name: str
    argv: list[str]
    deps: list[str] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)  # rows whose training cost includes it

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def plan(out: Path, budget: str, seed: int = 0) -> list[Step]:
    """The ordered steps of a benchmark run (pure: nothing is executed or written)."""
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose from {', '.join(BUDGETS)}")
    cfg = ["--config", str(out / CONFIG)]  # the budget's overrides, written by write_config
    b = BUDGETS[budget]
    d, r, ev = out / "data", out / "runs", out / "eval"
    es = ["echosonar"]
    view = ["--view-model", str(r / "view")]
    steps = [
        Step("simulate", es + ["simulate", "--studies", str(b["studies"]), "--out",
                               str(d / "sim"), "--seed", str(seed)] + cfg),
        Step("simulate_shifted", es + ["simulate", "--studies", str(b["shifted_studies"]),
                                       "--out", str(d / "sim_shifted"), "--preset", "shifted",
                                       "--seed", str(seed + 1)] + cfg
             + ["--set", "sim.split_fractions=[0,0,1]"]),
        Step("ingest", es + ["ingest", str(d / "sim"), "--out", str(d / "cache")] + cfg,
             ["simulate"]),
        Step("view", es + ["train", "view-classifier", "--data", str(d / "cache"), "--out",
                           str(r / "view")] + cfg, ["ingest"]),
        Step("detector", es + ["train", "detector", "--cache", str(d / "cache"), "--out",
                               str(r / "detector")] + cfg, ["ingest"]),
        Step("encoder", es + ["train", "encoder", "--cache", str(d / "cache"), "--out",
                              str(r / "encoder")] + cfg, ["ingest"]),
        Step("encode", es + ["encode", str(d / "cache"), "--out", str(d / "features"),
                             "--encoder", str(r / "encoder"), "--detector",
                             str(r / "detector")] + cfg, ["encoder", "detector"]),
        Step("ingest_e2e", es + ["ingest", str(d / "sim"), "--out", str(d / "cache_e2e"),
                                 "--end-to-end", "--split", "val", "--split", "test"] + view
             + cfg, ["simulate", "view"]),
        Step("ingest_shifted", es + ["ingest", str(d / "sim_shifted"), "--out",
                                     str(d / "cache_shifted"), "--end-to-end"] + view + cfg,
             ["simulate_shifted", "view"]),
    ]
    for name in ("e2e", "shifted"):
        steps.append(Step(f"encode_{name}", es + [
            "encode", str(d / f"cache_{name}"), "--out", str(d / f"features_{name}"),
            "--encoder", str(r / "encoder"), "--detector", str(r / "detector")] + cfg,
            ["encoder", "detector", f"ingest_{name}"]))
    seeds = list(range(int(b["seeds"])))
    for k in seeds:
        bdir = r / f"baselines_s{k}"
        steps.append(Step(f"baselines_s{k}", es + [
            "train", "baselines", "--cache", str(d / "features"), "--out", str(bdir)] + cfg
            + ["--set", f"encode.baselines.seed={k}"], ["encode"],
            ["prior", "single_view", "late_fusion", "attention_fusion",
             "attention_fusion_evidence"]))
        for name in ("e2e", "shifted"):
            if name == "shifted" and k:
                continue
            steps.append(Step(f"baselines_s{k}_{name}", [
                "python", "-m", "echosonar.evaluate.baseline_shift", str(bdir),
                str(d / "features"), str(d / f"features_{name}"), "--suffix", name] + cfg,
                [f"baselines_s{k}", f"encode_{name}"]))
        steps.append(Step(f"sft_s{k}", es + [
            "train", "sft", "--features", str(d / "features"), "--out", str(r / f"sft_s{k}")]
            + cfg + ["--set", f"sft.seed={k}"], ["encode"], ["sft", "grpo"]))
        steps.append(Step(f"grpo_s{k}", es + [
            "train", "grpo", "--from", str(r / f"sft_s{k}" / "model"), "--features",
            str(d / "features"), "--out", str(r / f"grpo_s{k}")] + cfg
            + ["--set", f"grpo.seed={k}"], [f"sft_s{k}"], ["grpo"]))
    steps.append(Step("sft_nostruct", es + [
        "train", "sft", "--features", str(d / "features"), "--out", str(r / "sft_nostruct")]
        + cfg + ["--set", "lm.use_structure_tokens=false"], ["encode"], ["sft_nostruct"]))

    def evaluate(tag: str, src: Path, feats: str, deps: list[str], name: str,
                 extra: Sequence[str] = ()) -> Step:
        argv = es + ["evaluate", str(src), "--features", str(d / feats), "--split", "test",
                     "--out", str(ev / tag), "--name", name, "--train-features",
                     str(d / "features")] + cfg + list(extra)
        if feats == "features_shifted":
            argv[argv.index("--split") + 2:argv.index("--split") + 2] = ["--preset", "shifted"]
        return Step(f"eval_{tag}", argv, deps)

    for row, _, where, headline in ROWS:
        for k in (seeds if headline else [0]):
            src = r / where.format(s=k)
            train = src.parts[len(r.parts)]  # the run folder = its training step
            for preset in PRESETS:
                if preset == "shifted" and k:
                    continue
                feats, name = ("features_e2e", "e2e") if preset == "default" else (
                    "features_shifted", "shifted")
                deps = [train, f"encode_{name}"]
                s_src = src
                if train.startswith("baselines"):
                    s_src = src / f"predictions_test_{name}.json"
                    deps.append(f"{train}_{name}")
                tag = f"{row}_s{k}" if preset == "default" else f"{row}_shifted"
                steps.append(evaluate(tag, s_src, feats, deps, row))
    # exploratory: the same SFT model with guided decoding, and under the oracle protocol
    steps.append(evaluate("sft_guided", r / "sft_s0" / "model", "features_e2e",
                          ["sft_s0", "encode_e2e"], "sft",
                          ["--set", "eval.decoding=guided"]))
    steps.append(evaluate("sft_oracle", r / "sft_s0" / "model", "features",
                          ["sft_s0", "encode"], "sft", ["--set", "eval.protocol=oracle"]))
    return steps


def print_plan(steps: Sequence[Step]) -> None:
    """``--dry-run``: every step's command and what it waits for."""
    for st in steps:
        deps = f"   # after {', '.join(st.deps)}" if st.deps else ""
        print(f"{st.name}: {st.command}{deps}")


def forget_for_redo(steps: Sequence[Step], out: Path, redo_arg: str) -> None:
    """``--redo a,b``: drop the step records of ``a``, ``b`` and every step that depends on
    them, so :func:`execute` runs them again. Raises ``ValueError`` naming unknown steps."""
    redo = {s for s in redo_arg.split(",") if s}
    unknown = redo - {st.name for st in steps}
    if unknown:
        raise ValueError(f"unknown step(s) {sorted(unknown)}; steps: "
                         f"{', '.join(st.name for st in steps)}")
    for st in steps:  # steps are in dependency order, so one pass closes over dependents
        if st.name in redo or redo & set(st.deps):
            redo.add(st.name)
            (out / "steps" / f"{st.name}.json").unlink(missing_ok=True)


def _run_subprocess(step: Step, log_path: Path) -> None:
    # Run with this interpreter, so the benchmark works without the venv on PATH.
    argv = list(step.argv)
    if argv[0] == "echosonar":
        argv[:1] = [sys.executable, "-m", "echosonar.cli"]
    elif argv[0] == "python":
        argv[0] = sys.executable
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as logf:
        proc = subprocess.run(argv, stdout=logf, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log_path.read_text().strip().splitlines()[-5:]
        raise RuntimeError(f"exit code {proc.returncode}: " + " | ".join(tail))


def config_digest(out: Path) -> str:
    """SHA-256 of ``OUT/config.yaml`` ("" when absent): a finished step is re-used only if the
    config it ran with is unchanged."""
    import hashlib

    p = out / CONFIG
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""


def execute(steps: list[Step], out: Path, log: Callable[[str], None] = print,
            runner: Callable[[Step, Path], None] = _run_subprocess,
            only: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Run ``steps`` in order; a finished step (``OUT/steps/<name>.json`` with status ok, same
    command, same config) is skipped; a step whose dependency is not done is skipped with that
    reason. Returns ``{name: {"status", "seconds", "command", "error"?}}``."""
    status: dict[str, dict[str, Any]] = {}
    digest = config_digest(out)
    for st in steps:
        rec_path = out / "steps" / f"{st.name}.json"
        if rec_path.is_file():
            rec = json.loads(rec_path.read_text())
            if (rec.get("status") == "ok" and rec.get("command") == st.command
                    and rec.get("config_sha256") == digest):
                status[st.name] = rec
                continue
        bad = [dep for dep in st.deps if status.get(dep, {}).get("status") != "ok"]
        if bad or (only and st.name not in only):
            why = f"dependency not done: {', '.join(bad)}" if bad else "not selected"
            status[st.name] = {"status": "skipped", "reason": why, "command": st.command}
            continue
        log(f"[{time.strftime('%H:%M:%S')}] {st.name}: {st.command}")
        t0 = time.time()
        try:
            runner(st, out / "logs" / f"{st.name}.log")
            rec = {"status": "ok", "seconds": round(time.time() - t0, 1), "command": st.command,
                   "config_sha256": digest}
        except Exception as e:  # noqa: BLE001 - one failed stage must not stop other rows
            rec = {"status": "failed", "seconds": round(time.time() - t0, 1),
                   "command": st.command, "error": str(e)[:2000]}
            log(f"  FAILED after {rec['seconds']} s: {rec['error'][:300]}")
        atomic_write_json(rec_path, rec)
        status[st.name] = rec
    return status
