"""The quickstart: the shipped model on example studies, or every stage trained from scratch.

**Default** (``echosonar quickstart``, ``make quickstart``): :func:`run_demo` analyses example
studies with the shipped model (``models/echosonar-r``, see its ``MODEL_CARD.md``) — a couple of
simulated studies written on the spot (seed :data:`DEMO_SEED`, not the training seed 0, so they
were never trained on) and, when the installed pydicom has it, a real SonoSite apical
4-chamber cine from pydicom's test files — through the same ``echosonar simulate`` and
``echosonar analyze --batch`` commands a user would type, then writes ``OUT/index.html``
(one row per study: its views, the findings stated, the simulator's ground truth, a link to the
report page) and ``OUT/demo.json``. About a minute on 2 CPU cores.

**``--train``** (:func:`run_quickstart`): every stage trained at a small budget, through the
stages' own commands (the same ``echosonar ...`` argv, all reading one ``OUT/config.yaml``
written from the budget)::

    simulate -> ingest -> train view-classifier -> train detector -> train encoder -> encode
    -> ingest val/test end to end (views from the view classifier) -> encode them
    -> train sft -> train grpo -> thresholds (val) + bundle.json -> evaluate (test, end to end)
    -> analyze one held-out test study

and leaves ``OUT`` as a model bundle (:mod:`echosonar.app.bundle`) for ``echosonar analyze``.
Each step runs in a child process by default (``isolate=True``: exact per-step peak memory from
``wait4``, a crash cannot take the run down) or in this process (``isolate=False``: no
per-step interpreter start, used by the end-to-end test). Step output goes to
``OUT/logs/<step>.log``; a finished step leaves ``OUT/logs/<step>.done`` and is skipped when the
quickstart is run again (``fresh=True`` starts over).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Budget = config overrides (nested like config.yaml) + studies + expected seconds per step on
#: a quiet 2-core machine (only used to draw the per-step progress bars).
BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {  # CI-sized: every stage runs, nothing is really trained
        "studies": 8,
        "config": {
            "sim": {"image_size": 64, "split_fractions": [0.5, 0.25, 0.25]},
            "ingest": {"view_train": {"epochs": 1, "max_clips": 16}},
            "detect": {"epochs": 1, "max_clips": 8, "frames_per_clip": 1, "eval_every": 0},
            "encode": {"pretrain": {"epochs": 1, "max_clips": 8}},
            "lm": {"hidden_size": 32, "layers": 1, "heads": 2, "vocab_size": 384},
            "sft": {"steps": 2, "batch_size": 2, "warmup": 1, "eval_every": 0, "val_studies": 1,
                    "sample_every": 0, "samples": 0},
            "grpo": {"steps": 1, "group_size": 2, "studies_per_step": 1,
                     "micro_batch_studies": 1, "max_completion_length": 16},
            "eval": {"bootstrap": 10, "max_new_tokens": 16, "max_studies": 1, "meteor": False,
                     "embedding": False},
        },
        "expect_s": {"simulate": 6, "ingest": 3, "view_classifier": 10, "detector": 20,
                     "encoder": 4, "features": 3, "ingest_e2e": 3, "features_e2e": 3,
                     "sft": 8, "grpo": 4, "bundle": 1,
                     "evaluate": 3, "analyze": 5},
    },
    "small": {  # the default: every stage at a budget that fits ~10 min on 2 quiet cores
        "studies": 32,
        "config": {
            "sim": {"image_size": 80, "workers": 2},  # rendering is per study: both cores
            "ingest": {"view_train": {"epochs": 2, "max_clips": 96}},
            "detect": {"epochs": 2, "frames_per_clip": 2, "max_clips": 96, "eval_every": 0},
            "encode": {"pretrain": {"epochs": 2, "max_clips": 96}},
            "lm": {"hidden_size": 128, "layers": 2, "heads": 4, "vocab_size": 1024},
            "sft": {"steps": 40, "batch_size": 4, "warmup": 4, "eval_every": 0,
                    "val_studies": 4, "sample_every": 0, "samples": 0},
            "grpo": {"steps": 1, "group_size": 2, "studies_per_step": 1,
                     "micro_batch_studies": 1, "max_completion_length": 1600},
            "eval": {"bootstrap": 200, "max_new_tokens": 1600, "max_studies": 3,
                     "meteor": False},
        },
        "expect_s": {"simulate": 15, "ingest": 10, "view_classifier": 40, "detector": 60,
                     "encoder": 20, "features": 20, "ingest_e2e": 8, "features_e2e": 10,
                     "sft": 160, "grpo": 75, "bundle": 5,
                     "evaluate": 120, "analyze": 30},
    },
    "medium": {  # enough training for well-formed reasoning; tens of minutes on 2 cores
        "studies": 200,
        "config": {
            "sim": {"workers": 2},
            "ingest": {"view_train": {"epochs": 8}},
            "detect": {"epochs": 8},
            "encode": {"pretrain": {"epochs": 4}},
            "sft": {"steps": 600, "batch_size": 8, "eval_every": 100, "sample_every": 0},
            "grpo": {"steps": 20, "group_size": 4, "studies_per_step": 2,
                     "max_completion_length": 1600},
            "eval": {"bootstrap": 1000, "max_new_tokens": 1600},
        },
        "expect_s": {"simulate": 80, "ingest": 40, "view_classifier": 300, "detector": 500,
                     "encoder": 200, "features": 100, "ingest_e2e": 20, "features_e2e": 40,
                     "sft": 2400, "grpo": 900, "bundle": 10,
                     "evaluate": 600, "analyze": 30},
    },
}
DEFAULT_BUDGET = "small"


class QuickstartError(RuntimeError):
    """A step failed; the message names the step and its log file."""


@dataclass
class Step:
    """One quickstart step: an ``echosonar`` argv (or an in-process function) and its log."""

    name: str
    title: str
    argv: list[str] | None = None
    func: Callable[[], None] | None = None
    expect_s: float = 30.0


@dataclass
class StepResult:
    name: str
    title: str
    status: str  # ok | cached | failed
    seconds: float = 0.0
    peak_mb: float | None = None
    cpu_s: float | None = None  # user + system CPU seconds (load-independent cost)
    log: str = ""


@dataclass
class Quickstart:
    """Where everything goes inside ``out``."""

    out: Path
    budget: str = DEFAULT_BUDGET
    seed: int = 0
    results: list[StepResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        d = self.out
        self.config = d / "config.yaml"
        self.sim, self.cache, self.features = d / "data/sim", d / "data/cache", d / "data/features"
        # val/test ingested as a user's files would be: what evaluate scores
        self.cache_e2e, self.features_e2e = d / "data/cache_e2e", d / "data/features_e2e"
        self.sft, self.grpo = d / "runs/sft", d / "runs/grpo"
        self.eval, self.example, self.logs = d / "eval", d / "example", d / "logs"


def plan(q: Quickstart) -> list[Step]:
    """The steps for ``q`` (argv exactly as a user would type them after ``echosonar``)."""
    b = BUDGETS[q.budget]
    cfg = ["--config", str(q.config)]
    return [
        Step("simulate", "Simulate studies", ["simulate", "--studies", str(b["studies"]),
                                              "--out", str(q.sim), "--seed", str(q.seed), *cfg]),
        Step("ingest", "Ingest DICOM", ["ingest", str(q.sim), "--out", str(q.cache), *cfg]),
        Step("view_classifier", "Train view classifier",
             ["train", "view-classifier", "--data", str(q.cache), "--out",
              str(q.out / "view_classifier"), *cfg]),
        Step("detector", "Train detector", ["train", "detector", "--cache", str(q.cache),
                                            "--out", str(q.out / "detector"), *cfg]),
        Step("encoder", "Train video encoder", ["train", "encoder", "--cache", str(q.cache),
                                                "--out", str(q.out / "encoder"), *cfg]),
        Step("features", "Encode features", ["encode", str(q.cache), "--out", str(q.features),
                                             "--encoder", str(q.out / "encoder"),
                                             "--detector", str(q.out / "detector"), *cfg]),
        Step("ingest_e2e", "Ingest val/test end to end",
             ["ingest", str(q.sim), "--out", str(q.cache_e2e), "--end-to-end", "--split", "val",
              "--split", "test", "--view-model", str(q.out / "view_classifier"), *cfg]),
        Step("features_e2e", "Encode end-to-end features",
             ["encode", str(q.cache_e2e), "--out", str(q.features_e2e), "--encoder",
              str(q.out / "encoder"), "--detector", str(q.out / "detector"), *cfg]),
        Step("sft", "SFT (reasoning VLM)", ["train", "sft", "--features", str(q.features),
                                            "--out", str(q.sft), *cfg]),
        Step("grpo", "GRPO", ["train", "grpo", "--from", str(q.sft / "model"), "--features",
                              str(q.features), "--out", str(q.grpo), *cfg]),
        Step("bundle", "Thresholds + bundle", func=lambda: write_quickstart_bundle(q)),
        Step("evaluate", "Evaluate (test split)",
             ["evaluate", str(q.out / "vlm"), "--features", str(q.features_e2e),
              "--train-features", str(q.features), "--out", str(q.eval), "--name",
              f"quickstart-{q.budget}", *cfg]),
        Step("analyze", "Analyze a held-out study",
             ["analyze", str(held_out_study(q)), "--model", str(q.out), "--out",
              str(q.example), *cfg], expect_s=10.0),
    ]


def find_checkpoint(run: Path, kind: str) -> Path:
    """The checkpoint folder of ``kind`` inside a run folder (itself, model/, final/, ...)."""
    for d in (run, run / "model", run / "final", run / "checkpoint"):
        cfg = d / "config.json"
        if cfg.is_file():
            try:
                if json.loads(cfg.read_text()).get("kind") == kind:
                    return d
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
    raise QuickstartError(f"no {kind!r} checkpoint in {run} (looked in ., model/, final/, "
                          "checkpoint/)")


def held_out_study(q: Quickstart) -> Path:
    """Placeholder in ``plan``'s argv for the first test-split study's clip files (the manifest
    exists only once ``simulate`` has run)."""
    return q.sim / "@first-test-study"


def held_out_files(q: Quickstart) -> list[Path]:
    """The DICOM files of the first test-split study (the study's ``study.json`` ground truth
    is left out: analyze must not see it)."""
    from echosonar.io.manifest import read_manifest

    _, studies = read_manifest(q.sim)
    test = [s for s in studies if s.split == "test"] or studies
    return [q.sim / c.path for c in test[0].clips]


def _resolve_held_out(q: Quickstart, argv: list[str]) -> list[str]:
    marker = str(held_out_study(q))
    if marker not in argv:
        return argv
    i = argv.index(marker)
    return argv[:i] + [str(p) for p in held_out_files(q)] + argv[i + 1:]


def write_quickstart_bundle(q: Quickstart) -> None:
    """Per-label thresholds maximising val balanced accuracy of the VLM's label scores (the
    baselines' rule, ``encode.metrics.choose_thresholds``), then ``OUT/bundle.json``."""
    from echosonar.app.bundle import val_thresholds, write_bundle
    from echosonar.app.stages import load_vlm
    from echosonar.io.features import iter_features

    vlm_dir = find_checkpoint(q.grpo, "echosonar_r") if q.grpo.exists() else \
        find_checkpoint(q.sft, "echosonar_r")
    link = q.out / "vlm"
    if link.is_symlink() or link.exists():
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    shutil.copytree(vlm_dir, link)  # a real folder: the bundle survives moving or zipping
    thresholds, note = val_thresholds(load_vlm(link), list(iter_features(q.features, "val")))
    from echosonar.config import load_config

    max_new = load_config(q.config).eval.max_new_tokens  # what evaluate generates with
    write_bundle(q.out, {"view_classifier": q.out / "view_classifier",
                         "detector": q.out / "detector", "encoder": q.out / "encoder",
                         "vlm": link}, thresholds, max_new,
                 budget=q.budget, seed=q.seed, vlm_source=str(vlm_dir.relative_to(q.out)),
                 thresholds_note=note, data=str(q.sim.relative_to(q.out)))
    print(f"bundle written to {q.out} ({note})")


