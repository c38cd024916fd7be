"""``echosonar detect SRC --model DIR``: structures, tracks and measurements of clips or studies.

SRC is a clip cache (``index.json`` from ``echosonar ingest``), a simulated set
(``manifest.json``), or DICOM/MP4/AVI files and folders (ingested on the fly). Writes a JSON of
detections (``--out``), optionally a PNG overlay (end-diastole of each clip of the first study)
or an MP4 overlay (every frame), and with ``--eval`` scores the detector against the ground truth
of a simulated cache/set (COCO mAP per class, measurement MAE).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args
    from echosonar.taxonomy import CLASSIFIER_VIEWS

    parser.add_argument("src", nargs="+", help="clip cache folder, simulated set folder, or "
                        "DICOM/MP4/AVI files and folders")
    parser.add_argument("--model", required=True, metavar="DIR", help="detector checkpoint")
    parser.add_argument("--out", default=None, metavar="JSON", help="write detections here")
    parser.add_argument("--overlay", default=None, metavar="PNG_OR_MP4",
                        help="draw the first study's detections (.png: end-diastole of each "
                             "clip; .mp4: every frame)")
    parser.add_argument("--split", default=None, help="only studies of this split (cache/set)")
    parser.add_argument("--max-studies", type=int, default=0, help="stop after N studies")
    parser.add_argument("--view", default=None, choices=CLASSIFIER_VIEWS,
                        help="treat every clip as this view (e.g. a known A4C file)")
    parser.add_argument("--per-frame", action="store_true",
                        help="include per-frame scores and tracks in the JSON")
    parser.add_argument("--eval", action="store_true",
                        help="score against ground-truth boxes/measurements; prints COCO mAP")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    add_config_args(parser)


def _studies(src: list[str], cfg, split: str | None):
    from echosonar.ingest.cache import INDEX, iter_cache

    p = Path(src[0])
    if len(src) == 1 and p.is_dir() and (p / INDEX).is_file():
        return iter_cache(p, split, as_float=False)
    if len(src) == 1 and (p / "manifest.json").is_file():
        from echosonar.ingest.study import ingest_manifest

        return iter(ingest_manifest(p, cfg, splits=[split] if split else None))
    from echosonar.ingest.study import ingest_paths

    studies, skipped = ingest_paths(src, cfg)
    for name, reason in skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    return iter(studies)


def run(args: argparse.Namespace) -> int:
    import torch

    from echosonar.config import config_from_args
    from echosonar.detect.evaluate import evaluate_studies
    from echosonar.detect.infer import detect_study
    from echosonar.detect.measure import study_measurements
    from echosonar.detect.model import Detector
    from echosonar.io.atomic import atomic_write_json
    from echosonar.io.checkpoint import CheckpointError
    from echosonar.taxonomy import STRUCTURES

    torch.set_num_threads(max(1, args.threads))
    for s in args.src:
        if not Path(s).exists():
            print(f"echosonar detect: no such file or folder: {s}", file=sys.stderr)
            return 2
    try:
        model = Detector.from_pretrained(args.model).eval()
    except CheckpointError as e:
        print(f"echosonar detect: {e}", file=sys.stderr)
        return 2
    cfg = config_from_args(args)
    results, kept, first = [], [], None
    for i, study in enumerate(_studies(args.src, cfg, args.split)):
        if args.max_studies and i >= args.max_studies:
            break
        if args.view:
            for c in study.clips:
                c.view = args.view
        dets = detect_study(model, study)
        if first is None and study.clips:
            first = (study, dets)
        if args.eval:
            kept.append(study)
        results.append({"key": study.key, "split": study.split,
                        "measurements": study_measurements([d.measurements for d in dets]),
                        "clips": [d.to_dict(per_frame=args.per_frame) for d in dets]})
        for d in dets:
            found = ", ".join(f"{s} {d.clip_scores[k]:.2f}" for k, s in
                              enumerate(STRUCTURES) if d.present[k])
            print(f"{study.key[:12]} {d.view:<10} {found}")
    if not results:
        print("echosonar detect: no study found in the input", file=sys.stderr)
        return 1
    report = {"model": str(args.model), "studies": results}
    if args.eval:
        ev = evaluate_studies(model, kept)
        report["eval"] = ev
        c = ev["coco"]
        print(f"COCO mAP@0.5 = {c['map50']:.3f}  mAP@[.5:.95] = {c['map']:.3f}  "
              f"({c['frames']} frames, {ev['n_clips']} clips)")
        for s, v in c["per_class"].items():
            if v["ap50"] is not None:
                print(f"  {s:<7} AP50 {v['ap50']:.3f}  AP {v['ap']:.3f}  (n={v['n_gt']})")
        for k, v in ev["measure_mae"].items():
            if v is not None:
                print(f"  MAE {k:<13} {v:.3f}  (n={ev['measure_n'][k]})")
    if args.out:
        atomic_write_json(args.out, report)
        print(f"wrote {args.out}")
    if args.overlay and first is not None:
        from echosonar.detect.overlay import overlay_mp4, overlay_png

        study, dets = first
        if args.overlay.lower().endswith(".mp4"):
            overlay_mp4(study.clips, dets, args.overlay)
        else:
            overlay_png(study.clips, dets, args.overlay)
        print(f"wrote {args.overlay}")
    return 0
