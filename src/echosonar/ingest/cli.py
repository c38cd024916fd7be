"""``echosonar ingest SRC --out CACHE``: files or a simulated set -> clip cache + summary.

SRC is a folder holding ``manifest.json`` (a simulated set: views and ground truth from the
manifest), or any mix of DICOM/video files and folders (grouped into studies by
StudyInstanceUID, videos by folder). Output: the clip cache (see :mod:`echosonar.ingest.cache`)
and ``ingest_summary.json`` (counts, views, skipped files with reasons; no identifiers).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("src", nargs="+", help="simulated set folder (manifest.json), or "
                        "DICOM/MP4/AVI files and folders")
    parser.add_argument("--out", required=True, help="clip cache folder (created; resumable)")
    parser.add_argument("--end-to-end", action="store_true",
                        help="simulated set: read the manifest for the scoring truth only "
                             "(labels, reports, split) and ingest every clip as a user's file "
                             "(views from --view-model, sector and phases from the images) -- "
                             "the cache `echosonar evaluate` scores by default. Without it a "
                             "simulated set is ingested with its true views, sectors, boxes and "
                             "phases (the oracle protocol training uses)")
    parser.add_argument("--split", action="append", default=None, metavar="SPLIT",
                        help="simulated set: ingest only this split (repeatable; default all)")
    parser.add_argument("--views", action="store_true",
                        help="print the view decision for every clip")
    parser.add_argument("--view-model", default=None, metavar="DIR",
                        help="view-classifier checkpoint for clips of unknown view "
                             "(default: ingest.view_model)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel worker processes (default: ingest.workers)")
    parser.add_argument("--overwrite", action="store_true",
                        help="re-ingest studies already in the cache")
    add_config_args(parser)


def _is_manifest(src: list[str]) -> bool:
    p = Path(src[0])
    return len(src) == 1 and ((p.is_dir() and (p / "manifest.json").is_file()) or
                              (p.is_file() and p.name == "manifest.json"))


def run(args: argparse.Namespace) -> int:
    from echosonar.config import config_from_args
    from echosonar.ingest.cache import CacheError, CacheWriter
    from echosonar.ingest.raw import as_ingest_config
    from echosonar.ingest.study import ingest_paths, iter_manifest, label_views, summarize
    from echosonar.io.atomic import atomic_write_json

    try:
        cfg = config_from_args(args)
        as_ingest_config(cfg)
    except ValueError as e:  # ConfigError is a ValueError too
        print(f"echosonar ingest: {e}", file=sys.stderr)
        return 2
    icfg = cfg.ingest
    workers = args.workers or icfg.workers
    model_dir = args.view_model or icfg.view_model or None
    for s in args.src:
        if not Path(s).exists():
            print(f"echosonar ingest: no such file or folder: {s}", file=sys.stderr)
            return 2
    manifest = _is_manifest(args.src)
    if (args.end_to_end or args.split) and not manifest:
        print("echosonar ingest: --end-to-end and --split apply to a simulated set (a folder "
              "with manifest.json); files and folders are always ingested end to end",
              file=sys.stderr)
        return 2
    if args.end_to_end and not model_dir:
        print("echosonar ingest: --end-to-end needs a view classifier (--view-model DIR or "
              "ingest.view_model): the views are the classifier's, as in `echosonar analyze`",
              file=sys.stderr)
        return 2
    protocol = "oracle" if manifest and not args.end_to_end else "end-to-end"
    model = None
    if model_dir:
        from echosonar.ingest.view_model import ViewClassifier

        model = ViewClassifier.from_pretrained(model_dir)
    skipped: list[tuple[str, str]] = []
    studies = []
    try:
        writer = CacheWriter(args.out, icfg.cache_dtype, protocol=protocol)
    except CacheError as e:
        print(f"echosonar ingest: {e}", file=sys.stderr)
        return 2
    with writer:
        if manifest:
            done = () if args.overwrite else set(writer.entries)
            stream = iter_manifest(args.src[0], cfg, workers, skipped, progress=True,
                                   skip_keys=done, splits=args.split,
                                   hints=not args.end_to_end)
        else:
            got, skipped = ingest_paths(args.src, cfg, workers, view_model=False, progress=True)
            stream = iter(got)
        for study in stream:
            given = {id(c): c.view for c in study.clips if c.view_conf > 0}
            if model is not None:
                _classify(study, model, icfg.view_min_conf, given, args.views)
            elif args.views:
                for c in study.clips:
                    tag = "given" if id(c) in given else "unknown (no --view-model)"
                    print(f"study {study.key[:10]} {c.source}: {c.view} [{tag}]")
            if not model and any(c.view_conf == 0 for c in study.clips):
                label_views([study], None)
            writer.add(study, overwrite=args.overwrite)
            studies.append(study)
    summary = summarize(studies, skipped)
    summary["cache_studies"] = len(writer.entries)
    summary["protocol"] = protocol
    atomic_write_json(Path(args.out) / "ingest_summary.json", summary)
    print(f"ingested {summary['studies']} studies, {summary['clips']} clips "
          f"({', '.join(f'{v}: {n}' for v, n in sorted(summary['views'].items()))}) "
          f"-> {args.out} ({summary['cache_studies']} studies in cache)")
    if skipped:
        print(f"skipped {len(skipped)} file(s):")
        for name, reason in skipped:
            print(f"  {name}: {reason}")
    return 0 if studies or summary["cache_studies"] else 1


def _classify(study, model, min_conf: float, given: dict[int, str], show: bool) -> None:  # noqa: ANN001
    """Label unknown clips; for clips with a given view, report what the classifier thinks."""
    from echosonar.ingest.view_model import predict_views
    from echosonar.taxonomy import OTHER_VIEW

    preds = predict_views(model, study.clips)
    for c, (view, conf) in zip(study.clips, preds, strict=True):
        if id(c) in given:
            if show:
                agree = "agrees" if view == c.view else "disagrees"
                print(f"study {study.key[:10]} {c.source}: {c.view} [given]; classifier {view} "
                      f"({conf:.2f}, {agree})")
            continue
        c.view, c.view_conf = (view if conf >= min_conf else OTHER_VIEW), max(conf, 1e-6)
        if show:
            print(f"study {study.key[:10]} {c.source}: {c.view} [classifier, conf {conf:.2f}]")
