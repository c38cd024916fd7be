"""SFT step throughput: target tokens/s, model FLOP/s and MFU against the fp32 and bf16 matmul
peaks measured in the same run; padded vs real-tokens-only passes, fp32 vs ``sft.precision=bf16``
side by side -> docs/bench/sft.md

    python bench/bench_sft.py [--features FEATURES] [--threads 1] [--steps 3] [--batch 8]
        [--sizes default big] [--variants fp32-padded fp32 bf16-padded bf16]
        [--out docs/bench/sft.md]

Studies: ``--features`` is a feature cache (its train split; a random batch of ``--batch``
studies, seed 0, as SFT draws them: mixed view counts, SFT's default targets); without it,
synthetic studies shaped like one (reason.synthetic, six views). Models, randomly initialised:
``default`` = the default LMConfig (2.2 M parameters); ``big`` = hidden 384, 5 layers, 6 heads
(about 9.5 M). Each step is ``forward_sft`` + backward + AdamW, exactly what ``train_sft``
runs; variants (:data:`VARIANTS`) alternate step by step (the host is shared: a drift hits all
alike), after one warm-up step each. Reported: the best step (the least disturbed) and the median.

FLOPs. "model": 6 x (matrix parameters of the decoder) x real tokens + causal attention
(6 x S^2 x H per layer per study, real lengths) + the LM head on target tokens only (the step
computes logits nowhere else) + the projectors: the usual MFU numerator, padding excluded.
Peaks: the best of ten 1024^3 products, fp32 and bf16, in this process and thread count,
before and after each model's rows; MFU = model FLOP/s / the best fp32 peak (and, for bf16
rows, also / the bf16 peak). The CPU-time columns divide by process-CPU seconds instead of
wall seconds (step and peak alike): on a shared host they discount the time the process waited
for a core. Load: the 1-minute load average at the start and end of each model's rows.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIZES = {"default": [], "big": ["lm.hidden_size=384", "lm.layers=5", "lm.heads=6"]}


def matmul_peak(dtype, n: int = 1024, reps: int = 10) -> tuple[float, float]:
    """``(FLOP per wall second, FLOP per process-CPU second)`` of the best of ``reps``
    ``[n, n] @ [n, n]`` products in ``dtype``."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = best_cpu = float("inf")
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        a @ b
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return 2 * n**3 / best, 2 * n**3 / max(best_cpu, 1e-9)


