"""``echosonar train grpo``: GRPO from an SFT checkpoint on a feature cache.

    echosonar train grpo --from RUN_SFT/model --features FEATURES --out RUN_GRPO \\
        [--config FILE.yaml] [--set grpo.steps=100] [--resume] [--compare test]

Runs unchanged under ``torchrun --nproc_per_node=K`` (DDP; gloo on CPU, nccl on GPU). With
``--resume`` the run continues exactly from ``RUN/checkpoint`` using ``RUN/config.yaml`` (plus any
``--set``, e.g. a larger ``grpo.steps``). ``--compare SPLIT`` decodes SPLIT greedily with the SFT
starting point and the GRPO result and writes ``RUN/compare_SPLIT.json`` (macro BAcc etc.).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--from", dest="from_", required=True, metavar="SFT_CHECKPOINT",
                        help="EchoSonar-R checkpoint folder to start from (and the KL reference)")
    parser.add_argument("--features", required=True, metavar="FEATURES",
                        help="feature cache folder (index.json + <key>.safetensors)")
    parser.add_argument("--out", required=True, metavar="RUN",
                        help="run folder: log.jsonl, checkpoint/, final/, config.yaml")
    parser.add_argument("--resume", action="store_true",
                        help="continue exactly from RUN/checkpoint with RUN/config.yaml")
    parser.add_argument("--compare", default=None, metavar="SPLIT",
                        help="after training, greedy macro BAcc of SFT vs GRPO on SPLIT")
    parser.add_argument("--compare-limit", type=int, default=0, metavar="N",
                        help="use only the first N studies of SPLIT for --compare (0 = all)")
    add_config_args(parser)


def train_grpo(cfg: Any, sft_dir: str | Path, features: str | Path | None, out: str | Path,
               resume: bool = False, train: list | None = None, val: list | None = None,
               reward_funcs: dict | None = None) -> dict[str, Any]:
    """Build the policy from ``sft_dir``, train, save. Returns ``{"log", "final_dir",
    "trainer"}``. ``train``/``val`` override the feature cache (tests)."""
    import torch

    from echosonar.config import save_yaml
    from echosonar.io.atomic import atomic_write_json
    from echosonar.reason.data import load_split
    from echosonar.reason.grpo import CKPT, FINAL, GRPOTrainer
    from echosonar.reason.model import EchoSonarR
    from echosonar.reason.sft import setup_distributed
    from echosonar.utils.repro import run_info, seed_everything

    g = cfg.grpo
    out = Path(out)
    rank, world, device = setup_distributed(g.device)
    if g.threads > 0:
        torch.set_num_threads(g.threads)
    if resume and not (out / CKPT / "training_state.json").is_file():
        raise ValueError(f"--resume: no checkpoint to resume in {out / CKPT}")
    if not resume and (out / CKPT).exists():
        raise ValueError(f"{out} already holds a checkpoint; pass --resume or choose a new --out")
    seed_everything(g.seed)
    if train is None:
        train = load_split(features, "train")
    if val is None and g.eval_every and features is not None:
        val = load_split(features, "val", limit=g.eval_studies)
    policy = EchoSonarR.from_pretrained(sft_dir, map_location=device)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_yaml(cfg, out / "config.yaml")
        atomic_write_json(out / "run_info.json", run_info(
            g.seed, world_size=world, device=device, sft_checkpoint=str(sft_dir),
            features=None if features is None else str(features), n_train=len(train),
            resumed=resume))
    trainer = GRPOTrainer(policy, g, train, out, reward_funcs=reward_funcs, val=val, rank=rank,
                          world=world, device=device)
    log = trainer.train(resume=resume)
    return {"log": log, "final_dir": out / FINAL, "trainer": trainer}


def compare(sft_dir: str | Path, grpo_dir: str | Path, studies: list, max_new_tokens: int,
            batch_size: int, device: str = "cpu") -> dict[str, Any]:
    """Greedy evaluation of both checkpoints on ``studies`` (see ``grpo_eval.greedy_eval``)."""
    from echosonar.reason.grpo_eval import greedy_eval
    from echosonar.reason.model import EchoSonarR

    res = {}
    for name, d in (("sft", sft_dir), ("grpo", grpo_dir)):
        model = EchoSonarR.from_pretrained(d, map_location=device)
        res[name] = greedy_eval(model, studies, max_new_tokens, batch_size)
    res["delta_macro_bacc"] = res["grpo"]["macro_bacc"] - res["sft"]["macro_bacc"]
    return res


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import sys

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from echosonar.config import ConfigError, config_from_args, load_config
    from echosonar.io.atomic import atomic_write_json
    from echosonar.io.checkpoint import CheckpointError
    from echosonar.io.features import FeatureCacheError

    try:
        if args.resume and args.config is None and (Path(args.out) / "config.yaml").is_file():
            cfg = load_config(Path(args.out) / "config.yaml", args.overrides)
        else:
            cfg = config_from_args(args)
        res = train_grpo(cfg, args.from_, args.features, args.out, resume=args.resume)
    except (ConfigError, FeatureCacheError, CheckpointError, ValueError) as e:
        print(f"echosonar train grpo: {e}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    last = res["log"][-1] if res["log"] else {}
    print(f"done: model in {res['final_dir']}; last step reward {last.get('reward', float('nan')):.4f}"
          f", well-formed {last.get('well_formed', float('nan')):.2f}, zero-std groups "
          f"{last.get('frac_zero_std', float('nan')):.2f}")
    if args.compare:
        from echosonar.reason.data import load_split

        studies = load_split(args.features, args.compare, limit=args.compare_limit)
        g = cfg.grpo
        dev = res["trainer"].device
        cmp = compare(args.from_, res["final_dir"], studies, g.max_completion_length,
                      g.micro_batch_studies, str(dev))
        atomic_write_json(Path(args.out) / f"compare_{args.compare}.json", cmp)
        print(json.dumps({k: (v if not isinstance(v, dict) else
                              {kk: vv for kk, vv in v.items() if kk != "per_label"})
                          for k, v in cmp.items()}, indent=1))
    return 0
