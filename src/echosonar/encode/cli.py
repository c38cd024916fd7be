"""``echosonar encode CACHE --out FEATURES --encoder DIR [--detector DIR]``: the feature cache.

Encodes every clip of every study in an ingest cache with a frozen encoder (and, when given, the
structure detector) and writes ``io.features`` files: ``FEATURES/<key>.safetensors`` +
``index.json`` (labels, measurements, reasoning, report and split carried over). Resumable:
rerun the same command to finish an interrupted run.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("cache", metavar="CACHE", help="ingest clip cache (index.json)")
    parser.add_argument("--out", required=True, metavar="FEATURES", help="feature cache folder")
    parser.add_argument("--encoder", required=True, metavar="DIR",
                        help="encoder checkpoint folder, or python:module:factory[@arg]")
    parser.add_argument("--detector", default=None, metavar="DIR",
                        help="detector checkpoint folder (omit: zero structure tokens)")
    parser.add_argument("--split", default=None, help="only this split (default: all)")
    add_config_args(parser)


def encoder_info(path: str, encoder: object) -> dict:
    """What the feature index records about the encoder (checkpoint hash when it has one)."""
    from pathlib import Path

    from echosonar.io.checkpoint import read_checkpoint_config

    info = {**encoder.describe(), "path": str(path)}  # type: ignore[attr-defined]
    if Path(path).is_dir():
        info["sha256"] = read_checkpoint_config(path).get("sha256")
    return info


def run(args: argparse.Namespace) -> int:
    import torch

    from echosonar.config import config_from_args
    from echosonar.encode.features import build_feature_cache, detector_hook
    from echosonar.encode.protocol import load_encoder
    from echosonar.ingest import CacheError, iter_cache, read_index
    from echosonar.io.checkpoint import CheckpointError

    cfg = config_from_args(args)
    torch.set_num_threads(max(1, cfg.encode.threads))
    try:
        index = read_index(args.cache)
        entries = index["studies"]
        encoder = load_encoder(args.encoder)
        detect, det_info = detector_hook(args.detector) if args.detector else (None, None)
    except (CacheError, CheckpointError, ValueError, TypeError, ImportError) as e:
        print(f"echosonar encode: {e}", file=sys.stderr)
        return 2
    total = sum(1 for e in entries if args.split is None or e.get("split") == args.split)
    try:
        build_feature_cache(iter_cache(args.cache, split=args.split), args.out,
                            encoder, encoder_info(args.encoder, encoder), detect, det_info,
                            batch_size=cfg.encode.batch_size,
                            index_every=cfg.encode.index_every, total=total,
                            protocol=index.get("protocol", "oracle"),
                            log=lambda s: print(s, file=sys.stderr))
    except ValueError as e:
        print(f"echosonar encode: {e}", file=sys.stderr)
        return 2
    print(args.out)
    return 0