def write_config(q: Quickstart) -> None:
    import yaml

    from echosonar.config import load_config
    from echosonar.io.atomic import atomic_write_text

    text = yaml.safe_dump(BUDGETS[q.budget]["config"], sort_keys=False)
    text = f"# echosonar quickstart, budget {q.budget}, seed {q.seed}\n{text}"
    done = list(q.logs.glob("*.done"))
    if done and (not q.config.is_file() or q.config.read_text() != text):
        raise QuickstartError(f"{q.out} holds steps run with another budget or seed; rerun with "
                              "--fresh (or choose another --out)")
    atomic_write_text(q.config, text)
    try:
        load_config(q.config)  # fail now, with the key named, if a stage renamed a field
    except ValueError as e:
        raise QuickstartError(f"budget {q.budget!r} does not fit the current config: {e}") from e


def run_step(step: Step, q: Quickstart, isolate: bool) -> StepResult:
    """Run one step, logging to ``OUT/logs/<name>.log``; raises :class:`QuickstartError`."""
    log = q.logs / f"{step.name}.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        if step.func is not None or not isolate:
            peak, cpu, rc = _in_process(step, q, f)
        else:
            peak, cpu, rc = _child(_resolve_held_out(q, step.argv or []), f)
    secs = time.perf_counter() - t0
    if rc != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-15:])
        raise QuickstartError(f"step '{step.name}' failed (exit {rc}); log: {log}\n{tail}")
    (q.logs / f"{step.name}.done").write_text(json.dumps({"seconds": secs, "peak_mb": peak,
                                                           "cpu_s": cpu}))
    return StepResult(step.name, step.title, "ok", secs, peak, cpu, str(log))


