"""Greedy evaluation used during GRPO (val monitoring) and for the SFT-vs-GRPO comparison.

Macro balanced accuracy here follows the paper's definition (mean over labels of
(TPR + TNR) / 2, labels with both classes present only); the evaluation stage owns the official
metric tables, this is the quick in-loop number.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def macro_balanced_accuracy(pred: Sequence[set[str]], truth: Sequence[dict[str, int]]
                            ) -> tuple[float, dict[str, float]]:
    """``(macro BAcc, {label: BAcc})`` over ``LABEL_KEYS``; ``healthy`` is true when no finding
    is positive. Labels with only one class in ``truth`` are left out of the mean.

    >>> macro_balanced_accuracy([{"healthy"}, {"rv_enlargement"}],
    ...                         [{}, {"rv_enlargement": 1}])[0]
    1.0
    """
    per: dict[str, float] = {}
    for k in LABEL_KEYS:
        y = [int(k in _positives(t)) for t in truth]
        p = [int(k in s) for s in pred]
        pos, neg = sum(y), len(y) - sum(y)
        if not pos or not neg:
            continue
        tpr = sum(a and b for a, b in zip(p, y, strict=True)) / pos
        tnr = sum((not a) and (not b) for a, b in zip(p, y, strict=True)) / neg
        per[k] = (tpr + tnr) / 2
    return (sum(per.values()) / len(per) if per else float("nan")), per


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
    macro, per = macro_balanced_accuracy(preds, labels)
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
