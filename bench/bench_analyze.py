"""``analyze`` latency by stage, peak memory, and how both grow with views and clip length
-> docs/bench/app.md.

    python bench/bench_analyze.py --bundle runs/quickstart [--views 1 2 4 6] [--frames 16 32]
        [--repeats 3] [--profile] [--quickstart runs/quickstart/quickstart.json]
        [--decoding guided free] [--engine auto hf int8] [--out docs/bench/app.md]

One study per clip length is simulated (all six views, ``sim.frames`` = the length, fresh
seed) into a temporary folder; for each view count the first N views (taxonomy order) are
analysed with :func:`echosonar.app.pipeline.analyze_study` — the code path of ``echosonar
analyze`` — once as a warm-up and then ``--repeats`` times. Stage times come from the pipeline's
own timer (``result["timing_s"]``); ``ingest`` is split into decode (``read_file``) and
preprocess (``preprocess``) by timing those two calls on the same files. Peak memory is the
process's resident high-water mark during one analysis (``VmHWM`` after a reset). ``--profile``
runs cProfile over one 6-view analysis and lists the top functions by cumulative time.
``--quickstart`` adds the wall time and per-step peak memory recorded in a quickstart summary.
``--engine`` times the generation with each decode step of ``reason.decode.make_step``
(``app.engine``; one row each, interleaved per view count): ``auto`` (the hand-written Llama
step), ``hf`` (the model's own forward through the same loop: the decoding of earlier
commits), ``int8``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from echosonar.taxonomy import VIEWS

STAGES = ("decode", "preprocess", "view", "detect", "encode", "generate")


def simulate(out: Path, frames: int, seed: int) -> list[Path]:
    """Simulate one all-view study; return its DICOM files in taxonomy view order."""
    subprocess.run([sys.executable, "-m", "echosonar.cli", "simulate", "--studies", "1", "--out",
                    str(out), "--seed", str(seed), "--set", f"sim.frames={frames}",
                    "--set", "sim.missing_view_prob=0.0"], check=True, capture_output=True)
    man = json.loads((out / "manifest.json").read_text())
    clips = man["studies"][0]["clips"]
    by_view = {c["view"]: out / c["path"] for c in clips}
    return [by_view[v] for v in VIEWS if v in by_view]


def split_ingest(files: list[Path], cfg, repeats: int) -> tuple[float, float]:  # noqa: ANN001
    """Median seconds of decode (read_file) and preprocess over all files."""
    from echosonar.ingest.preproc import preprocess
    from echosonar.ingest.raw import read_file

    dec, pre = [], []
    for _ in range(repeats):
        d = p = 0.0
        for f in files:
            t = time.perf_counter()
            raw = read_file(f, cfg)
            d += time.perf_counter() - t
            t = time.perf_counter()
            preprocess(raw, cfg)
            p += time.perf_counter() - t
        dec.append(d)
        pre.append(p)
    return statistics.median(dec), statistics.median(pre)


def run_case(files: list[Path], bundle, cfg, repeats: int) -> dict[str, float]:  # noqa: ANN001
    from echosonar.app.pipeline import analyze_study

    analyze_study(files, bundle, cfg)  # warm-up (lazy imports, allocator)
    rows, peaks, gen_tokens, cpu = [], [], [], []
    for _ in range(repeats):
        c0 = time.process_time()
        a = analyze_study(files, bundle, cfg)
        cpu.append(time.process_time() - c0)
        rows.append(a.result["timing_s"])
        peaks.append(a.result.get("peak_memory_mb") or float("nan"))
        gen_tokens.append(len(bundle.vlm.tokenizer.encode(a.result.get("generation") or "")))
    out = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    decode, prep = split_ingest(files, cfg, repeats)
    out.update(decode=decode, preprocess=prep, peak_mb=max(peaks), cpu=min(cpu),
               gen_tokens=statistics.median(gen_tokens))
    return out


def profile(files: list[Path], bundle, cfg, top: int = 18) -> str:  # noqa: ANN001
    from echosonar.app.pipeline import analyze_study

    prof = cProfile.Profile()
    prof.enable()
    analyze_study(files, bundle, cfg)
    prof.disable()
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(top)
    return s.getvalue()


def quickstart_table(path: Path) -> list[str]:
    q = json.loads(path.read_text())
    lines = [f"### `echosonar quickstart` (budget {q['budget']}): {q['wall_s']:.0f} s wall", "",
             f"From `{path}`. Peak memory is each step's own process (steps run as "
             "subprocesses).", "", "| step | seconds | CPU s | peak MiB |", "|---|---|---|---|"]
    for s in q["steps"]:
        lines.append(f"| {s['name']} | {s['seconds']:.1f} | {s.get('cpu_s') or 0:.1f} | "
                     f"{s.get('peak_mb') or 0:.0f} |")
    peak = max((s.get("peak_mb") or 0) for s in q["steps"])
    lines += ["", f"Largest step peak: {peak:.0f} MiB.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True, help="model bundle folder (bundle.json)")
    ap.add_argument("--views", type=int, nargs="+", default=[1, 2, 4, 6])
    ap.add_argument("--frames", type=int, nargs="+", default=[16, 32],
                    help="clip lengths (frames per simulated clip)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="cProfile one 6-view analysis")
    ap.add_argument("--quickstart", type=Path, help="quickstart.json to summarise as well")
    ap.add_argument("--decoding", nargs="+", default=["guided"], choices=["guided", "free"],
                    help="app.decoding modes to time (several: one row each, interleaved)")
    ap.add_argument("--engine", nargs="+", default=["auto"], choices=["auto", "hf", "int8"],
                    help="decode steps to time (several: one row each, interleaved)")
    ap.add_argument("--out", default="docs/bench/app.md")
    args = ap.parse_args(argv)

    import torch

    from echosonar.app.bundle import load_bundle
    from echosonar.config import load_config

    torch.set_num_threads(args.threads)
    cfg = load_config()
    bundle = load_bundle(args.bundle)
    results: dict[tuple[int, int, str, str], dict[str, float]] = {}
    prof_text = ""
    with tempfile.TemporaryDirectory() as tmp:
        for i, frames in enumerate(args.frames):
            files = simulate(Path(tmp) / f"f{frames}", frames, seed=100 + i)
            for n in args.views:
                for mode in args.decoding:
                    for engine in args.engine:
                        cfg.app.decoding = mode
                        cfg.app.engine = engine  # what `--set app.engine=...` sets
                        results[(frames, n, mode, engine)] = r = run_case(
                            files[:n], bundle, cfg, args.repeats)
                        print(f"frames={frames} views={n} decoding={mode} engine={engine}: "
                              + ", ".join(f"{k}={v:.3f}" for k, v in r.items()), flush=True)
            cfg.app.decoding = args.decoding[0]
            cfg.app.engine = args.engine[0]
            if args.profile and i == 0:
                prof_text = profile(files, bundle, cfg)

    vlm = bundle.vlm
    n_params = sum(p.numel() for p in vlm.parameters()) / 1e6
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# `analyze` latency and memory" + (
            f", {' vs '.join(args.decoding)} decoding" if len(args.decoding) > 1 else "")
        + " (`bench/bench_analyze.py`)", "",
        f"Command: `python bench/bench_analyze.py --bundle {args.bundle} --views "
        f"{' '.join(map(str, args.views))} --frames {' '.join(map(str, args.frames))} "
        f"--repeats {args.repeats}{' --profile' if args.profile else ''} --decoding "
        f"{' '.join(args.decoding)} --engine {' '.join(args.engine)}`  ",
        f"Host: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} threads; 1-min load average at the end {load:.1f}.  ",
        f"Bundle: `{args.bundle}` (language model {n_params:.2f} M parameters, generation "
        f"budget {bundle.spec.max_new_tokens} tokens, greedy).", "",
        "One simulated study per clip length (all views present), analysed through "
        "`analyze_study` (the `echosonar analyze` code path). Seconds, median of "
        f"{args.repeats} runs after a warm-up; decode/preprocess split by timing `read_file` "
        "and `preprocess` on the same files. `gen tokens` = length of the generated reasoning "
        "(tokens), which drives the generate time. `CPU s` = the process's CPU seconds for the "
        "whole analysis (least of the runs): on a shared host, what it costs an idle core.", "",
        "| frames/clip | views | decoding | engine | " + " | ".join(STAGES)
        + " | total | CPU s | gen tokens | peak MiB |",
        "|" + "---|" * (len(STAGES) + 8),
    ]
    for (frames, n, mode, engine), r in results.items():
        lines.append(f"| {frames} | {n} | {mode} | {engine} | "
                     + " | ".join(f"{r.get(k, 0.0):.3f}" for k in STAGES)
                     + f" | {r['total']:.3f} | {r['cpu']:.3f} | {r['gen_tokens']:.0f} | "
                     f"{r['peak_mb']:.0f} |")
    lines.append("")
    if prof_text:
        lines += ["### Profile of one 6-view analysis (cProfile, cumulative)", "", "```",
                  prof_text.strip(), "```", ""]
    if args.quickstart:
        lines += quickstart_table(args.quickstart)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
