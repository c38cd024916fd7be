"""``echosonar train view-classifier --data SIM_DIR_OR_CACHE --out DIR``.

Trains on the ``train`` split, reports accuracy on ``val`` and ``test`` (with synthetic OTHER
clips mixed in, as in training) and on every ``--eval NAME=DIR`` set (e.g. the ``shifted``
preset), and records what the model says about pydicom's real SonoSite A4C cine. Writes the
checkpoint (``model.safetensors`` + ``config.json``), ``config.yaml``, ``run_info.json`` and
``metrics.json`` into ``--out``, then fits the out-of-distribution guard
(:mod:`echosonar.ingest.view_ood`) into ``--out/ood_stats.safetensors`` (from 200 clips up).

``--ood-only`` trains nothing: it fits the guard for the classifier already in ``--out`` on the
train split of ``--data`` (calibrated on its val split and every ``--ood-calibration`` set) —
how a classifier trained before the guard existed gets one, or a guard is recalibrated. Ship
``ood_stats.safetensors`` with the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from echosonar.config import add_config_args

    parser.add_argument("--data", required=True, metavar="SIM_DIR_OR_CACHE",
                        help="simulated set (manifest.json) or clip cache (index.json)")
    parser.add_argument("--out", required=True, help="checkpoint folder")
    parser.add_argument("--eval", action="append", default=[], metavar="NAME=DIR",
                        help="extra evaluation set, all of its clips (repeatable)")
    parser.add_argument("--epochs", type=int, default=None, help="override view_train.epochs")
    parser.add_argument("--workers", type=int, default=None, help="ingest worker processes")
    parser.add_argument("--ood-only", action="store_true",
                        help="do not train: fit the out-of-distribution guard of the classifier "
                             "already in --out on the train split of --data (calibrated on its "
                             "val split and any --ood-calibration sets) and write "
                             "--out/ood_stats.safetensors")
    parser.add_argument("--ood-calibration", action="append", default=[], metavar="DIR",
                        help="extra held-out simulated set or clip cache (all its clips, e.g. "
                             "a fresh `echosonar simulate --seed N`) pooled with the val split "
                             "to calibrate the OOD guard's warning threshold (repeatable)")
    add_config_args(parser)


def real_fixture_prediction(model: Any, cfg: Any) -> dict[str, Any] | None:
    """View and confidence for pydicom's real SonoSite A4C example (None if unavailable)."""
    from echosonar.ingest.preproc import preprocess
    from echosonar.ingest.raw import read_file
    from echosonar.ingest.view_model import predict_probs

    try:
        from pydicom.data import get_testdata_file

        path = get_testdata_file("examples_ybr_color.dcm")
    except Exception:  # noqa: BLE001 - optional check
        return None
    if not path:
        return None
    clip = preprocess(read_file(path, cfg), cfg)
    p = predict_probs(model, [clip])[0]
    k = int(p.argmax())
    return {"file": "examples_ybr_color.dcm (SonoSite A4C)", "view": model.config.classes[k],
            "confidence": float(p[k]),
            "probs": {c: round(float(v), 4) for c, v in zip(model.config.classes, p,
                                                              strict=True)}}


def write_ood(model: Any, train: Any, val: Any, out: Path, tcfg: Any,
              calibration: Any = None) -> Any:
    """Fit the OOD guard (:mod:`echosonar.ingest.view_ood`; held out: ``val`` plus
    ``calibration``), save it next to the weights and print its thresholds."""
    import torch

    from echosonar.ingest.view_ood import MIN_FIT_CLIPS, fit_ood

    if len(train) + len(val) < MIN_FIT_CLIPS:
        print(f"OOD guard not fitted: {len(train) + len(val)} clips, fewer than "
              f"{MIN_FIT_CLIPS} (the app then warns that clips are not checked)")
        return None
    torch.set_num_threads(max(1, tcfg.threads))
    stats = fit_ood(model, train, val, seed=tcfg.seed, calibration=calibration)
    stats.meta["classifier_sha256"] = _weights_sha(out)
    path = stats.save(out)
    model.ood = stats
    print(f"OOD guard: warn at distance {stats.warn_at:.2f} ({stats.meta['warn_rule']}, "
          f"{stats.meta['held_out_studies']} held-out studies), reject at "
          f"{stats.reject_at:.2f} (held-out clean {stats.meta['val_clean']}, augmented "
          f"{stats.meta['val_augmented']}) -> {path}")
    return stats


