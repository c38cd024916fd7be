"""``echosonar train baselines --cache FEATURES_OR_CACHE --out DIR``: the classifier baselines.

Trains and evaluates prior, single-view (A4C), late-fusion and view-aware attention-fusion
classifiers on frozen clip tokens, and attention fusion that also reads the detector's
structure tokens and measurements (``attention_fusion_evidence``, the fair comparison for the
VLM); thresholds per label from ``val``; metrics on ``test``.
``--cache`` is a feature cache (``echosonar encode`` output); an ingest cache also works with
``--encoder DIR`` (it is encoded first into ``DIR/features``).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--cache", required=True,
                        help="feature cache, or an ingest cache together with --encoder")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--encoder", default=None, help="encoder for an ingest --cache")
    parser.add_argument("--methods", default=None,
                        help="comma list (default encode.baselines.methods): "
                             "prior,single_view,late_fusion,attention_fusion,"
                             "attention_fusion_evidence")
    add_config_args(parser)


def _is_feature_cache(path: str) -> bool:
    import json
    from pathlib import Path

    p = Path(path) / "index.json"
    if not p.is_file():
        return False
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError:
        return False
    return "encoder" in data and data.get("format") != "echosonar-clip-cache"


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from echosonar.config import config_from_args, save_yaml
    from echosonar.encode.baseline_models import study_set
    from echosonar.encode.baselines import METHODS, run_baselines
    from echosonar.io.atomic import atomic_write_json
    from echosonar.io.features import FeatureCacheError, iter_features
    from echosonar.utils.repro import run_info, seed_everything

    cfg = config_from_args(args)
    bcfg = cfg.encode.baselines
    if args.methods:
        methods = [m.strip() for m in args.methods.split(",") if m.strip()]
        bad = [m for m in methods if m not in METHODS]
        if bad:
            print(f"echosonar train baselines: unknown method(s) {bad}; known: {METHODS}",
                  file=sys.stderr)
            return 2
        bcfg = dataclasses.replace(bcfg, methods=methods)
    out = Path(args.out)
    features = args.cache
    if not _is_feature_cache(args.cache):
        if not args.encoder:
            print(f"echosonar train baselines: {args.cache} is not a feature cache; pass "
                  "--encoder DIR to encode an ingest cache first", file=sys.stderr)
            return 2
        from echosonar.encode.cli import run as encode_run

        features = str(out / "features")
        ns = argparse.Namespace(cache=args.cache, out=features, encoder=args.encoder,
                                detector=None, split=None, config=args.config,
                                overrides=args.overrides)
        if encode_run(ns) != 0:
            return 2
    seed_everything(bcfg.seed)
    try:
        ss = study_set(iter_features(features))
    except (FeatureCacheError, ValueError) as e:
        print(f"echosonar train baselines: {features}: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    atomic_write_json(out / "run_info.json", run_info(bcfg.seed, command="train baselines",
                                                      features=str(features)))
    try:
        run_baselines(ss, out, bcfg, log=lambda s: print(s, file=sys.stderr))
    except ValueError as e:
        print(f"echosonar train baselines: {e}", file=sys.stderr)
        return 2
    print((out / "results.md").read_text())
    return 0