def _child(argv: list[str], f: Any) -> tuple[float | None, float, int]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    f.write(f"$ echosonar {' '.join(argv)}\n")
    f.flush()
    proc = subprocess.Popen([sys.executable, "-m", "echosonar.cli", *argv], stdout=f,
                            stderr=subprocess.STDOUT, env=env)
    try:
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS and CPU time
    except BaseException:  # Ctrl-C / SIGTERM of the quickstart: do not leave the step running
        proc.terminate()
        proc.wait(timeout=30)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime, proc.returncode


def _cpu_now() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _in_process(step: Step, q: Quickstart, f: Any) -> tuple[float | None, float, int]:
    from echosonar.app.pipeline import PeakMemory
    from echosonar.cli import main

    cpu0 = _cpu_now()
    with PeakMemory(), contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            if step.func is not None:
                step.func()
                rc = 0
            else:
                argv = _resolve_held_out(q, step.argv or [])
                print(f"$ echosonar {' '.join(argv)}", flush=True)
                rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except Exception as e:  # noqa: BLE001 - reported with the step name
            import traceback

            traceback.print_exc()
            print(f"{type(e).__name__}: {e}")
            rc = 1
    return PeakMemory.peak_mb(), _cpu_now() - cpu0, rc


def run_quickstart(out: str | Path, budget: str = DEFAULT_BUDGET, seed: int = 0,
                   fresh: bool = False, isolate: bool = True,
                   on_step: Callable[[str, Step, StepResult | None], None] | None = None
                   ) -> Quickstart:
    """Run every step (skipping ones already done unless ``fresh``); returns the record.

    ``on_step(event, step, result)`` is called with event "start", "done" or "cached".
    """
    if budget not in BUDGETS:
        raise QuickstartError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    q = Quickstart(Path(out), budget, seed)
    if fresh and q.out.exists():
        shutil.rmtree(q.out)
    q.logs.mkdir(parents=True, exist_ok=True)
    write_config(q)
    notify = on_step or (lambda event, step, res: None)
    t_all = time.perf_counter()
    for step in plan(q):
        done = q.logs / f"{step.name}.done"
        if done.is_file():
            info = json.loads(done.read_text())
            res = StepResult(step.name, step.title, "cached", info.get("seconds", 0.0),
                             info.get("peak_mb"), info.get("cpu_s"),
                             str(q.logs / f"{step.name}.log"))
            q.results.append(res)
            notify("cached", step, res)
            continue
        notify("start", step, None)
        res = run_step(step, q, isolate)
        q.results.append(res)
        notify("done", step, res)
    write_summary(q, time.perf_counter() - t_all)
    return q


