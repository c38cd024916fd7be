"""``echosonar ingest SRC --out CACHE``: files or a simulated set -> clip cache + summary.

SRC is a folder holding ``manifest.json`` (a simulated set: views and ground truth from the
manifest), or any mix of DICOM/video files and folders (grouped into studies by
StudyInstanceUID, videos by folder). Output: the clip cache (see :mod:`echosonar.ingest.cache`)
and ``ingest_summary.json`` (counts, views, skipped files with reasons; no identifiers).

Files are named in everything ingest writes or prints (stdout, the summary, the cache's ``source``
fields and warnings) as ``file #<position> [<salted hash of the path>]``, never by a name from
the user's disk; ``--keep-source-names`` opts back into base names. A run killed at any point
and restarted with the same arguments completes the cache to what an uninterrupted run writes
(same shards, same index order); half-written temporaries of the killed run are removed.
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
                        help="parallel worker processes, 1-256 (default: ingest.workers)")
    parser.add_argument("--keep-source-names", action="store_true",
                        help="name files by their base name in the outputs (default: position + "
                             "salted hash: file names often carry patient names)")
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
    from echosonar.io.atomic import atomic_write_json, remove_stale_temps, unwritable_reason

    try:
        cfg = config_from_args(args)
        if args.workers is not None:
            cfg.ingest.workers = args.workers
        if args.keep_source_names:
            cfg.ingest.keep_source_names = True
        as_ingest_config(cfg)  # ranges of every numeric setting, --workers included
    except ValueError as e:  # ConfigError is a ValueError too
        print(f"echosonar ingest: {e}", file=sys.stderr)
        return 2
    icfg = cfg.ingest
    workers = icfg.workers
    why = unwritable_reason(args.out)
    if why:
        print(f"echosonar ingest: --out: {why}", file=sys.stderr)
        return 2
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

        try:
            model = ViewClassifier.from_pretrained(model_dir)
        except (OSError, ValueError, RuntimeError) as e:  # CheckpointError: RuntimeError
            print(f"echosonar ingest: cannot load the view classifier {model_dir}: {e}",
                  file=sys.stderr)
            return 2
    skipped: list[tuple[str, str]] = []
    studies = []
    remove_stale_temps(args.out)  # shards a killed run left half-written
    try:
        writer = CacheWriter(args.out, icfg.cache_dtype, protocol=protocol)
    except CacheError as e:
        print(f"echosonar ingest: {e}", file=sys.stderr)
        return 2
    with writer:
        if manifest:
            done = () if args.overwrite else set(writer.entries)
            order = _manifest_keys(args.src[0], icfg.salt, args.split)
            stream = iter_manifest(args.src[0], cfg, workers, skipped, progress=True,
                                   skip_keys=done, splits=args.split,
                                   hints=not args.end_to_end)
        else:
            got, skipped = ingest_paths(args.src, cfg, workers, view_model=False, progress=True)
            order = [s.key for s in got]
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
        writer.reorder(order)  # a resumed run indexes studies as an uninterrupted one does
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


def _manifest_keys(root: str, salt: str, splits: list[str] | None) -> list[str]:
    """Cache keys of a simulated set's studies, in manifest order."""
    from echosonar.ingest.raw import salted_hash
    from echosonar.io.manifest import read_manifest

    _, records = read_manifest(root)
    return [salted_hash(r.key, salt) for r in records if splits is None or r.split in splits]


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
