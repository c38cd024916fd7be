"""Detector throughput: inference frames/s (model only and full ``detect_clip``) and training
frames/s -> docs/bench/detect.md.

    python bench/bench_detect.py [--threads 1 2] [--clips 8] [--repeats 3] [--model DIR] [--out FILE]

Clips are random 16 x 64 x 64 frames (half grey B-mode, half RGB colour) with the default
``DetectConfig`` (or the checkpoint given by ``--model``; speed does not depend on the weights).
``model`` = one batched forward pass of all frames; ``detect_clip`` = the whole per-clip API
(forward, presence, pooled tokens, tracks, measurements) called clip by clip; ``train`` = forward
+ loss + backward + AdamW step on 64-frame batches with augmentation. Median of ``--repeats``
timed passes after a warm-up. The machine is shared, so the table records the host load.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from echosonar.config.detect import DetectConfig
from echosonar.detect.data import augment
from echosonar.detect.infer import detect_clip
from echosonar.detect.losses import DetectionLoss
from echosonar.detect.model import Detector, view_indices
from echosonar.schema import Clip


def _clips(n: int, frames: int = 16, size: int = 64) -> list[Clip]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        c = 1 if i % 2 == 0 else 3
        out.append(Clip(view="A4C" if c == 1 else "A4C_COLOR",
                        frames=rng.random((frames, c, size, size), dtype=np.float32),
                        cm_per_px=0.3, frame_times=np.arange(frames) / 30.0, ed_index=0,
                        es_index=6))
    return out


def _median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench(model: Detector, threads: int, n_clips: int, repeats: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    clips = _clips(n_clips)
    n_frames = sum(c.frames.shape[0] for c in clips)
    model.eval()
    x = torch.cat([model.prepare(torch.as_tensor(c.frames)) for c in clips])
    v = torch.cat([view_indices([c.view] * c.frames.shape[0]) for c in clips])
    with torch.no_grad():
        t_model = _median_time(lambda: model.predict(x, v), repeats)
    t_clip = _median_time(lambda: [detect_clip(model, c) for c in clips], repeats)
    cfg = model.config
    train_model = Detector(cfg)
    loss_fn = DetectionLoss(cfg)
    opt = torch.optim.AdamW(train_model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    xb = x[:64].clone()
    present = torch.rand(64, 12, generator=g) > 0.5
    boxes = torch.rand(64, 12, 4, generator=g) * 0.3 + 0.2

    def step() -> None:
        xa, pa, ba = augment(xb, present, boxes, 1.0, g)
        loss, _ = loss_fn(train_model(xa, v[:64]), pa, ba)
        opt.zero_grad()
        loss.backward()
        opt.step()

    train_model.train()
    t_train = _median_time(step, repeats)
    return {"model_fps": n_frames / t_model, "clip_fps": n_frames / t_clip,
            "clips_per_s": n_clips / t_clip, "train_fps": 64 / t_train}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None, help="detector checkpoint (default: fresh model)")
    ap.add_argument("--out", default="docs/bench/detect.md")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = Detector.from_pretrained(args.model) if args.model else Detector(DetectConfig())
    n_params = sum(p.numel() for p in model.parameters())
    load = os.getloadavg()[0]
    rows = []
    for th in args.threads:
        r = bench(model, th, args.clips, args.repeats)
        rows.append((th, r))
        print(f"threads={th}: model {r['model_fps']:.0f} frames/s, detect_clip "
              f"{r['clip_fps']:.0f} frames/s ({r['clips_per_s']:.1f} clips/s), train "
              f"{r['train_fps']:.0f} frames/s", flush=True)
    cfg = model.config
    lines = [
        "# Detector benchmark", "",
        f"Command: `python bench/bench_detect.py --threads {' '.join(map(str, args.threads))} "
        f"--clips {args.clips} --repeats {args.repeats}`  ",
        f"Model: assign={cfg.assign}, widths={cfg.widths}, embed_dim={cfg.embed_dim}, "
        f"decoder_layers={cfg.decoder_layers}, image_size={cfg.image_size}, "
        f"{n_params / 1e6:.2f} M parameters  ",
        f"Host: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, load average at start {load:.1f} (shared machine: numbers vary "
        "with the load)", "",
        f"Input: {args.clips} clips x 16 frames (half grey, half colour), 64 x 64.", "",
        "| threads | model frames/s | detect_clip frames/s | clips/s | train frames/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for th, r in rows:
        lines.append(f"| {th} | {r['model_fps']:.0f} | {r['clip_fps']:.0f} | "
                     f"{r['clips_per_s']:.1f} | {r['train_fps']:.0f} |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from echosonar.io.atomic import atomic_write_text

    atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
