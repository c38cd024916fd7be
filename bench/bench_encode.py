"""Clip-encoder throughput: inference and training clips/s for each arch -> docs/bench/encode.md.

    python bench/bench_encode.py [--threads 1 2] [--batch 16] [--repeats 3] [--out FILE]

Random 16 x 64 x 64 clips (half grey B-mode, half RGB colour), default ``EncoderModelConfig``
per arch. Reports the median of ``--repeats`` timed passes after one warm-up pass. The machine is
shared, so numbers vary run to run; the table records the host load at start.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from echosonar.config.encode import EncoderModelConfig
from echosonar.encode.models import ClipEncoder


def _clips(batch: int, cfg: EncoderModelConfig) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, cfg.clip_len, 3, cfg.image_size, cfg.image_size, generator=g)
    x[: batch // 2] = x[: batch // 2].mean(2, keepdim=True)  # grey clips (replicated)
    views = ["A4C"] * (batch // 2) + ["A4C_COLOR"] * (batch - batch // 2)
    return x, views


def bench(arch: str, threads: int, batch: int, repeats: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = EncoderModelConfig(arch=arch)
    model = ClipEncoder(cfg)
    x, views = _clips(batch, cfg)
    model.eval()
    times, cpu = [], []
    with torch.no_grad():
        model(x, views)
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            model(x, views)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    infer = batch / statistics.median(times)
    infer_cpu = batch / statistics.median(cpu)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times, cpu = [], []
    for i in range(repeats + 1):
        t, c = time.perf_counter(), time.process_time()
        loss = model(x, views).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    train = batch / statistics.median(times)
    train_cpu = batch / statistics.median(cpu)
    return {"params_M": sum(p.numel() for p in model.parameters()) / 1e6,
            "infer": infer, "train": train, "infer_cpu": infer_cpu, "train_cpu": train_cpu}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "bench"
                                         / "encode.md"))
    args = ap.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rows = []
    for arch in ("conv21d", "tubelet"):
        for th in args.threads:
            r = bench(arch, th, args.batch, args.repeats)
            rows.append((arch, th, r))
            print(f"{arch:8s} threads={th}: {r['infer']:.1f} clips/s inference, "
                  f"{r['train']:.1f} clips/s training", file=sys.stderr)
    cfg = EncoderModelConfig()
    lines = [
        "# Clip-encoder throughput", "",
        f"`python bench/bench_encode.py` — torch {torch.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load:.2f} at start (shared machine: numbers "
        "vary run to run).",
        f"Input {cfg.clip_len} x {cfg.image_size} x {cfg.image_size}, batch {args.batch} (half "
        f"grey, half colour), output 1 + {cfg.token_t * cfg.token_s ** 2} tokens x {cfg.dim}; "
        "median of "
        f"{args.repeats} passes after a warm-up.", "",
        "Per CPU-second columns divide by the process's CPU time instead of wall time: on a "
        "busy host they approximate what one free core would do.", "",
        "| arch | threads | params (M) | inference clips/s (wall) | training clips/s (wall) | "
        "inference clips / CPU-s | training clips / CPU-s |",
        "|---|---|---|---|---|---|---|",
    ]
    for arch, th, r in rows:
        lines.append(f"| {arch} | {th} | {r['params_M']:.2f} | {r['infer']:.1f} | "
                     f"{r['train']:.1f} | {r['infer_cpu']:.1f} | {r['train_cpu']:.1f} |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
