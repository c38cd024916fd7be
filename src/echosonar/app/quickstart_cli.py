"""``echosonar quickstart``: the shipped model on example studies, or (``--train``) every stage.

    echosonar quickstart                                 # shipped model, ~1 min: runs/quickstart
    echosonar quickstart --studies 4 --seed 99 --no-real  # other simulated examples
    echosonar quickstart --train --out runs/qs_train     # train everything, budget "small"
    echosonar quickstart --train --out runs/qs_tiny --budget tiny   # a smoke run
    echosonar quickstart --train --out runs/qs --budget medium --fresh

Default: simulates a couple of studies (seed 2026; the shipped model was trained on seed 0's),
analyses them and pydicom's real apical 4-chamber cine with the shipped model
(``models/echosonar-r``) and writes ``OUT/index.html`` linking each study's report page (opened
in a browser when one is available; ``--no-open`` never opens one). With ``--train``: a progress
bar per step, a summary table, and ``OUT`` is a model bundle for ``echosonar analyze --model
OUT``; rerunning skips finished steps.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.app.quickstart import BUDGETS, DEFAULT_BUDGET, DEMO_SEED, DEMO_STUDIES

    parser.add_argument("--out", default="runs/quickstart",
                        help="output folder (default runs/quickstart; with --train: the bundle)")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"simulation seed (default {DEMO_SEED}; with --train: simulation "
                             "and training seed, default 0)")
    parser.add_argument("--model", metavar="BUNDLE", default=None,
                        help="bundle to analyse the examples with (default: the shipped model)")
    parser.add_argument("--studies", type=int, default=DEMO_STUDIES,
                        help=f"simulated example studies (default {DEMO_STUDIES})")
    parser.add_argument("--no-real", action="store_true",
                        help="skip pydicom's real apical 4-chamber cine")
    parser.add_argument("--no-open", action="store_true",
                        help="do not open the page in a browser")
    parser.add_argument("--train", action="store_true",
                        help="train every stage from scratch instead (simulate, view "
                             "classifier, detector, encoder, SFT, GRPO, thresholds, evaluate, "
                             "analyze); OUT becomes a model bundle")
    parser.add_argument("--budget", default=DEFAULT_BUDGET, choices=list(BUDGETS),
                        help=f"--train budget (default {DEFAULT_BUDGET}: about 10 minutes on "
                             "2 CPU cores)")
    parser.add_argument("--fresh", action="store_true",
                        help="--train: delete OUT first; redo every step")
    parser.add_argument("--in-process", action="store_true",
                        help="--train: run steps in this process (faster start-up, no per-step "
                             "memory isolation)")


class _Display:
    """A rich progress bar per step; plain lines when stderr is not a terminal."""

    def __init__(self, steps: list[Any], expect: dict[str, float]) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.expect = expect
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description:<28}"),
                                 BarColumn(bar_width=32), TimeElapsedColumn(),
                                 TextColumn("{task.fields[status]}"), console=self.console,
                                 disable=not self.live)
        self.tasks = {s.name: self.progress.add_task(s.title, total=expect.get(s.name, 30.0),
                                                     start=False, status="")
                      for s in steps}
        self.running: tuple[str, float] | None = None
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)

    def __enter__(self) -> _Display:
        self.progress.__enter__()
        self._ticker.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._ticker.join(timeout=1)
        self.progress.__exit__(*exc)

    def _tick(self) -> None:
        # time-based estimate: fills towards 95% of the expected duration, 100% when done
        while not self._stop.wait(0.25):
            if self.running:
                name, t0 = self.running
                total = self.expect.get(name, 30.0)
                self.progress.update(self.tasks[name],
                                     completed=min(0.95 * total, time.monotonic() - t0))

    def __call__(self, event: str, step: Any, res: Any) -> None:
        tid = self.tasks[step.name]
        if event == "start":
            self.progress.start_task(tid)
            self.progress.update(tid, status="running")
            self.running = (step.name, time.monotonic())
            if not self.live:
                self.console.print(f"[{time.strftime('%H:%M:%S')}] {step.title} ...")
            return
        self.running = None
        mem = f" · {res.peak_mb:.0f} MiB" if res.peak_mb else ""
        status = "cached" if event == "cached" else f"done in {res.seconds:.1f} s{mem}"
        self.progress.update(tid, completed=self.expect.get(step.name, 30.0),
                             status=f"[green]{status}")
        if not self.live:
            self.console.print(f"[{time.strftime('%H:%M:%S')}] {step.title}: {status}")


def _table(q: Any, wall: float) -> Any:
    from rich.table import Table

    t = Table(title=f"EchoSonar quickstart — budget {q.budget}", title_justify="left")
    t.add_column("step")
    t.add_column("status")
    t.add_column("time", justify="right")
    t.add_column("CPU time", justify="right")
    t.add_column("peak memory", justify="right")
    for r in q.results:
        t.add_row(r.title, r.status, f"{r.seconds:.1f} s",
                  "—" if r.cpu_s is None else f"{r.cpu_s:.1f} s",
                  "—" if r.peak_mb is None else f"{r.peak_mb:.0f} MiB")
    t.add_section()
    cpu = sum(r.cpu_s or 0.0 for r in q.results)
    peak = max((r.peak_mb or 0.0 for r in q.results), default=0.0)
    steps = sum(r.seconds for r in q.results)
    t.add_row("total (all steps)", f"this run {wall:.0f} s", f"{steps:.1f} s", f"{cpu:.1f} s",
              f"{peak:.0f} MiB")
    return t


def _can_open_browser() -> bool:
    import os

    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def run_demo_cli(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from echosonar.app.quickstart import DEMO_SEED, QuickstartError, run_demo
    from echosonar.taxonomy import FINDING_BY_KEY

    con = Console(stderr=True)
    if args.studies < 1 or args.studies > 50:
        con.print("echosonar quickstart: --studies must be between 1 and 50")
        return 2
    seed = DEMO_SEED if args.seed is None else args.seed
    t0 = time.perf_counter()
    try:
        demo = run_demo(args.out, args.model, args.studies, seed, real=not args.no_real,
                        log=lambda m: con.print(m, highlight=False))
    except QuickstartError as e:
        con.print(f"[red]echosonar quickstart: {e}")
        return 1
    wall = time.perf_counter() - t0
    t = Table(title=f"EchoSonar quickstart — shipped model, {wall:.0f} s",
              title_justify="left")
    for col in ("study", "views", "findings stated", "simulator ground truth"):
        t.add_column(col)
    def names(keys: list[str]) -> str:
        return ", ".join(FINDING_BY_KEY[k].name if k in FINDING_BY_KEY else k
                         for k in keys) or "none"

    for d in demo:
        t.add_row(d.name, ", ".join(d.views) or d.status, names(d.answer),
                  "—" if d.truth is None else names(d.truth))
    con.print(t)
    index = (Path(args.out) / "index.html").resolve()
    print(f"Report page: {index}")
    con.print("Analyse your own study with: echosonar analyze STUDY_DIR --out RESULT_DIR\n"
              "Train everything from scratch with: echosonar quickstart --train\n"
              "Research use only — not for diagnosis.")
    if not args.no_open and _can_open_browser():
        import webbrowser

        webbrowser.open(index.as_uri())
    return 0 if all(d.status == "ok" for d in demo) else 1


def run(args: argparse.Namespace) -> int:
    import json

    if not args.train:
        return run_demo_cli(args)
    args.seed = 0 if args.seed is None else args.seed

    from echosonar.app.quickstart import (
        BUDGETS,
        Quickstart,
        QuickstartError,
        plan,
        run_quickstart,
    )

    # SIGTERM -> SystemExit, so the running step's child process is stopped too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    q0 = Quickstart(Path(args.out), args.budget, args.seed)
    steps = plan(q0)
    expect = BUDGETS[args.budget].get("expect_s", {})
    t0 = time.perf_counter()
    display = _Display(steps, expect)
    try:
        with display:
            q = run_quickstart(args.out, args.budget, args.seed, fresh=args.fresh,
                               isolate=not args.in_process, on_step=display)
    except QuickstartError as e:
        display.console.print(f"[red]echosonar quickstart: {e}")
        return 1
    wall = time.perf_counter() - t0
    con = display.console
    con.print(_table(q, wall))
    summary = json.loads((q.out / "quickstart.json").read_text())
    m = summary.get("metrics_test") or {}
    if m.get("macro_balanced_accuracy") is not None:
        def pct(v: Any) -> str:
            return "n/a" if v is None else f"{100 * v:.1f}%"

        con.print(f"test split ({m.get('n_studies')} studies): macro BAcc "
                  f"{pct(m['macro_balanced_accuracy'])} (two-class labels only "
                  f"{pct(m.get('macro_balanced_accuracy_two_class'))}), macro F1 "
                  f"{pct(m.get('macro_f1'))}, well-formed output "
                  f"{pct(m.get('well_formed_rate'))} — a small simulated set and a small budget; "
                  f"see {q.eval / 'metrics_test.md'}")
    report = (q.example / "report.html").resolve()
    print(f"Report page: {report}")
    con.print(f"Model bundle: {q.out}  —  analyze your own study with:\n"
              f"  echosonar analyze STUDY_DIR --model {q.out} --out RESULT_DIR\n"
              "Research use only — not for diagnosis.")
    return 0
