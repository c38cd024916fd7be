"""``echosonar train encoder --cache CACHE --out DIR``: pretrain the clip encoder.

Multi-task supervision from the ingest cache's simulator labels and measurements, masked by what
each clip's view can show (no language model). Trains on ``train``, keeps the epoch with the
lowest ``val`` loss. Writes the encoder checkpoint (``load_encoder(DIR)``), ``heads/``, ``last/``
(exact resume with ``--resume``), ``metrics.json``, ``config.yaml`` and ``run_info.json``.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--cache", required=True, help="ingest clip cache (index.json)")
    parser.add_argument("--out", required=True, help="encoder checkpoint folder")
    parser.add_argument("--arch", choices=["conv21d", "tubelet"], default=None,
                        help="override encode.model.arch")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override encode.pretrain.epochs")
    parser.add_argument("--resume", action="store_true",
                        help="continue from DIR/last (same config) instead of starting over")
    add_config_args(parser)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import time
    from pathlib import Path

    import torch

    from echosonar.config import config_from_args, save_yaml
    from echosonar.encode.data import clip_table
    from echosonar.encode.pretrain import pretrain
    from echosonar.ingest import CacheError, iter_cache
    from echosonar.io.atomic import atomic_write_json
    from echosonar.utils.repro import run_info, seed_everything

    cfg = config_from_args(args)
    ecfg = cfg.encode
    if args.arch is not None:
        ecfg.model = dataclasses.replace(ecfg.model, arch=args.arch)
    if args.epochs is not None:
        ecfg.pretrain = dataclasses.replace(ecfg.pretrain, epochs=args.epochs)
    tcfg = ecfg.pretrain
    torch.set_num_threads(max(1, tcfg.threads))
    seed_everything(tcfg.seed)
    t0 = time.time()
    try:
        train = clip_table(iter_cache(args.cache, split="train", as_float=False),
                           max_clips=tcfg.max_clips)
        val_studies = list(iter_cache(args.cache, split="val", as_float=False))
    except (CacheError, ValueError) as e:
        print(f"echosonar train encoder: {args.cache}: {e}", file=sys.stderr)
        return 2
    val = clip_table(val_studies) if val_studies else None
    print(f"loaded {len(train)} train / {len(val) if val else 0} val clips in "
          f"{time.time() - t0:.1f}s", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_yaml(cfg, out / "config.yaml")
    atomic_write_json(out / "run_info.json", run_info(
        tcfg.seed, command="train encoder", cache=str(args.cache), n_train_clips=len(train)))
    res = pretrain(train, val, ecfg.model, tcfg, out, resume=args.resume,
                   log=lambda s: print(s, file=sys.stderr))
    best = min(res["history"], key=lambda h: h.get("val_label_loss", h["train_label"]))
    print(f"encoder saved to {out} (best epoch {best['epoch']}: val mean AUROC "
          f"{best.get('val_mean_auroc', float('nan')):.3f}, val mean R^2 "
          f"{best.get('val_mean_r2', float('nan')):.3f})")
    return 0
