"""Re-score trained classifier baselines on another feature cache (the ``shifted`` preset).

``echosonar train baselines`` predicts only the cache it trained on. For the distribution-shift
rows the benchmark applies the *same* models, training prior and validation thresholds to the
shifted test features, using the encode stage's own ``predict`` and ``predictions_json``:

    python -m echosonar.evaluate.baseline_shift BASELINES_DIR TRAIN_FEATURES SHIFTED_FEATURES \\
        [--split test] [--set encode.baselines.single_view=A4C ...]

writes ``BASELINES_DIR/<method>/predictions_<split>_shifted.json`` for every method that has a
``predictions_test.json`` (its thresholds are re-used). ``attention_fusion_evidence`` also reads
the shifted cache's structure tokens and detector measurements; it standardises them with the
*training* statistics stored in its checkpoint (never refitted on the shifted set).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _load_model(method_dir: Path) -> Any:
    from echosonar.encode.baseline_models import (
        ClipClassifier,
        EvidenceFusionClassifier,
        FusionClassifier,
    )
    from echosonar.io.checkpoint import read_checkpoint_config

    kind = read_checkpoint_config(method_dir / "model")["kind"]
    cls = {c.checkpoint_kind: c
           for c in (ClipClassifier, FusionClassifier, EvidenceFusionClassifier)}.get(kind)
    if cls is None:
        raise ValueError(f"{method_dir / 'model'}: unknown baseline checkpoint kind {kind!r}")
    return cls.from_pretrained(method_dir / "model").eval()


def shifted_predictions(baselines: Path, train_features: Path, shifted_features: Path,
                        bcfg: Any, split: str = "test", suffix: str = "shifted") -> list[Path]:
    """Write ``<method>/predictions_<split>_<suffix>.json`` for every trained method."""
    from echosonar.encode.baseline_models import study_set
    from echosonar.encode.baselines import METHODS, predict, predictions_json, prevalence
    from echosonar.io.atomic import atomic_write_json
    from echosonar.io.features import iter_features

    train = study_set(iter_features(train_features, "train"))
    prior = prevalence(train.labels)
    ss = study_set(iter_features(shifted_features, split))
    written = []
    for method in METHODS:
        mdir = baselines / method
        ref = mdir / "predictions_test.json"
        if not ref.is_file():
            continue
        thresholds = json.loads(ref.read_text())["thresholds"]
        model = None if method == "prior" else _load_model(mdir)
        probs = predict(method, model, ss, prior, bcfg)
        path = mdir / f"predictions_{split}_{suffix}.json"
        atomic_write_json(path, predictions_json(method, split, ss, probs, thresholds),
                          indent=None)
        written.append(path)
    if not written:
        raise FileNotFoundError(f"no trained baselines (predictions_test.json) under {baselines}")
    return written


def main(argv: list[str] | None = None) -> int:
    from echosonar.config import add_config_args, config_from_args

    p = argparse.ArgumentParser(prog="python -m echosonar.evaluate.baseline_shift",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("baselines", type=Path)
    p.add_argument("train_features", type=Path)
    p.add_argument("shifted_features", type=Path)
    p.add_argument("--split", default="test")
    p.add_argument("--suffix", default="shifted",
                   help="written as <method>/predictions_<split>_<suffix>.json (e.g. 'e2e' for "
                        "the end-to-end cache of the same set)")
    add_config_args(p)
    args = p.parse_args(argv)
    try:
        cfg = config_from_args(args)
        for path in shifted_predictions(args.baselines, args.train_features,
                                        args.shifted_features, cfg.encode.baselines, args.split,
                                        args.suffix):
            print(f"wrote {path}")
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"baseline_shift: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
