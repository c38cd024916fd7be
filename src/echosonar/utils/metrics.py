"""The project's one macro balanced accuracy (the paper's headline metric).

Definition. Per label, over the evaluated studies: balanced accuracy = (sensitivity +
specificity) / 2. A label whose ground truth has a single class in the evaluated split has no
balanced accuracy: one of the two rates is undefined (0 / 0). Such a label is **excluded** from
the macro mean and listed in ``one_class_labels``. Macro BAcc = mean over the remaining labels
(NaN when none remains).

Why exclude rather than substitute. scikit-learn's ``balanced_accuracy_score`` drops the empty
class and returns the other rate alone, so a label with no positive study in the split scores
its specificity: an all-negative predictor gets 100 % on every such label and the macro mean
rises for saying nothing (a baseline reached 60.7 % that way). Excluding them keeps the number a
measure of discrimination, and the list says how many labels it covers.

Why here. The baselines (``encode``), the SFT quick metrics and GRPO monitoring (``reason``) and
the results tables (``evaluate``) all report this number. A stage imports only shared modules
and upstream stages, so the single home is this shared module, not ``evaluate``.

Arrays are 0/1, study-major: ``[..., N, L]`` (``...`` = e.g. bootstrap resamples).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["balanced_accuracy", "macro_balanced_accuracy", "nan_mean"]


def balanced_accuracy(y_true: Any, y_pred: Any) -> np.ndarray:
    """Per-label balanced accuracy, NaN for a label with one class: ``[..., N, L] -> [..., L]``.

    >>> balanced_accuracy(np.array([[1], [0], [0], [0]]), np.array([[1], [1], [0], [0]]))
    array([0.83333333])
    >>> balanced_accuracy(np.array([[0], [0]]), np.array([[0], [0]]))  # no positives: undefined
    array([nan])
    """
    t = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    pos, neg = t.sum(-2), (~t).sum(-2)
    tp, tn = (t & p).sum(-2), (~t & ~p).sum(-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        bacc = (tp / np.maximum(pos, 1) + tn / np.maximum(neg, 1)) / 2
    return np.where((pos > 0) & (neg > 0), bacc, np.nan)


def nan_mean(x: Any, axis: int = -1) -> Any:
    """Mean over ``axis`` ignoring NaN; NaN (no warning) where every value is NaN.

    >>> float(nan_mean(np.array([0.5, np.nan, 1.0])))
    0.75
    """
    x = np.asarray(x, dtype=float)
    n = (~np.isnan(x)).sum(axis)
    s = np.nansum(x, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def macro_balanced_accuracy(y_true: Any, y_pred: Any,
                            labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Macro BAcc of ``[N, L]`` 0/1 arrays (column ``j`` is ``labels[j]``).

    Returns ``{"macro_bacc": float (NaN when no label has both classes), "per_label": {label:
    float | None}, "one_class_labels": [label, ...], "n_labels": labels in the mean}``.

    >>> r = macro_balanced_accuracy([[1, 0], [0, 0]], [[1, 1], [0, 0]], ["a", "b"])
    >>> r["macro_bacc"], r["per_label"], r["one_class_labels"], r["n_labels"]
    (1.0, {'a': 1.0, 'b': None}, ['b'], 1)
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.ndim != 2 or t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} must be the same [N, L] shape")
    labels = list(labels) if labels is not None else [str(j) for j in range(t.shape[1])]
    if len(labels) != t.shape[1]:
        raise ValueError(f"{len(labels)} label names for {t.shape[1]} columns")
    per = balanced_accuracy(t, p)
    return {
        "macro_bacc": float(nan_mean(per)),
        "per_label": {k: None if np.isnan(v) else float(v)
                      for k, v in zip(labels, per, strict=True)},
        "one_class_labels": [k for k, v in zip(labels, per, strict=True) if np.isnan(v)],
        "n_labels": int((~np.isnan(per)).sum()),
    }
