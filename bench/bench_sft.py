"""SFT step benchmark: step time, FLOP/s and MFU vs the measured fp32 matmul peak, tokens/s,
and how the step grows with the number of views.

    nice python bench/bench_sft.py [--threads 2] [--steps 4] [--batch 8] [--out docs/bench/sft.md]

Data: synthetic studies (reason.synthetic) shaped like the real feature cache (1+8 clip tokens of
width 128, 12 structure tokens of width 64, boxes + measurements text), at the default LMConfig.
FLOPs are counted two ways: "executed" (torch FlopCounterMode over one forward+backward: every
matmul and attention actually run, padding included) and "model" (6 x matmul params x real tokens
+ causal attention 6 x S^2 x H per layer on real lengths + the LM head on target tokens only),
which is the usual MFU numerator. Peak = best of repeated fp32 [n x n] @ [n x n] matmuls in the
same process and thread count.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def matmul_peak(n: int = 1024, reps: int = 10) -> tuple[float, float]:
    """``(FLOP per wall second, FLOP per process-CPU second)``, best of ``reps``."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    best, best_cpu = float("inf"), float("inf")
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return 2 * n**3 / best, 2 * n**3 / max(best_cpu, 1e-9)


def model_flops(model, batch, targets) -> float:
    """Useful FLOPs of one training step (fwd + bwd = 3 x fwd) on real tokens."""
    cfg = model.lm.config
    h, layers, v = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    per_layer = sum(p.numel() for p in model.lm.get_decoder().layers[0].parameters()
                    if p.dim() == 2)
    total = 0.0
    for ids, t in zip(model.prompt_ids(batch), targets, strict=True):
        p = len(ids)
        n_t = len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1
        s = p + n_t
        total += 2 * per_layer * layers * s  # linear layers, forward
        total += 2 * s * s * h * layers  # QK^T + AV, causal half of 4 S^2 H
        total += 2 * h * v * n_t  # LM head on target positions only
    proj = sum(p.numel() for n, p in model.named_parameters()
               if p.dim() == 2 and ("proj" in n and "lm." not in n))
    n_vis = sum(len(ids) for ids in model.prompt_ids(batch))  # upper bound for projector rows
    return 3 * (total + 2 * proj * n_vis / 4)


def time_steps(model, opt, batch, targets, steps: int) -> list[tuple[float, float]]:
    """``[(wall seconds, process-CPU seconds)]`` per step after one warm-up step."""
    import torch

    times = []
    for _ in range(steps + 1):  # first step warms up allocators and kernels
        t0, c0 = time.perf_counter(), time.process_time()
        out = model.forward_sft(batch, targets)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append((time.perf_counter() - t0, time.process_time() - c0))
    return times[1:]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--views", default="1,2,4,6")
    ap.add_argument("--out", default="docs/bench/sft.md")
    args = ap.parse_args()

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from echosonar.config import load_config
    from echosonar.reason.data import sft_target
    from echosonar.reason.model import build_model
    from echosonar.reason.prompt import feature_dims
    from echosonar.reason.synthetic import synthetic_studies
    from echosonar.reason.tokenizer import corpus_from_studies, train_tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config().lm
    shape = dict(d_enc=128, d_det=64, n_tokens=8)
    corpus_studies = synthetic_studies(200, seed=0, **shape)
    tok = train_tokenizer(corpus_from_studies(corpus_studies), cfg.vocab_size)
    model = build_model(cfg, tok, feature_dims(corpus_studies[0]))
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    peak0 = matmul_peak()

    rows = []
    for k in [int(x) for x in args.views.split(",")]:
        batch = synthetic_studies(args.batch, seed=100 + k, min_views=k, max_views=k, **shape)
        targets = [sft_target(sf) for sf in batch]
        pk0 = matmul_peak()  # per row: the shared host's load drifts within a run
        times = time_steps(model, opt, batch, targets, args.steps)
        pk1 = matmul_peak()
        pk, pk_cpu = max(pk0[0], pk1[0]), max(pk0[1], pk1[1])
        with FlopCounterMode(display=False) as fc:
            model.forward_sft(batch, targets)["loss"].backward()
        opt.zero_grad(set_to_none=True)
        executed = fc.get_total_flops()
        useful = model_flops(model, batch, targets)
        emb, mask = model.prompt_embeds(batch)
        n_tok = int(mask.sum()) + sum(len(tok(t)["input_ids"]) + 1 for t in targets)
        step = min(t for t, _ in times)  # least-disturbed step; the median is listed too
        cpu = min(c for _, c in times)
        rows.append(dict(views=k, step=step, median=statistics.median(t for t, _ in times),
                         prompt=emb.shape[1], tokens=n_tok, tok_s=n_tok / step,
                         executed=executed / step, useful=useful / step, peak=pk,
                         mfu_cpu=useful / cpu / pk_cpu))
        print(rows[-1], flush=True)
    peak = max([peak0[0]] + [r["peak"] for r in rows])
    lines = [
        "# SFT step benchmark (`bench/bench_sft.py`)", "",
        f"Command: `nice python bench/bench_sft.py --threads {args.threads} --steps "
        f"{args.steps} --batch {args.batch}`  ",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads, shared host (other jobs running: numbers are noisy).  ",
        f"Model: default LMConfig ({cfg.arch}, hidden {cfg.hidden_size}, {cfg.layers} layers, "
        f"vocab {len(tok)}), {n_params / 1e6:.2f} M parameters; batch {args.batch} studies; "
        "features 1+8 clip tokens x 128, 12 structure tokens x 64.  ",
        f"fp32 matmul peak (1024^3, best of 10) measured before and after each row, same "
        f"process and threads; best seen: **{peak / 1e9:.1f} GFLOP/s**. Step time = best of "
        f"{args.steps} steps (median in brackets); MFU = model FLOP/s / that row's peak. "
        "MFU (CPU time) divides model FLOP per process-CPU-second by the matmul's FLOP per "
        "process-CPU-second: on a shared host it discounts time the process was descheduled "
        "(both threads' CPU time count, so spin-waits count against it).", "",
        "| views | prompt len (padded) | tokens/step | step time (s) | tokens/s | executed "
        "GFLOP/s | model GFLOP/s | row peak GFLOP/s | MFU (wall) | MFU (CPU time) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['views']} | {r['prompt']} | {r['tokens']} | {r['step']:.2f} "
                     f"({r['median']:.2f}) | {r['tok_s']:.0f} | {r['executed'] / 1e9:.1f} | "
                     f"{r['useful'] / 1e9:.1f} | {r['peak'] / 1e9:.1f} | "
                     f"{100 * r['useful'] / r['peak']:.0f}% | {100 * r['mfu_cpu']:.0f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
