"""Multi-label classification metrics as the paper reports them, plus bootstrap CIs.

Inputs are study-major 0/1 arrays in ``taxonomy.LABEL_KEYS`` order (``healthy`` included):

    y_true  [N, L]  ground truth
    y_pred  [N, L]  hard predictions (a generation's parsed answer set, or thresholded scores)
    y_score [N, L]  per-label scores in [0, 1] for AUROC (optional)

Definitions (per label; "pos"/"neg" count the ground truth):

* sensitivity = TP / pos, specificity = TN / neg (NaN when the denominator is 0);
* balanced accuracy = (sensitivity + specificity) / 2, and macro BAcc = its mean over labels:
  the paper's definition, computed by the project's one implementation
  (:mod:`echosonar.utils.metrics`, shared with the baselines, the label heads and the SFT/GRPO
  monitors). A label whose ground truth has one class in the evaluated split has no BAcc (NaN,
  JSON ``null``): it is excluded from the macro mean and listed in ``one_class_labels``
  (scikit-learn would return the other rate alone, so an all-negative predictor would score
  100 % on every label the split lacks). ``macro_balanced_accuracy_two_class`` is the same
  number, kept for readers of older metrics files. In a bootstrap resample, a label that has one
  class in that resample is left out of that resample's mean;
* F1 = scikit-learn ``f1_score`` with ``zero_division=0`` (so a label with no positives and no
  predicted positives scores 0, as the paper's macro F1 would count it);
* AUROC = Mann-Whitney U / (pos * neg) with average ranks for ties (identical to scikit-learn's
  ``roc_auc_score``); undefined (NaN) for a one-class label, and then excluded from
  ``macro_auroc``, with the excluded labels listed in ``auroc_undefined``.

The per-label formulas are vectorised so 1,000 bootstrap resamples over studies take well under
a second; tests check them against scikit-learn (BAcc on two-class labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from echosonar.taxonomy import LABEL_KEYS
from echosonar.utils.metrics import balanced_accuracy, nan_mean

__all__ = ["auroc", "balanced_accuracy", "bootstrap_indices", "classification_metrics", "f1",
           "labels_to_array", "percentile_ci", "rarest_labels"]

_BOOT_CHUNK = 100  # bootstrap resamples evaluated at once


def _counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """TP, FP, FN, TN summed over the study axis (-2): ``[..., N, L] -> [..., L]``."""
    t = y_true.astype(bool)
    p = y_pred.astype(bool)
    tp = (t & p).sum(-2)
    fp = (~t & p).sum(-2)
    fn = (t & ~p).sum(-2)
    tn = (~t & ~p).sum(-2)
    return tp, fp, fn, tn


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def f1(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Per-label F1 with ``zero_division=0``: ``[..., N, L] -> [..., L]``."""
    tp, fp, fn, _ = _counts(y_true, y_pred)
    den = 2 * tp + fp + fn
    return np.where(den > 0, 2 * tp / np.maximum(den, 1), 0.0)


def auroc(y_true: np.ndarray, y_score: np.ndarray) -> np.ndarray:
    """Per-label AUROC (NaN for one-class labels): ``[..., N, L] -> [..., L]``.

    >>> auroc(np.array([[1], [0], [1], [0]]), np.array([[0.9], [0.1], [0.4], [0.4]]))
    array([0.875])
    """
    from scipy.stats import rankdata

    t = y_true.astype(bool)
    ranks = rankdata(y_score, axis=-2)  # average ranks for ties
    pos = t.sum(-2)
    neg = t.shape[-2] - pos
    u = (ranks * t).sum(-2) - pos * (pos + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), u / np.maximum(pos * neg, 1), np.nan)


def _check(name: str, a: Any, n_labels: int, binary: bool) -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != n_labels:
        raise ValueError(f"{name} must be [N, {n_labels}], got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains NaN")
    if binary and not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError(f"{name} must hold only 0/1 values")
    return arr


