"""``echosonar benchmark``: train and evaluate every results-table row, regenerate RESULTS.md.

    echosonar benchmark --budget tiny|small|full [--out runs/bench] [--results docs/RESULTS.md]
                        [--seed 0] [--set section.key=value ...] [--dry-run] [--only STEP,...]

Steps and budgets: :mod:`echosonar.evaluate.benchmark`. Re-running the same command resumes
(finished steps are skipped); ``--redo STEP`` runs a step again, and with it every step that
depends on it.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", choices=["tiny", "small", "full"], default="tiny",
                        help="tiny: pipeline smoke test (minutes, CPU); small: the CPU table "
                             "(hours on 2 cores); full: GPU-sized")
    parser.add_argument("--out", default="runs/benchmark", help="benchmark folder")
    parser.add_argument("--results", default="docs/RESULTS.md",
                        help="Markdown file to (re)write with the table")
    parser.add_argument("--seed", type=int, default=0, help="simulation seed")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE",
                        help="extra config override passed to every stage (repeatable)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands without running anything")
    parser.add_argument("--only", default="",
                        help="comma-separated step names to run (others must be done already)")
    parser.add_argument("--redo", default="", help="comma-separated step names to run again")


def run(args: argparse.Namespace) -> int:
    import sys
    import time
    from pathlib import Path

    from echosonar.config import ConfigError
    from echosonar.evaluate.benchmark import (
        BUDGETS,
        execute,
        forget_for_redo,
        plan,
        print_plan,
        write_config,
    )
    from echosonar.evaluate.results import render
    from echosonar.io.atomic import atomic_write_json, atomic_write_text

    out = Path(args.out)
    try:
        steps = plan(out, args.budget, args.seed)
        if not args.dry_run:
            write_config(out, args.budget, args.overrides)
    except (ValueError, ConfigError) as e:
        print(f"echosonar benchmark: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        sets = [*BUDGETS[args.budget]["set"], *args.overrides]
        print(f"# {out}/config.yaml = defaults + " + " ".join(f"--set {s}" for s in sets))
        print_plan(steps)
        return 0
    try:
        forget_for_redo(steps, out, args.redo)
    except ValueError as e:
        print(f"echosonar benchmark: {e}", file=sys.stderr)
        return 2
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    status = execute(steps, out, log=lambda s: print(s, flush=True),
                     only=[s for s in args.only.split(",") if s])
    atomic_write_json(out / "benchmark.json", {"budget": args.budget, "seed": args.seed,
                                               "overrides": args.overrides, "steps": status})
    b = BUDGETS[args.budget]
    intro = (f"`echosonar benchmark --budget {args.budget}` (started {started}): "
             f"{b['studies']} simulated studies of the default scanner preset and "
             f"{b['shifted_studies']} of the `shifted` preset; config overrides "
             + ", ".join(f"`{x}`" for x in [*b["set"], *args.overrides]) + ". Step times and "
             f"commands: `{out}/benchmark.json`."
             + (" **Tiny budget: a smoke test; differences between rows are noise.**"
                if args.budget == "tiny" else ""))
    try:
        atomic_write_text(Path(args.results), render(out / "eval", intro=intro,
                                                     min_seeds=int(b["seeds"])))
    except FileNotFoundError as e:
        print(f"echosonar benchmark: no results to write ({e})", file=sys.stderr)
    failed = [n for n, r in status.items() if r["status"] == "failed"]
    print(f"wrote {args.results}" + (f"; failed steps: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0