def write_summary(q: Quickstart, wall_s: float) -> dict[str, Any]:
    """``OUT/quickstart.json``: steps (seconds, peak MiB), metrics and where the report is."""
    from echosonar.io.atomic import atomic_write_json

    metrics = {}
    mfile = q.eval / "metrics_test.json"
    if mfile.is_file():
        m = json.loads(mfile.read_text())
        c = m.get("classification", {})
        metrics = {k: c.get(k) for k in ("macro_balanced_accuracy",
                                         "macro_balanced_accuracy_two_class", "macro_f1",
                                         "macro_auroc")}
        metrics.update(n_studies=m.get("n_studies"), well_formed_rate=m.get("well_formed_rate"))
    summary = {"budget": q.budget, "seed": q.seed, "wall_s": round(wall_s, 1),
               "steps": [r.__dict__ for r in q.results], "metrics_test": metrics,
               "report": str(q.example / "report.html"), "bundle": str(q.out)}
    atomic_write_json(q.out / "quickstart.json", summary)
    return summary


# ---------------------------------------------------------------------------------------------
# The default quickstart: the shipped model on example studies
# ---------------------------------------------------------------------------------------------

#: simulation seed of the example studies: the shipped model was trained on seed 0's studies
DEMO_SEED = 2026
DEMO_STUDIES = 2
REAL_CINE = "examples_ybr_color.dcm"  # pydicom's SonoSite apical 4-chamber colour cine


