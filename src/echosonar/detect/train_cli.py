"""``echosonar train detector --cache CACHE --out DIR``: train the structure detector.

Trains on the cache's ``train`` split, reports val mAP each epoch, then fits the measurement
calibration on the training clips and evaluates on val/test (``DIR/eval.json``). Settings:
``--config FILE.yaml`` and ``--set detect.key=value`` (``echosonar config --describe``).
``--resume`` continues an interrupted run in DIR from its last finished epoch.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--cache", required=True, help="clip cache from `echosonar ingest` "
                        "(needs ground-truth boxes: a simulated set)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--resume", action="store_true",
                        help="continue from DIR's training state (same architecture)")
    add_config_args(parser)


def run(args: argparse.Namespace) -> int:
    from echosonar.config import ConfigError, config_from_args
    from echosonar.detect.train import train_detector
    from echosonar.ingest.cache import CacheError
    from echosonar.io.checkpoint import CheckpointError

    try:
        cfg = config_from_args(args)
        train_detector(cfg, args.cache, args.out, resume=args.resume, show=True)
    except (ConfigError, CacheError, CheckpointError, ValueError) as e:
        print(f"echosonar train detector: {e}", file=sys.stderr)
        return 2
    return 0
