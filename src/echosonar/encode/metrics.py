"""Multi-label metrics for the baselines: thresholds from validation, BAcc / F1 / AUROC.

Per label: balanced accuracy at the chosen threshold (the project's one definition,
:func:`echosonar.utils.metrics.macro_balanced_accuracy`), F1 of the positive class (sklearn) and
AUROC of the scores (sklearn). A label with only one class in the evaluated split has undefined
BAcc/AUROC (and F1 when it has no positives): it is reported as ``null`` with its counts and left
out of that macro mean (the table says how many labels the mean covers).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from echosonar.utils.metrics import macro_balanced_accuracy


def best_threshold(y: np.ndarray, s: np.ndarray, default: float = 0.5) -> float:
    """Threshold on scores ``s`` maximising balanced accuracy of ``s >= thr`` against ``y``.

    Exhaustive over midpoints between sorted distinct scores (O(n log n)). Ties go to the
    threshold nearest ``default``. Returns ``default`` when ``y`` has a single class.
    """
    y = np.asarray(y).astype(bool)
    s = np.asarray(s, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return default
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    tp = np.cumsum(y_sorted)
    fp = np.cumsum(~y_sorted)
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]   # cut only between distinct scores
    tpr = tp[last] / n_pos
    tnr = 1.0 - fp[last] / n_neg
    cut_scores = s_sorted[last]
    nxt = np.r_[cut_scores[1:], cut_scores[-1] - 1.0]
    thr = (cut_scores + nxt) / 2.0                      # predicting positive for s >= thr
    bacc = np.r_[0.5, (tpr + tnr) / 2.0]                # prepend "nothing positive"
    thr = np.r_[s_sorted[0] + 1.0, thr]
    best = np.flatnonzero(np.isclose(bacc, bacc.max()))
    return float(thr[best[np.argmin(np.abs(thr[best] - default))]])


def choose_thresholds(y: np.ndarray, scores: np.ndarray, label_keys: Sequence[str],
                      ) -> dict[str, float]:
    """Per-label thresholds maximising validation balanced accuracy."""
    return {k: best_threshold(y[:, i], scores[:, i]) for i, k in enumerate(label_keys)}


def evaluate_scores(y: np.ndarray, scores: np.ndarray, thresholds: dict[str, float],
                    label_keys: Sequence[str]) -> dict[str, Any]:
    """Metrics of ``scores`` ``[S, L]`` against ``y`` ``[S, L]`` (0/1) at ``thresholds``.

    Returns ``{"macro_bacc", "macro_f1", "macro_auroc", "n_labels_bacc", "n_studies",
    "per_label": {label: {"bacc", "f1", "auroc", "sens", "spec", "n_pos", "n_neg", "thr"}}}``
    with BAcc, F1 and AUROC as fractions (0..1).
    """
    from sklearn.metrics import f1_score, roc_auc_score

    y = np.asarray(y).astype(int)
    preds = (scores >= np.array([thresholds[k] for k in label_keys])).astype(int)
    bacc = macro_balanced_accuracy(y, preds, label_keys)
    per: dict[str, dict[str, Any]] = {}
    for i, k in enumerate(label_keys):
        yt, pred = y[:, i], preds[:, i]
        n_pos, n_neg = int(yt.sum()), int(len(yt) - yt.sum())
        both = n_pos > 0 and n_neg > 0
        per[k] = {
            "bacc": bacc["per_label"][k],
            "f1": float(f1_score(yt, pred, zero_division=0)) if n_pos else None,
            "auroc": float(roc_auc_score(yt, scores[:, i])) if both else None,
            "sens": float(pred[yt == 1].mean()) if n_pos else None,
            "spec": float(1 - pred[yt == 0].mean()) if n_neg else None,
            "n_pos": n_pos, "n_neg": n_neg, "thr": float(thresholds[k]),
        }
    f1s = [v["f1"] for v in per.values() if v["f1"] is not None]
    aucs = [v["auroc"] for v in per.values() if v["auroc"] is not None]
    return {
        "macro_bacc": bacc["macro_bacc"],
        "macro_f1": float(np.mean(f1s)) if f1s else math.nan,
        "macro_auroc": float(np.mean(aucs)) if aucs else math.nan,
        "n_labels_bacc": bacc["n_labels"], "n_studies": int(len(y)), "per_label": per,
    }