def real_cine() -> Path | None:
    """pydicom's real A4C cine when the installed pydicom ships it offline, else None."""
    try:
        from pydicom.data import get_testdata_file

        path = get_testdata_file(REAL_CINE, download=False)
    except Exception:  # noqa: BLE001 - any failure means "not available offline"
        return None
    return Path(path) if path and Path(path).is_file() else None


@dataclass
class DemoStudy:
    name: str  # "simulated study 1", "real cine (SonoSite A4C)"
    source: str  # "simulated" | "real"
    folder: str = ""  # analyze --batch output folder, relative to OUT/analysis
    status: str = ""
    views: list[str] = field(default_factory=list)
    answer: list[str] = field(default_factory=list)
    truth: list[str] | None = None  # the simulator's labels (simulated studies)
    truth_views: list[str] | None = None
    warnings: list[str] = field(default_factory=list)


def run_demo(out: str | Path, model: str | Path | None = None, studies: int = DEMO_STUDIES,
             seed: int = DEMO_SEED, real: bool = True,
             log: Callable[[str], None] = print) -> list[DemoStudy]:
    """Simulate ``studies`` studies (``seed``), analyse them and the real cine with ``model``
    (default: the shipped one) in one ``analyze --batch``, write ``OUT/index.html`` and
    ``OUT/demo.json``; returns one :class:`DemoStudy` per input. Raises
    :class:`QuickstartError` naming the failed command."""
    from echosonar.app.score import write_study_inputs
    from echosonar.cli import main
    from echosonar.io.manifest import read_manifest

    out = Path(out)
    sim, inputs, analysis = out / "examples" / "sim", out / "examples" / "studies", \
        out / "analysis"
    for d in (sim, inputs, analysis):
        shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    argv = ["simulate", "--studies", str(studies), "--seed", str(seed), "--out", str(sim),
            "--workers", str(min(2, studies))]  # one study per core (same files as 1 worker)
    log(f"$ echosonar {' '.join(argv)}")
    if main(argv) != 0:
        raise QuickstartError(f"`echosonar {' '.join(argv)}` failed")
    folders = write_study_inputs(sim, inputs)  # clips only: the ground truth stays behind
    _, records = read_manifest(sim)
    by_key = {r.key: r for r in records}
    demo = [DemoStudy(f"simulated study {i + 1}", "simulated") for i in range(len(folders))]
    paths = [str(f) for f in folders]
    cine = real_cine() if real else None
    if cine is not None:
        dest = out / "examples" / "real_a4c"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        shutil.copyfile(cine, dest / cine.name)
        paths.append(str(dest))
        demo.append(DemoStudy("real cine (SonoSite apical 4-chamber, pydicom test file)",
                              "real"))
    elif real:
        log(f"pydicom's {REAL_CINE} is not installed: analysing the simulated studies only")
    argv = ["analyze", "--batch", *paths, "--out", str(analysis)]
    if model is not None:
        argv += ["--model", str(model)]
    log(f"$ echosonar {' '.join(argv)}")
    rc = main(argv)
    summary_file = analysis / "summary.json"
    if not summary_file.is_file():
        raise QuickstartError(f"`echosonar analyze` failed (exit {rc}) before writing "
                              f"{summary_file}")
    rows = json.loads(summary_file.read_text())["rows"]
    for row in rows:
        d = demo[int(row["input"]) - 1]
        d.status, d.folder = row["status"], row.get("folder", "")
        d.views, d.answer = list(row.get("views") or []), list(row.get("answer") or [])
        result = analysis / d.folder / "result.json"
        if result.is_file():
            d.warnings = list(json.loads(result.read_text()).get("warnings") or [])
    for d, f in zip(demo, folders, strict=False):
        rec = by_key[f.name]
        d.truth = [k for k, v in rec.labels.items() if v]
        d.truth_views = [c.view for c in rec.clips]
    write_index(out, demo, seed, time.perf_counter() - t0)
    return demo


