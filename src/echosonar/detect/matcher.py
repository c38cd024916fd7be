"""Assigning predictions to ground-truth boxes.

Two assignments, one per ``DetectConfig.assign`` mode:

* ``class``: query ``k`` is bound to structure class ``k``. In our data every class appears at
  most once per frame (one LV per view), so the assignment is fixed and needs no search: the
  target of query ``k`` is the class-``k`` box when present, else "absent".
* ``hungarian``: DETR's bipartite matching over free queries, with the cost
  ``w_class * (-p(class)) + w_l1 * L1(cxcywh) + w_giou * (-GIoU)`` minimised by
  ``scipy.optimize.linear_sum_assignment``. Kept as the general fallback for data where a class
  can appear several times per frame.

Targets everywhere use the dense per-frame form built by the data pipeline:
``present`` bool ``[B, K]`` and ``boxes`` float ``[B, K, 4]`` (cxcywh in 0..1; rows of absent
classes are ignored). :func:`sparse_targets` turns it into DETR's per-frame lists.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from echosonar.detect.boxes import cxcywh_to_xyxy, generalized_box_iou

Match = tuple[Tensor, Tensor]  # (query indices [n], target indices [n]), int64


def sparse_targets(present: Tensor, boxes: Tensor) -> list[dict[str, Tensor]]:
    """Dense ``present`` [B, K], ``boxes`` [B, K, 4] -> per frame ``{"labels": [n],
    "boxes": [n, 4]}`` with n = number of classes present in that frame (may be 0)."""
    out = []
    for b in range(present.shape[0]):
        labels = torch.nonzero(present[b], as_tuple=False).flatten()
        out.append({"labels": labels, "boxes": boxes[b, labels]})
    return out


def class_bound_match(present: Tensor) -> list[Match]:
    """Fixed assignment for class-bound queries: query k <-> the class-k target, per frame.

    Target indices refer to :func:`sparse_targets` order (classes present, ascending), so both
    modes hand the loss the same kind of match list.
    """
    out = []
    for b in range(present.shape[0]):
        labels = torch.nonzero(present[b], as_tuple=False).flatten()
        out.append((labels.clone(), torch.arange(labels.numel(), dtype=torch.int64)))
    return out


class HungarianMatcher:
    """DETR's matcher. ``__call__(logits [B, Q, K+1], boxes [B, Q, 4] cxcywh, targets)`` returns
    one ``(query_idx, target_idx)`` pair of int64 tensors per frame, each of length
    ``min(Q, n_targets)`` (empty when a frame has no target)."""

    def __init__(self, cost_class: float = 1.0, cost_l1: float = 5.0, cost_giou: float = 2.0):
        if cost_class == 0 and cost_l1 == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: all costs are zero")
        self.cost_class, self.cost_l1, self.cost_giou = cost_class, cost_l1, cost_giou

    @torch.no_grad()
    def __call__(self, logits: Tensor, boxes: Tensor,
                 targets: list[dict[str, Tensor]]) -> list[Match]:
        bsz = logits.shape[0]
        if len(targets) != bsz:
            raise ValueError(f"HungarianMatcher: {len(targets)} targets for a batch of {bsz}")
        prob = logits.float().softmax(-1)
        out: list[Match] = []
        for b, tgt in enumerate(targets):
            labels, tboxes = tgt["labels"], tgt["boxes"]
            if labels.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                out.append((empty, empty.clone()))
                continue
            c_class = -prob[b][:, labels]                                   # [Q, n]
            c_l1 = torch.cdist(boxes[b].float(), tboxes.float(), p=1)        # [Q, n]
            c_giou = -generalized_box_iou(cxcywh_to_xyxy(boxes[b].float()),
                                          cxcywh_to_xyxy(tboxes.float()))  # [Q, n]
            cost = self.cost_class * c_class + self.cost_l1 * c_l1 + self.cost_giou * c_giou
            qi, ti = _assign(cost.cpu().numpy())
            out.append((torch.as_tensor(qi, dtype=torch.int64),
                        torch.as_tensor(ti, dtype=torch.int64)))
        return out


def _assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment

    if not np.isfinite(cost).all():
        raise ValueError("HungarianMatcher: non-finite matching cost (NaN in predictions?)")
    qi, ti = linear_sum_assignment(cost)
    order = np.argsort(ti)  # stable: matches listed in target order
    return qi[order], ti[order]
