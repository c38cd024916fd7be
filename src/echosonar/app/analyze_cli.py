"""``echosonar analyze``: one study (or ``--batch``: many) -> result.json + report.html.

    echosonar analyze STUDY_DIR_OR_FILES... --out OUT       # the shipped model (models/echosonar-r)
    echosonar analyze STUDY_DIR_OR_FILES... --model BUNDLE --out OUT
    echosonar analyze --batch STUDIES_DIR --model BUNDLE --out OUT     # one sub-folder per study
    echosonar analyze --batch S1 S2 S3 --model BUNDLE --out OUT       # each path is a study

Single mode writes ``OUT/result.json`` and ``OUT/report.html`` (each atomically). Batch mode
writes ``OUT/<NNNN>-<study_key>/{result.json,report.html,batch_row.json}`` per input (NNNN = its
position, so two inputs never share a folder even when they hold the same study; each folder
atomically), keeps going past studies that fail, and writes ``OUT/summary.json`` +
``OUT/summary.md``, whose rows name inputs by position, never by file name. A batch killed and
restarted with the same inputs and settings keeps the studies already written (matched by a
salted fingerprint of the input's files and the settings) and reaches the same outputs.
Any bundle component can be replaced by a checkpoint folder (``--vlm runs/grpo``, ...).
Exit code: 0 all analysed, 1 some or all failed (or the outputs cannot be written), 2 bad
arguments or bundle (checked before any analysis, ``--out`` included).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

#: sane ranges of the numeric options (inclusive); anything outside is refused with exit code 2
THREADS = (1, 256)
MAX_NEW_TOKENS = (1, 16384)
BATCH_ROW = "batch_row.json"


def range_errors(checks: dict[str, tuple[Any, float, float]]) -> list[str]:
    """``{"--name": (value, lo, hi)}`` -> one message per value that is given (not None) and
    not a finite number in ``[lo, hi]``. Shared by analyze and serve."""
    import math

    errs = []
    for name, (value, lo, hi) in checks.items():
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi
        if not ok:
            errs.append(f"{name} must be between {lo:g} and {hi:g} (got {value!r})")
    return errs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("inputs", nargs="*", metavar="STUDY_DIR_OR_FILES",
                        help="DICOM/MP4/AVI files or folders of ONE study (with --batch: one "
                             "study per path, or one folder holding a sub-folder per study)")
    parser.add_argument("--model", metavar="BUNDLE", default=None,
                        help="model bundle folder (default: the shipped model, the "
                             "repository's models/echosonar-r, or $ECHOSONAR_MODEL; "
                             "`echosonar quickstart --train --out DIR` or `echosonar bundle` "
                             "make others)")
    parser.add_argument("--out", metavar="OUT", help="output folder")
    parser.add_argument("--batch", action="store_true",
                        help="analyse many studies; keep going past failures; write a summary")
    for comp in ("view-classifier", "detector", "encoder", "vlm"):
        parser.add_argument(f"--{comp}", metavar="DIR", default=None,
                            help=f"use this {comp} checkpoint instead of the bundle's")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"torch CPU threads, {THREADS[0]}-{THREADS[1]} (default 1: fastest "
                             "on a busy 2-core machine)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help=f"generation length limit, {MAX_NEW_TOKENS[0]}-{MAX_NEW_TOKENS[1]} "
                             "(default: the bundle's)")
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
    from echosonar.config import ConfigError, config_from_args
    from echosonar.io.atomic import unwritable_reason

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"echosonar analyze: {e}", file=sys.stderr)
        return 2
    errs = range_errors({"--threads": (args.threads, *THREADS),
                         "--max-new-tokens": (args.max_new_tokens, *MAX_NEW_TOKENS),
                         "app.threads": (cfg.app.threads, *THREADS)})
    if cfg.app.max_new_tokens:  # 0 = the bundle's value
        errs += range_errors({"app.max_new_tokens": (cfg.app.max_new_tokens, *MAX_NEW_TOKENS)})
    from echosonar.reason.decode import ENGINES

    if cfg.app.engine not in ENGINES:
        errs.append(f"app.engine must be one of {', '.join(ENGINES)}, not {cfg.app.engine!r}")
    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        errs.append(f"input not found: {', '.join(missing)}")
    why = unwritable_reason(args.out)
    if why:
        errs.append(f"--out: {why}")
    if errs:
        for e in errs:
            print(f"echosonar analyze: {e}", file=sys.stderr)
        return 2
    import torch

    from echosonar.app.bundle import bundle_from_args

    torch.set_num_threads(args.threads or cfg.app.threads)
    bundle = bundle_from_args(args, "analyze")
    if bundle is None:
        return 2
    if args.max_new_tokens is not None or cfg.app.max_new_tokens:
        bundle.spec.max_new_tokens = int(args.max_new_tokens or cfg.app.max_new_tokens)
    out = Path(args.out)
    if args.batch:
        return run_batch(batch_inputs([Path(p) for p in args.inputs]), bundle, cfg, out,
                         not args.no_html)
    return _single([Path(p) for p in args.inputs], bundle, cfg, out, not args.no_html)


def _single(inputs: list[Path], bundle: Any, cfg: Any, out: Path, html: bool) -> int:
    from echosonar.app.pipeline import AnalysisError, analyze_study

    try:
        analysis = analyze_study(inputs, bundle, cfg, progress=_printer())
    except AnalysisError as e:
        print(f"echosonar analyze: {e}", file=sys.stderr)
        return 1
    try:
        paths = write_outputs(analysis, out, html)
    except OSError as e:
        print(f"echosonar analyze: cannot write the outputs to {out}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    _print_summary(analysis.result, paths)
    return 0


def input_fingerprint(study: Path, settings: str, salt: str) -> str:
    """Salted hash of an input (its resolved path and every file's relative path, size and
    mtime) and of the run's settings: a restarted batch reuses a study's outputs only when
    neither changed. Non-reversible, so it may sit beside the outputs."""
    from echosonar.ingest.raw import salted_hash
    from echosonar.ingest.study import expand_paths

    study = study.resolve()
    parts = [str(study), settings]
    for f in expand_paths(study):
        st = f.stat()
        parts.append(f"{f.relative_to(study) if study.is_dir() else f.name}:{st.st_size}:"
                     f"{st.st_mtime_ns}")
    return salted_hash("\n".join(parts), salt, 32)


def _settings(bundle: Any, cfg: Any, html: bool) -> str:
    from echosonar.config.base import to_dict

    spec = bundle.spec
    return json.dumps({"model": str(spec.root), "components": spec.components,
                       "weights": bundle.info, "thresholds": spec.thresholds,
                       "max_new_tokens": spec.max_new_tokens, "html": html,
                       "config": to_dict(cfg)}, sort_keys=True, default=str)


def _done_row(out: Path, position: int, fingerprint: str) -> dict[str, Any] | None:
    """The row of input ``position`` written by an earlier run with the same fingerprint."""
    for d in sorted(out.glob(f"{position:04d}-*")):
        try:
            row = json.loads((d / BATCH_ROW).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if row.get("fingerprint") == fingerprint and (d / "result.json").is_file():
            return row
    return None


def run_batch(studies: list[Path], bundle: Any, cfg: Any, out: Path, html: bool,
              analyze: Any = None) -> int:
    """Analyse each input as one study (see module docstring); ``analyze(paths, bundle, cfg)``
    defaults to :func:`~echosonar.app.pipeline.analyze_study` (tests inject fakes)."""
    from echosonar.app.pipeline import analyze_study
    from echosonar.io.atomic import (
        atomic_dir,
        atomic_write_json,
        atomic_write_text,
        remove_stale_temps,
    )

    analyze = analyze or analyze_study
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out, recursive=False)  # a killed run's half-written folders
    settings, salt = _settings(bundle, cfg, html), cfg.ingest.salt
    rows: list[dict[str, Any]] = []
    for i, study in enumerate(studies, 1):
        t0 = time.perf_counter()
        row: dict[str, Any] = {"input": i}
        try:
            fp = input_fingerprint(study, settings, salt)
            if (done := _done_row(out, i, fp)) is not None:
                print(f"[{i}/{len(studies)}] input {i}: done earlier -> {out / done['folder']}",
                      file=sys.stderr)
                rows.append(done)
                continue
            analysis = analyze([study], bundle, cfg)
            r = analysis.result
            key = r["study_key"]
            folder = f"{i:04d}-{key}"
            row.update(status="ok", study_key=key, folder=folder, views=r["views"]["present"],
                       positive=[f["key"] for f in r["findings"] if f["positive"]],
                       answer=r["answer_findings"], warnings=len(r["warnings"]))
            row["seconds"] = round(time.perf_counter() - t0, 2)
            row["fingerprint"] = fp
            with atomic_dir(out / folder) as tmp:
                write_outputs(analysis, tmp, html)
                atomic_write_json(tmp / BATCH_ROW, row)
            print(f"[{i}/{len(studies)}] input {i}: ok -> {out / folder}", file=sys.stderr)
        except Exception as e:  # noqa: BLE001 - one bad study must not stop the batch
            msg = _without_path(f"{type(e).__name__}: {e}", study, f"input {i}")
            row = {"input": i, "status": "failed", "error": msg,
                   "seconds": round(time.perf_counter() - t0, 2)}
            print(f"[{i}/{len(studies)}] input {i}: FAILED: {msg}", file=sys.stderr)
        rows.append(row)
    _mark_shared_studies(rows)
    n_ok = sum(r["status"] == "ok" for r in rows)
    summary = {"studies": len(rows), "ok": n_ok, "failed": len(rows) - n_ok,
               "rows": [{k: v for k, v in r.items() if k != "fingerprint"} for r in rows],
               "model": bundle.spec.name}
    try:
        atomic_write_json(out / "summary.json", summary)
        atomic_write_text(out / "summary.md", _summary_md(summary))
    except OSError as e:
        print(f"echosonar analyze: cannot write the batch summary to {out}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    print(f"batch: {n_ok}/{len(rows)} studies analysed; summary in {out / 'summary.md'}",
          file=sys.stderr)
    return 0 if n_ok == len(rows) else 1


def _without_path(message: str, path: Path, name: str) -> str:
    """``message`` with the input's path (often a patient's name) replaced by ``name``: an
    unexpected error (an ``OSError`` quotes its file) must not carry it into the summary."""
    for p in sorted({str(path.resolve()), str(path.absolute()), str(path)}, key=len,
                    reverse=True):
        message = message.replace(p, name)
    return message


def _mark_shared_studies(rows: list[dict[str, Any]]) -> None:
    """Inputs holding the same study (same salted StudyInstanceUID) each keep their folder;
    their rows say which other inputs hold it, so none is silently taken for another."""
    by_key: dict[str, list[int]] = {}
    for r in rows:
        if r["status"] == "ok":
            by_key.setdefault(r["study_key"], []).append(r["input"])
    for r in rows:
        others = [j for j in by_key.get(r.get("study_key", ""), []) if j != r["input"]]
        if others:
            r["same_study_as"] = others


def _summary_md(s: dict[str, Any]) -> str:
    lines = [f"# Batch analysis — {s['ok']}/{s['studies']} studies analysed", "",
             "Research use only — not for diagnosis. Inputs are numbered in the order given.", "",
             "| input | study key | status | views | positive (score ≥ threshold) | seconds |",
             "|---|---|---|---|---|---|"]
    for r in s["rows"]:
        if r["status"] == "ok":
            same = (f" (same study as input {', '.join(map(str, r['same_study_as']))})"
                    if r.get("same_study_as") else "")
            lines.append(f"| {r['input']} | [{r['study_key']}]({r['folder']}/report.html) | "
                         f"ok{same} | {', '.join(r['views'])} | "
                         f"{', '.join(r['positive']) or '—'} | {r['seconds']} |")
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
