"""``echosonar analyze``: one study (or ``--batch``: many) -> result.json + report.html.

    echosonar analyze STUDY_DIR_OR_FILES... --model BUNDLE --out OUT
    echosonar analyze --batch STUDIES_DIR --model BUNDLE --out OUT     # one sub-folder per study
    echosonar analyze --batch S1 S2 S3 --model BUNDLE --out OUT       # each path is a study

Single mode writes ``OUT/result.json`` and ``OUT/report.html`` (each atomically). Batch mode
writes ``OUT/<study_key>/{result.json,report.html}`` per study (each folder atomically), keeps
going past studies that fail, and writes ``OUT/summary.json`` + ``OUT/summary.md``. Any bundle
component can be replaced by a checkpoint folder (``--vlm runs/grpo``, ``--detector ...``).
Exit code: 0 all analysed, 1 some or all failed, 2 bad arguments or bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("inputs", nargs="*", metavar="STUDY_DIR_OR_FILES",
                        help="DICOM/MP4/AVI files or folders of ONE study (with --batch: one "
                             "study per path, or one folder holding a sub-folder per study)")
    parser.add_argument("--model", metavar="BUNDLE", default="runs/quickstart",
                        help="model bundle folder (what `echosonar quickstart --out` makes; "
                             "default: runs/quickstart)")
    parser.add_argument("--out", metavar="OUT", help="output folder")
    parser.add_argument("--batch", action="store_true",
                        help="analyse many studies; keep going past failures; write a summary")
    for comp in ("view-classifier", "detector", "encoder", "vlm"):
        parser.add_argument(f"--{comp}", metavar="DIR", default=None,
                            help=f"use this {comp} checkpoint instead of the bundle's")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default 1: fastest on a busy 2-core machine)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="generation length limit (default: the bundle's)")
    parser.add_argument("--no-html", action="store_true", help="write result.json only")
    parser.add_argument("--print-schema", action="store_true",
                        help="print the JSON Schema of result.json and exit")
    add_config_args(parser)


def write_outputs(analysis: Any, out: Path, html: bool = True) -> dict[str, Path]:
    """Write ``out/result.json`` (+ ``out/report.html``) atomically; returns the paths."""
    from echosonar.app.report_html import render_report
    from echosonar.io.atomic import atomic_write_json, atomic_write_text

    paths = {"result": out / "result.json"}
    atomic_write_json(paths["result"], analysis.result)
    if html:
        paths["report"] = out / "report.html"
        atomic_write_text(paths["report"], render_report(analysis.result, analysis.keyframes))
    return paths


def batch_inputs(inputs: list[Path]) -> list[Path]:
    """One path per study: the given paths, or the sub-folders of a single folder of folders."""
    if len(inputs) == 1 and inputs[0].is_dir():
        subs = sorted(p for p in inputs[0].iterdir() if not p.name.startswith("."))
        if subs and all(p.is_dir() for p in subs):
            return subs
    return inputs


def run(args: argparse.Namespace) -> int:
    from echosonar.app.result import RESULT_SCHEMA

    if args.print_schema:
        print(json.dumps(RESULT_SCHEMA, indent=1))
        return 0
    if not args.inputs or not args.out:
        print("echosonar analyze: give the study's files or folder and --out OUT "
              "(see --help)", file=sys.stderr)
        return 2
    import torch

    from echosonar.app.bundle import bundle_from_args
    from echosonar.config import ConfigError, config_from_args
    from echosonar.config.app import AppConfig

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"echosonar analyze: {e}", file=sys.stderr)
        return 2
    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        print(f"echosonar analyze: input not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, args.threads or AppConfig().threads))
    bundle = bundle_from_args(args, "analyze")
    if bundle is None:
        return 2
    if args.max_new_tokens:
        bundle.spec.max_new_tokens = int(args.max_new_tokens)
    out = Path(args.out)
    if args.batch:
        return _batch(batch_inputs([Path(p) for p in args.inputs]), bundle, cfg, out,
                      not args.no_html)
    return _single([Path(p) for p in args.inputs], bundle, cfg, out, not args.no_html)


def _single(inputs: list[Path], bundle: Any, cfg: Any, out: Path, html: bool) -> int:
    from echosonar.app.pipeline import AnalysisError, analyze_study

    try:
        analysis = analyze_study(inputs, bundle, cfg, progress=_printer())
    except AnalysisError as e:
        print(f"echosonar analyze: {e}", file=sys.stderr)
        return 1
    paths = write_outputs(analysis, out, html)
    _print_summary(analysis.result, paths)
    return 0


def _batch(studies: list[Path], bundle: Any, cfg: Any, out: Path, html: bool) -> int:
    from echosonar.app.pipeline import analyze_study
    from echosonar.io.atomic import atomic_dir, atomic_write_json, atomic_write_text

    rows: list[dict[str, Any]] = []
    for i, study in enumerate(studies, 1):
        t0 = time.perf_counter()
        row: dict[str, Any] = {"input": i}
        try:
            analysis = analyze_study([study], bundle, cfg)
            key = analysis.result["study_key"]
            with atomic_dir(out / key) as tmp:
                write_outputs(analysis, tmp, html)
            r = analysis.result
            row.update(status="ok", study_key=key, folder=key, views=r["views"]["present"],
                       positive=[f["key"] for f in r["findings"] if f["positive"]],
                       answer=r["answer_findings"], warnings=len(r["warnings"]))
            print(f"[{i}/{len(studies)}] {study}: ok -> {out / key}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - one bad study must not stop the batch
            row.update(status="failed", error=f"{type(e).__name__}: {e}")
            print(f"[{i}/{len(studies)}] {study}: FAILED: {e}", file=sys.stderr)
        row["seconds"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
    n_ok = sum(r["status"] == "ok" for r in rows)
    summary = {"studies": len(rows), "ok": n_ok, "failed": len(rows) - n_ok, "rows": rows,
               "model": bundle.spec.name}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", _summary_md(summary))
    print(f"batch: {n_ok}/{len(rows)} studies analysed; summary in {out / 'summary.md'}",
          file=sys.stderr)
    return 0 if n_ok == len(rows) else 1


def _summary_md(s: dict[str, Any]) -> str:
    lines = [f"# Batch analysis — {s['ok']}/{s['studies']} studies analysed", "",
             "Research use only — not for diagnosis.", "",
             "| # | study key | status | views | positive (score ≥ threshold) | seconds |",
             "|---|---|---|---|---|---|"]
    for r in s["rows"]:
        if r["status"] == "ok":
            lines.append(f"| {r['input']} | [{r['study_key']}]({r['folder']}/report.html) | ok | "
                         f"{', '.join(r['views'])} | {', '.join(r['positive']) or '—'} | "
                         f"{r['seconds']} |")
        else:
            err = r["error"].replace("|", "/")
            lines.append(f"| {r['input']} | — | failed: {err} | | | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def _printer() -> Any:
    def progress(stage: str, frac: float) -> None:
        print(f"  {100 * frac:5.1f}%  {stage}", file=sys.stderr)

    return progress if sys.stderr.isatty() else (lambda stage, frac: None)


def _print_summary(r: dict[str, Any], paths: dict[str, Path]) -> None:
    pos = [f["name"] for f in r["findings"] if f["positive"]]
    print(f"study {r['study_key']}: views {', '.join(r['views']['present'])}; "
          f"positive: {', '.join(pos) or 'none'}; {len(r['warnings'])} warning(s); "
          f"{r['timing_s']['total']:.1f} s")
    for w in r["warnings"]:
        print(f"  warning: {w}")
    for name, p in paths.items():
        print(f"{name}: {p}")
