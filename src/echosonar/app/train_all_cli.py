"""``echosonar train all --data DATA --out RUN``: every training stage, a bundle and its test score.

    echosonar dataset build studies/ --labels labels.csv --out data/mine --view-model VIEW
    echosonar train all --data data/mine --out runs/mine --detector BUNDLE/detector
    echosonar train all --data data/sim --out runs/sim --budget tiny      # a simulated set
    echosonar train all ... --dry-run        # print the plan
    echosonar train all ... --redo sft       # run sft again, and every step after it

DATA is a dataset (``echosonar dataset build``) or a simulated set (folder with manifest.json).
RUN holds ``config.yaml`` (the one resolved config every step reads), ``steps/`` (a record per
finished step: rerunning resumes after the last one; an unfinished step restarts from an empty
output folder), ``logs/``, each stage's run folder,
``bundle/`` (for ``echosonar analyze --model RUN/bundle``), ``eval/`` (test-split metrics with the
negative controls) and ``train_all.json`` (step times and the headline numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args
    from echosonar.evaluate.benchmark import BUDGETS

    parser.add_argument("--data", required=True, metavar="DATA",
                        help="dataset folder (dataset build) or simulated set (manifest.json)")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder (resumable)")
    parser.add_argument("--detector", default=None, metavar="DIR",
                        help="use this trained detector instead of training one (required for "
                             "a dataset without ground-truth boxes)")
    parser.add_argument("--view-model", default=None, metavar="DIR",
                        help="use this view classifier (bundle, and simulated sets' end-to-end "
                             "ingest) instead of training one")
    parser.add_argument("--grpo", action="store_true", help="also run GRPO after SFT")
    parser.add_argument("--budget", default=None, choices=list(BUDGETS),
                        help="start from the benchmark's settings of this budget (then "
                             "--config, then --set)")
    parser.add_argument("--redo", default="", help="comma-separated steps to run again (with "
                        "every step that needs them)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--in-process", action="store_true",
                        help="run the steps in this process (no per-step interpreter start)")
    add_config_args(parser)


def run_in_process(step, log_path: Path) -> None:  # noqa: ANN001 - a benchmark Step
    """Run one step's command in this process, output to its log; raises on failure (the
    benchmark's runner contract)."""
    from echosonar.cli import main

    log_path.parent.mkdir(parents=True, exist_ok=True)
    argv = list(step.argv)
    with open(log_path, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            if argv[0] == "echosonar":
                rc = main(argv[1:])
            elif argv[:2] == ["python", "-m"]:
                rc = importlib.import_module(argv[2]).main(argv[3:])
            else:
                raise ValueError(f"cannot run {argv[0]!r} in process")
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
    if rc:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError(f"exit code {rc}: " + " | ".join(tail))


def _merge(base: dict, top: dict) -> dict:
    """``top`` over ``base``, section by section (nested mappings merged, values replaced)."""
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def resolve_config(out: Path, budget: str | None, config: str | None,
                   overrides: list[str]) -> Path:
    """Write ``RUN/config.yaml``: defaults, then the budget's settings, then ``--config``, then
    ``--set`` (each later one wins)."""
    import yaml

    from echosonar.app.train_all import CONFIG
    from echosonar.config import ConfigError, load_config, save_yaml
    from echosonar.config.base import _parse_scalar
    from echosonar.evaluate.benchmark import BUDGETS

    tree: dict = {}
    for item in (BUDGETS[budget]["set"] if budget else []):
        path, raw = item.split("=", 1)
        *parents, leaf = path.strip().split(".")
        node = tree
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = _parse_scalar(raw)
    if config:
        try:
            user = yaml.safe_load(Path(config).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"--config {config}: {e}") from e
        if not isinstance(user, dict):
            raise ConfigError(f"--config {config}: not a mapping of config sections")
        tree = _merge(tree, user)
    out.mkdir(parents=True, exist_ok=True)
    layered = out / ".config.layers.yaml"
    layered.write_text(yaml.safe_dump(tree, sort_keys=True))
    try:
        cfg = load_config(layered, overrides)
    finally:
        layered.unlink()
    path = out / CONFIG
    tmp = out / ".config.new.yaml"
    save_yaml(cfg, tmp)
    if path.is_file() and path.read_text() == tmp.read_text():
        tmp.unlink()  # unchanged: the digest of finished steps stays valid
    else:
        tmp.replace(path)
    return path


def run(args: argparse.Namespace) -> int:
    import time

    from echosonar.app.train_all import (
        SUMMARY,
        TrainAll,
        TrainAllError,
        clearing,
        inspect,
        metrics_of,
    )
    from echosonar.app.train_all import plan as make_plan
    from echosonar.config import ConfigError
    from echosonar.evaluate.benchmark import (
        _run_subprocess,
        execute,
        forget_for_redo,
        print_plan,
    )
    from echosonar.io.atomic import atomic_write_json

    out = Path(args.out)
    t = TrainAll(Path(args.data), out, Path(args.detector) if args.detector else None,
                 Path(args.view_model) if args.view_model else None, args.grpo)
    try:
        for name, p in (("--detector", t.detector), ("--view-model", t.view_model)):
            if p is not None and not (p / "config.json").is_file():
                raise TrainAllError(f"{name} {p}: not a checkpoint folder (no config.json)")
        steps = make_plan(inspect(t))
        if not args.dry_run:
            resolve_config(out, args.budget, args.config, args.overrides)
    except (TrainAllError, ConfigError, ValueError, OSError) as e:
        print(f"echosonar train all: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        print_plan(steps)
        return 0
    try:
        forget_for_redo(steps, out, args.redo)
    except ValueError as e:
        print(f"echosonar train all: {e}", file=sys.stderr)
        return 2
    t0 = time.time()
    status = execute(steps, out, log=lambda s: print(s, flush=True),
                     runner=clearing(run_in_process if args.in_process else _run_subprocess,
                                     out))
    metrics = metrics_of(out)
    atomic_write_json(out / SUMMARY, {
        "data_kind": t.kind, "data": t.info, "grpo": t.grpo,
        "detector": "given" if t.detector else "trained",
        "view_classifier": "given" if t.view_model else "trained" if any(
            st.name == "view" for st in steps) else "none",
        "wall_s": round(time.time() - t0, 1), "steps": status, "metrics_test": metrics})
    failed = [n for n, r in status.items() if r.get("status") != "ok"]
    for row, m in metrics.items():
        bacc = m.get("macro_balanced_accuracy")
        print(f"test {row}: macro BAcc {bacc if bacc is None else f'{100 * bacc:.1f} %'} on "
              f"{m.get('n_studies')} studies")
    if failed:
        print(f"echosonar train all: not done: {', '.join(failed)} (see {out}/logs/; rerun to "
              "resume)", file=sys.stderr)
        return 1
    print(f"bundle: {out / 'bundle'}  (echosonar analyze STUDY --model {out / 'bundle'})")
    return 0