def write_index(out: Path, demo: list[DemoStudy], seed: int, seconds: float) -> Path:
    """``OUT/index.html`` (a table linking every report page) + ``OUT/demo.json``."""
    import html

    from echosonar.io.atomic import atomic_write_json, atomic_write_text
    from echosonar.taxonomy import FINDING_BY_KEY

    def names(keys: list[str] | None) -> str:
        if keys is None:
            return "—"
        return html.escape(", ".join(FINDING_BY_KEY[k].name if k in FINDING_BY_KEY else k
                                     for k in keys) or "none")

    rows = []
    for d in demo:
        link = (f'<a href="analysis/{html.escape(d.folder)}/report.html">report</a>'
                if d.status == "ok" else html.escape(d.status or "not analysed"))
        views = html.escape(", ".join(d.views))
        if d.truth_views is not None:
            right = sorted(d.views) == sorted(d.truth_views)
            views += f" <small>({'all right' if right else 'simulator: ' + html.escape(', '.join(d.truth_views))})</small>"
        warn = "<br>".join(html.escape(w) for w in d.warnings) or "—"
        stated = names(d.answer)
        if d.truth is not None:  # mark each stated finding against the simulator's truth
            truth = set(d.truth) or {"healthy"}
            said = d.answer or ["healthy"]
            stated = ", ".join(
                f"{names([k])} {'&#10003;' if k in truth else '<b>(false)</b>'}" for k in said)
            missed = [k for k in d.truth if k not in said]
            if missed:
                stated += f"<br><small>missed: {names(missed)}</small>"
        rows.append(f"<tr><td>{html.escape(d.name)}</td><td>{link}</td><td>{views}</td>"
                    f"<td>{stated}</td><td>{names(d.truth)}</td><td>{warn}</td></tr>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EchoSonar quickstart</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:75rem}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.4rem .6rem;
vertical-align:top;text-align:left}}.ruo{{background:#fff3cd;padding:.5rem 1rem}}</style>
</head><body>
<h1>EchoSonar quickstart</h1>
<p class="ruo"><b>Research use only — not for diagnosis or patient care.</b> The shipped model
was trained on simulated echocardiograms only (see <code>models/echosonar-r/MODEL_CARD.md</code>).
</p>
<p>{sum(d.source == "simulated" for d in demo)} simulated studies written on the spot (seed
{seed}; the model was trained on seed 0's studies) and
{"the real SonoSite apical 4-chamber cine from pydicom's test files" if any(d.source == "real"
for d in demo) else "no real cine (pydicom's test file is not installed)"}, analysed by
<code>echosonar analyze --batch</code> with the shipped model in {seconds:.0f} s. Findings are
the label head's calls at the thresholds fitted on validation studies (guided decoding): the
findings table, the answer and every view's findings list state exactly these; the free text
around them (evidence, report sections) is the language model's own and can contradict them
(known failure mode, see the model card). The thresholds favour sensitivity, so healthy studies
often get false findings.</p>
<table><tr><th>study</th><th>page</th><th>views (classifier)</th><th>findings stated</th>
<th>simulator ground truth</th><th>warnings</th></tr>
{chr(10).join(rows)}
</table>
</body></html>
"""
    atomic_write_text(out / "index.html", page)
    atomic_write_json(out / "demo.json", {"seed": seed, "seconds": round(seconds, 1),
                                          "studies": [d.__dict__ for d in demo]})
    return out / "index.html"
