"""Bootstrap CI of the label-head row (``evaluate`` reports its macro BAcc without one).

    python bench/label_head_ci.py eval/sft_guided/predictions_test.json features_e2e

Reads the per-study label-head scores and the thresholds stored in a predictions file written
by ``echosonar evaluate CHECKPOINT ... --set eval.decoding=guided`` (the thresholds chosen on the
cache's val split), calls each label at ``score >= threshold`` (``encode.metrics.evaluate_scores``,
the rule of evaluate's label-head row) and prints macro balanced accuracy with the bootstrap CI
of ``evaluate.classification.classification_metrics`` (1,000 study resamples, seed 0) against
the labels of the features cache's test split.
"""

from __future__ import annotations

import json
import sys

import numpy as np


def main(pred_file: str, features: str, split: str = "test") -> int:
    from echosonar.evaluate.classification import classification_metrics, labels_to_array
    from echosonar.io.features import read_index
    from echosonar.taxonomy import LABEL_KEYS

    p = json.loads(open(pred_file).read())
    thr = np.array([p["thresholds"][k] for k in LABEL_KEYS])
    truth = {e["key"]: e for e in read_index(features)["studies"] if e.get("split") == split}
    keys = [k for k in p["studies"] if k in truth]
    scores = np.array([[p["studies"][k]["scores"][lab] for lab in LABEL_KEYS] for k in keys])
    y = labels_to_array([truth[k]["labels"] for k in keys])
    calls = (scores >= thr).astype(float)
    m = classification_metrics(y, calls, scores, LABEL_KEYS, n_boot=1000, seed=0)
    lo, hi = m["macro_balanced_accuracy_ci"]
    print(f"label head at val thresholds, {len(keys)} {split} studies: macro BAcc "
          f"{100 * m['macro_balanced_accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}], macro F1 "
          f"{100 * m['macro_f1']:.1f}, macro AUROC {100 * m['macro_auroc']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
