"""``echosonar train sft``: supervised fine-tuning of EchoSonar-R on a feature cache.

Runs unchanged under ``torchrun --nproc_per_node=K`` (DDP; gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--features", required=True, metavar="FEATURES",
                        help="feature cache folder (index.json + <key>.safetensors)")
    parser.add_argument("--out", required=True, metavar="RUN",
                        help="run folder: log.jsonl, checkpoint/, model/, config.yaml")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly from RUN/checkpoint (weights, optimizer, "
                             "scheduler, RNG, data order)")
    parser.add_argument("--init-from", metavar="MODEL", default=None,
                        help="start from this EchoSonar-R model folder (e.g. RUN/model of an "
                             "earlier phase) with a fresh optimizer and schedule; its "
                             "tokenizer and LM shape are kept")
    add_config_args(parser)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from echosonar.config import ConfigError, config_from_args
    from echosonar.io.checkpoint import CheckpointError
    from echosonar.io.features import FeatureCacheError
    from echosonar.reason.sft import SFTError, train_sft

    try:
        cfg = config_from_args(args)
        res = train_sft(cfg, args.features, args.out, resume=args.resume,
                        init_from=args.init_from)
    except (ConfigError, FeatureCacheError, SFTError, CheckpointError, ValueError) as e:
        print(f"echosonar train sft: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        last = res["history"][-1] if res["history"] else {}
        val = res["val"][-1] if res["val"] else {}
        print(f"done: model in {res['model_dir']}; last train loss "
              f"{last.get('loss', float('nan')):.4f}, val lm loss "
              f"{val.get('lm_loss', float('nan')):.4f}")
    return 0
