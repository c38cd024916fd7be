"""Greedy evaluation used during GRPO (val monitoring) and for the SFT-vs-GRPO comparison.

Macro balanced accuracy is the project's one definition
(:func:`echosonar.utils.metrics.macro_balanced_accuracy`: mean over labels of (TPR + TNR) / 2,
labels with both classes present only); the evaluation stage owns the official metric tables,
this is the quick in-loop number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from echosonar.reason.rewards import (
    answer_findings,
    classification_iou_reward,
    parse,
    report_reward,
)
from echosonar.reason.rollout import rollout
from echosonar.schema import StudyFeatures
from echosonar.taxonomy import HEALTHY, LABEL_KEYS
from echosonar.utils.metrics import macro_balanced_accuracy


def answer_macro_bacc(pred: Sequence[set[str]], truth: Sequence[dict[str, int]]
                      ) -> tuple[float, dict[str, float]]:
    """``(macro BAcc, {label: BAcc})`` over ``LABEL_KEYS``; ``healthy`` is true when no finding
    is positive. Labels with only one class in ``truth`` are left out of the mean.

    >>> answer_macro_bacc([{"healthy"}, {"rv_enlargement"}], [{}, {"rv_enlargement": 1}])[0]
    1.0
    """
    shape = (len(truth), len(LABEL_KEYS))
    y = np.array([[int(k in _positives(t)) for k in LABEL_KEYS] for t in truth]).reshape(shape)
    p = np.array([[int(k in s) for k in LABEL_KEYS] for s in pred]).reshape(shape)
    res = macro_balanced_accuracy(y, p, LABEL_KEYS)
    return res["macro_bacc"], {k: v for k, v in res["per_label"].items() if v is not None}


def _positives(labels: dict[str, int]) -> set[str]:
    pos = {k for k in LABEL_KEYS if labels.get(k)}
    return pos or {HEALTHY.key}


@torch.no_grad()
def greedy_texts(policy: Any, studies: list[StudyFeatures], max_new_tokens: int,
                 batch_size: int = 4) -> list[str]:
    """One greedy completion per study (prefill-once decoding, special tokens kept)."""
    was = policy.training
    policy.eval()
    texts: list[str] = []
    for i in range(0, len(studies), batch_size):
        r = rollout(policy, studies[i:i + batch_size], num_samples=1,
                    max_new_tokens=max_new_tokens, do_sample=False)
        texts += r.texts
    policy.train(was)
    return texts


def greedy_eval(policy: Any, studies: list[StudyFeatures], max_new_tokens: int,
                batch_size: int = 4, report: bool = True) -> dict[str, Any]:
    """Greedy decode ``studies`` and score them: ``macro_bacc``, ``per_label`` (dict),
    ``well_formed``, ``iou`` (classification reward mean) and ``report_cosine``."""
    texts = greedy_texts(policy, studies, max_new_tokens, batch_size)
    labels = [sf.labels or {} for sf in studies]
    preds = [answer_findings(t) or set() for t in texts]
    macro, per = answer_macro_bacc(preds, labels)
    out: dict[str, Any] = {
        "macro_bacc": macro, "per_label": per, "n": len(studies),
        "well_formed": sum(parse(t).well_formed for t in texts) / max(len(texts), 1),
        "iou": _mean(classification_iou_reward(texts, labels=labels)),
    }
    if report:
        out["report_cosine"] = _mean(report_reward(texts, report=[sf.report for sf in studies]))
    return out


def _mean(xs: Sequence[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return sum(v) / len(v) if v else None
