"""``echosonar dataset build STUDIES... --labels labels.csv --out DATASET``.

Reads study folders (one sub-folder per study, its name the identifier; or, with
``--set dataset.id_from=uid``, DICOMs grouped by StudyInstanceUID) and a labels file, and writes
DATASET: a clip cache every training command reads (``train encoder --cache DATASET``,
``encode DATASET ...``) plus ``dataset.json`` (counts, where views and reports came from, every
problem with its row or study position). The file formats are in docs/TRAIN_YOUR_STUDIES.md.

Exit status: 0 when at least one study is usable (problems are listed, not fatal), 1 when none
is, 2 for a missing input file or an unusable setting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("inputs", nargs="+", metavar="STUDIES",
                        help="folder(s) whose sub-folders are studies (DICOM and/or MP4/AVI)")
    parser.add_argument("--labels", required=True, metavar="FILE",
                        help="labels CSV/TSV/JSONL: identifier + 0/1 per finding or a findings "
                             "list; optional split, report and measurement columns")
    parser.add_argument("--out", required=True, metavar="DATASET", help="dataset folder")
    parser.add_argument("--reports", default=None, metavar="FILE",
                        help="report text per study (CSV or JSONL: identifier + report, or "
                             "section columns); default: written from the labels")
    parser.add_argument("--views", default=None, metavar="FILE",
                        help="views CSV (study, file, view) overriding DICOM tags and the "
                             "classifier")
    parser.add_argument("--view-model", default=None, metavar="DIR",
                        help="view classifier for clips the views file and DICOM header do "
                             "not name (default: ingest.view_model)")
    parser.add_argument("--key-map", default=None, metavar="FILE",
                        help="also write identifier -> key (CSV) to FILE, outside DATASET; "
                             "keep it with your data, it re-identifies the dataset")
    parser.add_argument("--split-fractions", default=None, metavar="TRAIN,VAL,TEST",
                        help="fractions for studies without a split column "
                             "(default dataset.split_fractions)")
    parser.add_argument("--workers", type=int, default=None, help="ingest worker processes")
    parser.add_argument("--quiet", action="store_true", help="print only the summary line")
    add_config_args(parser)


def run(args: argparse.Namespace) -> int:
    from echosonar.config import config_from_args
    from echosonar.dataset.build import SUMMARY, BuildInputs, build_dataset
    from echosonar.io.atomic import unwritable_reason

    def fail(msg: str) -> int:
        print(f"echosonar dataset build: {msg}", file=sys.stderr)
        return 2

    try:
        cfg = config_from_args(args)
        if args.split_fractions:
            cfg.dataset.split_fractions = [float(x) for x in args.split_fractions.split(",")]
        if args.workers is not None:
            cfg.ingest.workers = args.workers
    except ValueError as e:
        return fail(str(e))
    for name, path in (("--labels", args.labels), ("--reports", args.reports),
                       ("--views", args.views)):
        if path and not Path(path).is_file():
            return fail(f"{name}: no such file: {path}")
    for p in args.inputs:
        if not Path(p).exists():
            return fail(f"no such folder: {p}")
    why = unwritable_reason(args.out)
    if why:
        return fail(f"--out: {why}")
    inp = BuildInputs([Path(p) for p in args.inputs], Path(args.labels), Path(args.out),
                      Path(args.reports) if args.reports else None,
                      Path(args.views) if args.views else None,
                      args.view_model or cfg.ingest.view_model or None,
                      Path(args.key_map) if args.key_map else None, None,
                      progress=not args.quiet)
    try:
        summary = build_dataset(inp, cfg)
    except (OSError, ValueError) as e:  # settings, --key-map place, view classifier checkpoint
        return fail(str(e))
    print_summary(summary, Path(args.out) / SUMMARY, args.quiet)
    return 0 if summary["studies"] else 1


def print_summary(s: dict, where: Path, quiet: bool = False, limit: int = 40) -> None:
    """The summary on stdout: counts, then the problems (the first ``limit`` of them)."""
    sp = s["splits"]
    print(f"dataset: {s['studies']} studies, {s['clips']} clips (train {sp['train']}, val "
          f"{sp['val']}, test {sp['test']}); {s['errors']} error(s), {s['warnings']} "
          f"warning(s) -> {where}")
    if not s["studies"]:
        print("nothing usable: no study has both a labels row and a clip of a known view "
              f"(problems in {where})", file=sys.stderr)
    if quiet:
        return
    vs = s["view_source"]
    print(f"views: {', '.join(f'{v} {n}' for v, n in s['views'].items()) or 'none'} "
          f"(views file {vs['views_file']}, DICOM header {vs['dicom_header']}, classifier "
          f"{vs['classifier']}); OTHER clips kept out: {s['other_clips_kept_out']}")
    r = s["reports"]
    print(f"reports: {r['from_user']} given, {r['from_labels']} "
          "written from labels")
    for p in s["problems"][:limit]:
        print(f"  {p['level']}: {p['where']}: {p['reason']}")
    if len(s["problems"]) > limit:
        print(f"  ... {len(s['problems']) - limit} more in {where}")
