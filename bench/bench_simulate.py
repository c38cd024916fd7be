"""Benchmark EchoSim: rendered frames per second, in memory and writing DICOM study sets.

    python bench/bench_simulate.py [--studies 24] [--preset default] \
        [--write docs/bench/simulate.md]

Measures (1) ``render_study`` in one process (no files), (2) ``write_study_set`` with 1 and 2
worker processes (render + DICOM + JSON, the real command). Target: >= 150 frames/s at the
default resolution on a 2-core machine (1,000 studies x 6 views x 16 frames in < 10 min).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def bench_render(cfg, n: int) -> tuple[float, int, float]:
    from echosonar.simulate.spec import spec_for_index
    from echosonar.simulate.writer import render_study

    render_study(spec_for_index(cfg, 10_000), cfg)       # warm caches (geometry, imports)
    t0, c0 = time.perf_counter(), time.process_time()
    frames = 0
    for i in range(n):
        for _, f, _ in render_study(spec_for_index(cfg, i), cfg):
            frames += f.shape[0]
    return frames / (time.perf_counter() - t0), frames, frames / (time.process_time() - c0)


def bench_write(cfg, n: int, workers: int) -> tuple[float, int, float]:
    import json

    from echosonar.simulate.writer import write_study_set

    out = Path(tempfile.mkdtemp(prefix="echosim_bench_"))
    try:
        t0 = time.perf_counter()
        r0 = os.times()
        path = write_study_set(out, dataclasses.replace(cfg, studies=n, workers=workers))
        dt = time.perf_counter() - t0
        r1 = os.times()
        cpu = (r1.user - r0.user) + (r1.system - r0.system) + \
            (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
        frames = sum(c["n_frames"] for s in json.loads(path.read_text())["studies"]
                     for c in s["clips"])
        return frames / dt, frames, frames / max(cpu, 1e-9)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=24)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--write", default=None, help="append a results table to this markdown file")
    args = ap.parse_args()
    from echosonar.config.sim import SimConfig
    from echosonar.simulate.presets import resolve

    cfg = resolve(SimConfig(preset=args.preset))
    rows = []
    fps, n, per_cpu = bench_render(cfg, args.studies)
    rows.append(("render_study, in memory, 1 process", fps, n, per_cpu))
    for w in (1, 2):
        fps, n, per_cpu = bench_write(cfg, args.studies, w)
        rows.append((f"write_study_set (DICOM), {w} worker{'s' if w > 1 else ''}", fps, n,
                     per_cpu))
    head = (f"preset={args.preset} image={cfg.image_size}x{cfg.image_size} frames/clip="
            f"{cfg.frames} studies={args.studies} cpus={os.cpu_count()} "
            f"machine={platform.machine()} load1={os.getloadavg()[0]:.1f}")
    lines = [head, "", "| what | frames/s (wall) | frames per CPU-second | frames |",
             "|---|---:|---:|---:|"]
    lines += [f"| {w} | {f:.0f} | {c:.0f} | {n} |" for w, f, n, c in rows]
    text = "\n".join(lines)
    print(text)
    if args.write:
        with open(args.write, "a") as fh:
            fh.write("\n" + time.strftime("%Y-%m-%d %H:%M") + "  " + text + "\n")


if __name__ == "__main__":
    main()
