"""``echosonar evaluate``: score a model (or a predictions file) on one split of a feature cache.

    echosonar evaluate RUN_OR_CHECKPOINT --features FEATURES [--split test] [--preset shifted]

RUN_OR_CHECKPOINT is one of:

* a predictions file (``echosonar.predictions/v1`` JSON, e.g. a baseline's
  ``predictions_test.json``);
* an EchoSonar-R checkpoint folder (``config.json`` of kind ``echosonar_r``);
* a run folder holding ``predictions_<split>.json`` or an EchoSonar-R checkpoint in ``model/``,
  ``final/`` or ``checkpoint/``.

Writes ``metrics_<split>[_<preset>].json`` and ``.md`` (and, for a checkpoint, the predictions
file it scored) into ``--out`` (default: ``<run>/eval``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("source", metavar="RUN_OR_CHECKPOINT",
                        help="predictions JSON, EchoSonar-R checkpoint folder or run folder")
    parser.add_argument("--features", required=True, metavar="FEATURES",
                        help="feature cache folder with the split's ground truth")
    parser.add_argument("--split", default=None,
                        help="split to score (default: eval.split from the config, 'test')")
    parser.add_argument("--preset", default=None,
                        help="name of the scanner preset the features came from (e.g. "
                             "'shifted'); checked against the cache when it records one and "
                             "used in the output file names")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="output folder (default: RUN/eval or the predictions' folder)")
    parser.add_argument("--name", default=None, help="row name used in the Markdown title")
    parser.add_argument("--train-features", default=None, metavar="FEATURES",
                        help="cache whose train split picks the rarest labels (default: "
                             "--features; pass the in-distribution cache for a shifted set)")
    add_config_args(parser)


def command_line(args: argparse.Namespace) -> str:
    """The ``echosonar evaluate`` command that reproduces this run (kept in the metrics)."""
    import shlex

    argv = ["echosonar", "evaluate", args.source, "--features", args.features]
    for flag in ("split", "preset", "out", "name", "train_features", "config"):
        if getattr(args, flag, None):
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    for item in getattr(args, "overrides", []) or []:
        argv += ["--set", item]
    return shlex.join(argv)


def run(args: argparse.Namespace) -> int:
    import sys

    from echosonar.config import ConfigError, config_from_args
    from echosonar.evaluate.predictions import PredictionsError
    from echosonar.evaluate.run import evaluate_source
    from echosonar.io.checkpoint import CheckpointError
    from echosonar.io.features import FeatureCacheError

    try:
        cfg = config_from_args(args).eval
        if args.split:
            cfg.split = args.split
        res = evaluate_source(Path(args.source), Path(args.features), cfg, preset=args.preset,
                              out=Path(args.out) if args.out else None, name=args.name,
                              train_features=Path(args.train_features)
                              if args.train_features else None,
                              command=command_line(args))
    except (ConfigError, PredictionsError, CheckpointError, FeatureCacheError, ValueError,
            FileNotFoundError) as e:
        print(f"echosonar evaluate: {e}", file=sys.stderr)
        return 2
    m = res["metrics"]
    c = m["classification"]
    lo, hi = c.get("macro_balanced_accuracy_ci") or (None, None)
    ci = f" [{100 * lo:.1f}, {100 * hi:.1f}]" if lo is not None and hi is not None else ""
    def pct(v: float | None) -> str:  # None: every label has one class in the split
        return "n/a" if v is None else f"{100 * v:.1f}%"

    msg = (f"{res['name']}: {m['n_studies']} studies, macro BAcc "
           f"{pct(c['macro_balanced_accuracy'])}{ci}, macro F1 {pct(c['macro_f1'])}")
    if "green_rule" in m:
        msg += f", GREEN-rule {m['green_rule']['green_rule']:.3f}"
    if "well_formed_rate" in m and m["well_formed_rate"] is not None:
        msg += f", well-formed {100 * m['well_formed_rate']:.1f}%"
    head = (m.get("label_head_val_thresholds") or {}).get("macro_bacc")
    if head is not None:
        msg += f"; label head at val thresholds {100 * head:.1f}%"
    print(msg)
    print(f"wrote {res['json']} and {res['markdown']}")
    return 0
