"""Score ``echosonar analyze --batch`` outputs against a simulated set's ground truth.

    python -m echosonar.app.score inputs SIM --out INPUTS        # one folder of clips per study
    echosonar analyze --batch INPUTS --out BATCH [--model BUNDLE]
    python -m echosonar.app.score score BATCH --inputs INPUTS --truth SIM [--out SCORE.json]

``inputs`` copies each study's clip files (never its ``study.json`` ground truth) into
``INPUTS/<study key>/``, so ``analyze`` sees what a user's study would be. ``score`` maps each
batch row (inputs are numbered by position in sorted order, as ``analyze --batch`` numbers them)
back to its study, compares the row's answer (``answer``: the findings the report states; with
guided decoding, the label head at the bundle's thresholds) with the manifest labels and
reports macro balanced accuracy (:mod:`echosonar.utils.metrics`, one-class labels excluded)
with a bootstrap CI over studies (:func:`echosonar.evaluate.classification.classification_metrics`,
the numbers ``evaluate`` reports). Failed studies are counted and left out of the score.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any


def write_study_inputs(sim: str | Path, out: str | Path, split: str | None = None,
                       limit: int | None = None) -> list[Path]:
    """Copy each study's clip files into ``out/<key>/`` (ground truth left behind); returns the
    study folders in sorted order (the order ``analyze --batch out`` numbers them)."""
    from echosonar.io.manifest import read_manifest

    sim, out = Path(sim), Path(out)
    _, studies = read_manifest(sim)
    if split:
        studies = [s for s in studies if s.split == split]
    studies = studies[:limit] if limit else studies
    folders = []
    for s in studies:
        dest = out / s.key
        dest.mkdir(parents=True, exist_ok=True)
        for c in s.clips:
            src = sim / c.path
            if not (dest / src.name).is_file():
                shutil.copyfile(src, dest / src.name)
        folders.append(dest)
    return sorted(folders)


def score_batch(batch: str | Path, inputs: str | Path, sim: str | Path, n_boot: int = 1000,
                seed: int = 0) -> dict[str, Any]:
    """Macro BAcc (+ CI, per label) of a batch's answers against ``sim``'s manifest labels."""
    import numpy as np

    from echosonar.app.analyze_cli import batch_inputs
    from echosonar.evaluate.classification import classification_metrics, labels_to_array
    from echosonar.io.manifest import read_manifest
    from echosonar.taxonomy import LABEL_KEYS
    from echosonar.utils.metrics import macro_balanced_accuracy

    batch = Path(batch)
    summary = json.loads((batch / "summary.json").read_text())
    folders = batch_inputs([Path(inputs)])
    _, studies = read_manifest(sim)
    truth = {s.key: s.labels for s in studies}
    y_true, y_pred, failed, unmatched = [], [], 0, []
    for row in summary["rows"]:
        if row.get("status") != "ok":
            failed += 1
            continue
        key = folders[int(row["input"]) - 1].name
        if key not in truth:
            unmatched.append(key)
            continue
        y_true.append({k: int(truth[key][k]) for k in LABEL_KEYS})
        y_pred.append(list(row.get("answer") or []))
    if unmatched:
        raise ValueError(f"{len(unmatched)} batch inputs are not studies of {sim}: "
                         f"{unmatched[:3]}")
    if not y_true:
        raise ValueError(f"no analysed study in {batch} to score")
    t, p = labels_to_array(y_true), labels_to_array(y_pred)
    m = classification_metrics(t, p, None, LABEL_KEYS, n_boot=n_boot, seed=seed)
    ref = macro_balanced_accuracy(t, p, LABEL_KEYS)["macro_bacc"]
    assert np.isclose(ref, m["macro_balanced_accuracy"]), (ref, m["macro_balanced_accuracy"])
    return {"n_studies": len(y_true), "failed": failed,
            "macro_balanced_accuracy": m["macro_balanced_accuracy"],
            "macro_balanced_accuracy_ci": m.get("macro_balanced_accuracy_ci",
                                                (float("nan"), float("nan"))),
            "macro_f1": m["macro_f1"], "one_class_labels": m["one_class_labels"],
            "per_label": {k: {f: v[f] for f in ("n_pos", "sensitivity", "specificity",
                                                "balanced_accuracy")}
                          for k, v in m["per_label"].items()},
            "bootstrap": m["bootstrap"]}


def to_markdown(s: dict[str, Any]) -> str:
    lo, hi = s["macro_balanced_accuracy_ci"]
    lines = [f"{s['n_studies']} studies scored ({s['failed']} failed): macro BAcc "
             f"{100 * s['macro_balanced_accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}], macro F1 "
             f"{100 * s['macro_f1']:.1f}", "",
             "| label | pos | sens | spec | BAcc |", "|---|---|---|---|---|"]
    for k, v in s["per_label"].items():
        def pct(x: float) -> str:
            return "–" if x != x else f"{100 * x:.1f}"

        lines.append(f"| {k} | {v['n_pos']} | {pct(v['sensitivity'])} | "
                     f"{pct(v['specificity'])} | {pct(v['balanced_accuracy'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m echosonar.app.score", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("inputs", help="copy a simulated set's clips into one folder per study")
    a.add_argument("sim")
    a.add_argument("--out", required=True)
    a.add_argument("--split", default=None, help="only this split (default: every study)")
    b = sub.add_parser("score", help="score an analyze --batch folder against the manifest")
    b.add_argument("batch")
    b.add_argument("--inputs", required=True, help="the folder given to analyze --batch")
    b.add_argument("--truth", required=True, help="the simulated set (manifest.json)")
    b.add_argument("--out", default=None, help="write the score as JSON (+ .md beside it)")
    b.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)
    if args.cmd == "inputs":
        folders = write_study_inputs(args.sim, args.out, args.split)
        print(f"{len(folders)} studies -> {args.out}")
        return 0
    try:
        s = score_batch(args.batch, args.inputs, args.truth, args.bootstrap)
    except (OSError, ValueError, KeyError) as e:
        print(f"score: {e}", file=sys.stderr)
        return 1
    md = to_markdown(s)
    print(md, end="")
    if args.out:
        from echosonar.io.atomic import atomic_write_json, atomic_write_text

        atomic_write_json(Path(args.out), s)
        atomic_write_text(Path(args.out).with_suffix(".md"), md)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