def _weights_sha(out: Path) -> str | None:
    import json

    try:
        return json.loads((out / "config.json").read_text()).get("sha256")
    except (OSError, ValueError):
        return None


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from echosonar.config import config_from_args, save_yaml
    from echosonar.ingest.raw import as_ingest_config
    from echosonar.ingest.view_train import (
        evaluate,
        load_studies,
        train_view_classifier,
        view_data,
    )
    from echosonar.io.atomic import atomic_write_json
    from echosonar.utils.repro import run_info

    try:
        cfg = config_from_args(args)
        as_ingest_config(cfg)
    except ValueError as e:  # ConfigError is a ValueError too
        print(f"echosonar train view-classifier: {e}", file=sys.stderr)
        return 2
    if args.epochs is not None:
        cfg.ingest.view_train = dataclasses.replace(cfg.ingest.view_train, epochs=args.epochs)
    icfg, mcfg, tcfg = cfg.ingest, cfg.ingest.view, cfg.ingest.view_train
    if mcfg.image_size != icfg.image_size:
        print(f"note: view.image_size={mcfg.image_size} differs from ingest.image_size="
              f"{icfg.image_size}; clips are resized", file=sys.stderr)
    evals = []
    for item in args.eval:
        name, _, path = item.partition("=")
        if not path:
            name, path = Path(item).name, item
        evals.append((name, path))
    try:
        studies = load_studies(args.data, cfg, args.workers or icfg.workers, progress=True)
    except FileNotFoundError as e:
        print(f"echosonar train view-classifier: {e}", file=sys.stderr)
        return 2
    data = view_data(studies, list(mcfg.classes), tcfg.seed)
    train = data.subset("train")
    if tcfg.max_clips and len(train) > tcfg.max_clips:
        train = type(train)(train.frames[:tcfg.max_clips], train.labels[:tcfg.max_clips],
                            train.splits[:tcfg.max_clips])
    if len(train) == 0:
        print("echosonar train view-classifier: no training clips with a known view",
              file=sys.stderr)
        return 2
    from echosonar.ingest.view_ood import pool_view_data

    calibration = None
    for path in args.ood_calibration:
        try:
            extra = view_data(load_studies(path, cfg, args.workers or icfg.workers),
                              list(mcfg.classes), tcfg.seed)
        except FileNotFoundError as e:
            print(f"echosonar train view-classifier: --ood-calibration: {e}", file=sys.stderr)
            return 2
        extra.splits = ["calibration"] * len(extra)
        calibration = extra if calibration is None else pool_view_data(calibration, extra)
    if args.ood_only:
        from echosonar.ingest.view_model import ViewClassifier
        from echosonar.io.checkpoint import CheckpointError

        try:
            model = ViewClassifier.from_pretrained(args.out, ood=False).eval()
        except CheckpointError as e:
            print(f"echosonar train view-classifier: {e}", file=sys.stderr)
            return 2
        write_ood(model, train, data.subset("val"), Path(args.out), tcfg, calibration)
        return 0
    print(f"training on {len(train)} clips ({len(data)} in {args.data})")
    model, losses = train_view_classifier(train, mcfg, tcfg, progress=True)
    metrics: dict[str, Any] = {"train_clips": len(train), "final_loss": float(sum(losses[-20:]) /
                                                                            len(losses[-20:]))}
    for split in ("val", "test"):
        sub = data.subset(split)
        if len(sub):
            metrics[split] = evaluate(model, sub, tcfg)
            metrics[split + "_no_other"] = evaluate(model, sub, tcfg, with_other=False)
    for name, path in evals:
        extra = view_data(load_studies(path, cfg, args.workers or icfg.workers), list(
            mcfg.classes), tcfg.seed)
        extra.splits = ["all"] * len(extra)
        metrics[name] = evaluate(model, extra, tcfg, with_other=False)
    metrics["real_fixture"] = real_fixture_prediction(model, cfg)
    out = Path(args.out)
    model.save_pretrained(out, meta={"metrics": {k: v["accuracy"] for k, v in metrics.items()
                                                 if isinstance(v, dict) and "accuracy" in v}})
    save_yaml(cfg, out / "config.yaml")
    atomic_write_json(out / "run_info.json", run_info(tcfg.seed, data=str(args.data),
                                                      evals=dict(evals)))
    atomic_write_json(out / "metrics.json", metrics)
    write_ood(model, train, data.subset("val"), out, tcfg, calibration)
    for k, v in metrics.items():
        if isinstance(v, dict) and "accuracy" in v:
            print(f"{k:>14}: accuracy {v['accuracy']:.3f} on {v['n']} clips")
    if metrics["real_fixture"]:
        rf = metrics["real_fixture"]
        print(f"  real fixture: {rf['view']} (confidence {rf['confidence']:.2f})")
    print(f"saved view classifier to {out}")
    return 0