def bootstrap_indices(n: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_boot, n]`` study indices drawn with replacement; the same seed gives the same draws.

    >>> bootstrap_indices(5, 2, seed=0).shape
    (2, 5)
    """
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval over resamples where the statistic is defined (NaNs dropped)."""
    s = np.asarray(samples, dtype=float)
    s = s[~np.isnan(s)]
    if s.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.percentile(s, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return (float(lo), float(hi))


def classification_metrics(y_true: Any, y_pred: Any, y_score: Any | None = None,
                           labels: Sequence[str] = LABEL_KEYS, n_boot: int = 1000,
                           seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """All classification numbers of the results table, with bootstrap CIs over studies.

    Args:
        y_true, y_pred: ``[N, L]`` 0/1 (see module docstring).
        y_score: ``[N, L]`` scores for AUROC, or None (AUROC then reported as NaN).
        labels: label keys, column order of the arrays.
        n_boot: bootstrap resamples of the N studies (0 disables CIs).
        seed: bootstrap seed (fixed => identical CIs on every run).

    Returns a dict with keys ``n_studies``, ``labels``, ``per_label`` ({key: {n_pos, n_neg,
    n_pred_pos, sensitivity, specificity, balanced_accuracy, balanced_accuracy_ci, f1, auroc,
    one_class}}) (``balanced_accuracy`` NaN for a one-class label), ``macro_balanced_accuracy``
    (+ ``_ci``; one-class labels excluded), ``macro_balanced_accuracy_two_class`` (the same),
    ``macro_f1`` (+ ``_ci``), ``macro_auroc`` (+ ``_ci``), ``one_class_labels``,
    ``auroc_undefined``, ``exact_match`` (fraction of studies with every label right),
    ``bootstrap`` ({n, seed, level}).
    """
    labels = list(labels)
    L = len(labels)
    t = _check("y_true", y_true, L, True)
    p = _check("y_pred", y_pred, L, True)
    if p.shape != t.shape:
        raise ValueError(f"y_pred shape {p.shape} != y_true shape {t.shape}")
    n = t.shape[0]
    if n == 0:
        raise ValueError("no studies to evaluate")
    s = None
    if y_score is not None:
        s = _check("y_score", y_score, L, False)
        if s.shape != t.shape:
            raise ValueError(f"y_score shape {s.shape} != y_true shape {t.shape}")

    tp, fp, fn, tn = _counts(t, p)
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    bacc, f1s = balanced_accuracy(t, p), f1(t, p)
    auc = auroc(t, s) if s is not None else np.full(L, np.nan)
    pos, neg = tp + fn, tn + fp
    one_class = (pos == 0) | (neg == 0)

    out: dict[str, Any] = {
        "n_studies": int(n), "labels": labels,
        "macro_balanced_accuracy": float(nan_mean(bacc)),
        "macro_balanced_accuracy_two_class": float(nan_mean(bacc)),
        "macro_f1": float(f1s.mean()),
        "macro_auroc": float(nan_mean(auc)),
        "one_class_labels": [k for k, oc in zip(labels, one_class, strict=True) if oc],
        "auroc_undefined": [k for k, a in zip(labels, auc, strict=True) if np.isnan(a)],
        "exact_match": float((t == p).all(1).mean()),
    }
    per_label = {}
    for j, k in enumerate(labels):
        per_label[k] = {
            "n_pos": int(pos[j]), "n_neg": int(neg[j]), "n_pred_pos": int(tp[j] + fp[j]),
            "sensitivity": float(sens[j]), "specificity": float(spec[j]),
            "balanced_accuracy": float(bacc[j]), "f1": float(f1s[j]), "auroc": float(auc[j]),
            "one_class": bool(one_class[j]),
        }
    if n_boot > 0:
        idx = bootstrap_indices(n, n_boot, seed)
        tb_all, pb_all = t.astype(bool), p.astype(bool)
        b_bacc, b_f1, b_auc = [], [], []
        # Chunks of resamples keep memory at ~chunk * N * L values, not n_boot * N * L.
        for c in range(0, n_boot, _BOOT_CHUNK):
            ic = idx[c:c + _BOOT_CHUNK]
            tb, pb = tb_all[ic], pb_all[ic]  # [b, N, L]
            b_bacc.append(balanced_accuracy(tb, pb))
            b_f1.append(f1(tb, pb).mean(1))
            if s is not None:
                b_auc.append(nan_mean(auroc(tb, s[ic])))
        bacc_b = np.concatenate(b_bacc)  # [B, L]
        out["macro_balanced_accuracy_ci"] = percentile_ci(nan_mean(bacc_b), level)
        out["macro_f1_ci"] = percentile_ci(np.concatenate(b_f1), level)
        out["macro_auroc_ci"] = (percentile_ci(np.concatenate(b_auc), level) if s is not None
                                 else (float("nan"), float("nan")))
        for j, k in enumerate(labels):
            per_label[k]["balanced_accuracy_ci"] = percentile_ci(bacc_b[:, j], level)
    out["per_label"] = per_label
    out["bootstrap"] = {"n": int(n_boot), "seed": int(seed), "level": level, "unit": "study"}
    return out


def rarest_labels(y_true: Any, labels: Sequence[str] = LABEL_KEYS, k: int = 4,
                  exclude: Sequence[str] = ("healthy",)) -> list[str]:
    """The ``k`` labels with the fewest positives in ``y_true`` (ties broken by label order).

    The table reports these labels' BAcc; pass the *training* labels so the choice does not
    depend on the model being scored.

    >>> rarest_labels(np.array([[1, 0, 1], [1, 0, 0]]), ["a", "b", "c"], k=2, exclude=())
    ['b', 'c']
    """
    arr = np.asarray(y_true)
    counts = arr.sum(0)
    order = sorted((int(counts[j]), j) for j, key in enumerate(labels) if key not in exclude)
    return [labels[j] for _, j in order[:k]]


def labels_to_array(rows: Sequence[dict[str, int] | set[str] | Sequence[str]],
                    labels: Sequence[str] = LABEL_KEYS) -> np.ndarray:
    """Study label dicts ({key: 0/1}) or label-key sets -> ``[N, L]`` float array.

    Unknown keys raise ``ValueError`` (a typo must not silently become a negative).

    >>> labels_to_array([{"a": 1, "b": 0}, {"b"}], ["a", "b"]).tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    known = set(labels)
    out = np.zeros((len(rows), len(labels)), dtype=float)
    col = {k: j for j, k in enumerate(labels)}
    for i, row in enumerate(rows):
        items = row.items() if isinstance(row, dict) else ((k, 1) for k in row)
        for k, v in items:
            if k not in known:
                raise ValueError(f"unknown label {k!r}; known labels: {', '.join(labels)}")
            out[i, col[k]] = float(bool(v))
    return out