def model_flops(model, batch, targets) -> tuple[float, int, int]:
    """``(useful FLOPs of one training step, target tokens, all real tokens)``."""
    cfg = model.lm.config
    h, layers, v = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    per_layer = sum(p.numel() for p in model.lm.get_decoder().layers[0].parameters()
                    if p.dim() == 2)
    proj = sum(p.numel() for n, p in model.named_parameters()
               if p.dim() == 2 and "proj" in n and not n.startswith("lm."))
    fwd, n_t_all, n_all = 0.0, 0, 0
    for ids, t in zip(model.prompt_ids(batch), targets, strict=True):
        n_t = min(len(model.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1,
                  model.config.max_len - len(ids))
        s = len(ids) + n_t
        fwd += 2 * per_layer * layers * s + 2 * s * s * h * layers + 2 * h * v * n_t
        fwd += 2 * proj * len(ids) / 4  # upper bound: the projectors see only feature rows
        n_t_all, n_all = n_t_all + n_t, n_all + s
    return 3 * fwd, n_t_all, n_all


def build(size: str, features: str | None, batch_size: int):
    import numpy as np
    import torch

    from echosonar.config import load_config
    from echosonar.reason.data import load_split, sft_target
    from echosonar.reason.model import build_model
    from echosonar.reason.prompt import feature_dims
    from echosonar.reason.synthetic import synthetic_studies
    from echosonar.reason.tokenizer import corpus_from_studies, train_tokenizer

    cfg = load_config(overrides=SIZES[size])
    s = cfg.sft
    if features:
        pool = load_split(features, "train")
        rng = np.random.default_rng(0)
        batch = [pool[i] for i in rng.choice(len(pool), batch_size, replace=False)]
    else:
        pool = synthetic_studies(200, seed=0, d_enc=128, d_det=64, n_tokens=8)
        batch = synthetic_studies(batch_size, seed=106, d_enc=128, d_det=64, n_tokens=8,
                                  min_views=6, max_views=6)
    tok = train_tokenizer(corpus_from_studies(pool, s.target, cfg.lm.measurement_flags,
                                              s.report), cfg.lm.vocab_size)
    torch.manual_seed(0)
    model = build_model(cfg.lm, tok, feature_dims(batch[0]))
    if model.meas_head is not None:
        model.meas_head.fit_stats(pool)
    targets = [sft_target(sf, s.target, cfg.lm.measurement_flags, s.report) for sf in batch]
    return model, batch, targets


#: variant -> (sft.precision, teacher-forced pass over real tokens only: reason.varlen)
VARIANTS = {"fp32-padded": ("fp32", False), "fp32": ("fp32", True),
            "bf16-padded": ("bf16", False), "bf16": ("bf16", True)}


def one_step(model, opt, batch, targets, variant: str) -> tuple[float, float]:
    """``(wall seconds, process-CPU seconds)`` of one SFT step (the pass ``train_sft``
    runs) in ``variant`` (:data:`VARIANTS`)."""
    import torch

    from echosonar.reason.sft import train_autocast

    precision, model.varlen = VARIANTS[variant]
    t0, c0 = time.perf_counter(), time.process_time()
    with train_autocast("cpu", precision):
        out = model.forward_sft(batch, targets)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, time.process_time() - c0


def bench_size(size: str, args) -> list[dict]:
    import torch

    model, batch, targets = build(size, args.features, args.batch)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    flops, n_target, n_all = model_flops(model, batch, targets)
    load0 = os.getloadavg()[0]
    peaks = {"fp32": [matmul_peak(torch.float32)], "bf16": [matmul_peak(torch.bfloat16)]}
    times: dict[str, list[tuple[float, float]]] = {p: [] for p in args.variants}
    for rep in range(args.steps + 1):  # rep 0 warms up
        for p in args.variants:
            dt = one_step(model, opt, batch, targets, p)
            if rep:
                times[p].append(dt)
    peaks["fp32"].append(matmul_peak(torch.float32))
    peaks["bf16"].append(matmul_peak(torch.bfloat16))
    load1 = os.getloadavg()[0]
    rows = []
    for p in args.variants:
        best = min(w for w, _ in times[p])
        cpu = min(c for _, c in times[p])
        own = peaks[VARIANTS[p][0]]
        rows.append(dict(size=size, params=n_params, variant=p, best=best, cpu=cpu,
                         median=statistics.median(w for w, _ in times[p]),
                         target_tok_s=n_target / best, tok_s=n_all / best,
                         gflops=flops / best / 1e9,
                         peak32=max(w for w, _ in peaks["fp32"]) / 1e9,
                         peak16=max(w for w, _ in peaks["bf16"]) / 1e9,
                         mfu_cpu32=flops / cpu / max(c for _, c in peaks["fp32"]),
                         mfu_cpu_own=flops / cpu / max(c for _, c in own),
                         tokens=(n_target, n_all), load=(load0, load1),
                         hidden=model.lm.config.hidden_size,
                         layers=model.lm.config.num_hidden_layers))
        print(rows[-1], flush=True)
    return rows


def render(args, rows: list[dict]) -> str:
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    src = "`--features FEATURES` (a feature cache's train split)" if args.features else \
        "synthetic six-view studies"
    cmd = "python bench/bench_sft.py" + (" --features FEATURES" if args.features else "") + \
        f" --threads {args.threads} --steps {args.steps} --batch {args.batch} --sizes " + \
        " ".join(args.sizes) + " --variants " + " ".join(args.variants)
    lines = [
        "# SFT step throughput (`bench/bench_sft.py`)", "",
        f"Command: `{cmd}`  ",
        f"Date {datetime.date.today()}, commit {commit}; host {platform.machine()}, "
        f"{os.cpu_count()} cores (shared: 1-minute load average in the table), torch "
        f"{torch.__version__}, {args.threads} thread(s).  ",
        f"Data: {src}, one batch of {args.batch} studies; a step = `forward_sft` + backward + "
        "AdamW; best of "
        f"{args.steps} steps per variant (median in brackets), variants interleaved. Variants: "
        "`fp32-padded` = the teacher-forced pass through the HF decoder over rows padded to "
        "the batch's longest (the code before `reason.varlen`); `fp32` = real tokens only "
        "(`reason.varlen`, the default); `bf16` / `bf16-padded` = the same with "
        "`sft.precision=bf16`.  ",
        "Model FLOPs count real tokens only (decoder matrices, causal attention, the LM head on "
        "target tokens, projectors); peaks are the best 1024^3 products in the same process.", "",
        "| model | params | variant | step s | CPU s | target tok/s | all tok/s | "
        "model GFLOP/s | fp32 peak | bf16 peak | MFU vs fp32 peak | MFU vs own peak | "
        f"MFU (CPU time) vs fp32 / own peak | x {args.variants[0]} (wall, CPU) | load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    base = {r["size"]: r for r in rows if r["variant"] == args.variants[0]}
    for r in rows:
        own = r["peak16"] if VARIANTS[r["variant"]][0] == "bf16" else r["peak32"]
        ref = base.get(r["size"])
        lines.append(
            f"| {r['size']} ({r['hidden']}x{r['layers']}) | {r['params'] / 1e6:.1f} M | "
            f"{r['variant']} | {r['best']:.2f} ({r['median']:.2f}) | {r['cpu']:.2f} | "
            f"{r['target_tok_s']:.0f} | {r['tok_s']:.0f} | {r['gflops']:.1f} | "
            f"{r['peak32']:.0f} | {r['peak16']:.0f} | {100 * r['gflops'] / r['peak32']:.0f}% | "
            f"{100 * r['gflops'] / own:.0f}% | {100 * r['mfu_cpu32']:.0f}% / "
            f"{100 * r['mfu_cpu_own']:.0f}% | "
            f"{ref['best'] / r['best'] if ref else float('nan'):.2f}, "
            f"{ref['cpu'] / r['cpu'] if ref else float('nan'):.2f} | "
            f"{r['load'][0]:.1f} -> {r['load'][1]:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--features", default=None, help="feature cache (its train split)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sizes", nargs="+", default=["default", "big"], choices=sorted(SIZES))
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--out", default="docs/bench/sft.md")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    rows = [r for size in args.sizes for r in bench_size(size, args)]
    md = render(args, rows)
    print(md)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
