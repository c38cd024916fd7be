"""Detection losses for both assignment modes, with deep supervision.

Per decoder layer (final + ``aux``), given matches ``(query_idx, target_idx)`` per frame:

* presence: ``class`` mode — binary cross-entropy of every query's presence logit against
  "class k is in this frame" ([B, K]); ``hungarian`` mode — cross-entropy over K+1 classes with
  unmatched queries labelled no-object (weight ``no_object_weight``).
* boxes (matched pairs only): L1 on cxcywh and 1 - GIoU, each averaged over the number of
  ground-truth boxes in the batch (at least 1).

Total = sum over layers of ``w_presence * presence + w_l1 * l1 + w_giou * giou``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from echosonar.config.detect import DetectConfig
from echosonar.detect.boxes import cxcywh_to_xyxy, generalized_box_iou_aligned
from echosonar.detect.matcher import HungarianMatcher, Match, class_bound_match, sparse_targets


class DetectionLoss:
    """``__call__(outputs, present [B, K] bool, boxes [B, K, 4] cxcywh) -> (loss, logs)``;
    ``logs`` holds floats ``presence``, ``l1``, ``giou`` (final layer) and ``total``."""

    def __init__(self, cfg: DetectConfig):
        self.cfg = cfg
        self.matcher = HungarianMatcher(cfg.loss_presence, cfg.loss_l1, cfg.loss_giou) \
            if cfg.assign == "hungarian" else None

    def __call__(self, outputs: dict, present: Tensor, boxes: Tensor) -> tuple[Tensor, dict]:
        targets = sparse_targets(present, boxes)
        n_boxes = max(1, int(present.sum()))
        layers = [*outputs["aux"], {"logits": outputs["logits"], "boxes": outputs["boxes"]}]
        total = torch.zeros((), device=present.device)
        for out in layers:
            if self.matcher is None:
                matches = class_bound_match(present)
            else:
                matches = self.matcher(out["logits"], out["boxes"], targets)
            parts = self._layer(out, present, targets, matches, n_boxes)
            total = total + (self.cfg.loss_presence * parts["presence"] +
                             self.cfg.loss_l1 * parts["l1"] + self.cfg.loss_giou * parts["giou"])
        logs = {k: float(v.detach()) for k, v in parts.items()}
        logs["total"] = float(total.detach())
        return total, logs

    def _layer(self, out: dict, present: Tensor, targets: list[dict[str, Tensor]],
               matches: list[Match], n_boxes: int) -> dict[str, Tensor]:
        logits, pboxes = out["logits"], out["boxes"]
        bidx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(matches)])
        qidx = torch.cat([q for q, _ in matches])
        tboxes = torch.cat([t["boxes"][ti] for t, (_, ti) in zip(targets, matches, strict=True)])
        if self.matcher is None:
            presence = F.binary_cross_entropy_with_logits(logits, present.float())
        else:
            k = logits.shape[-1] - 1
            cls = torch.full(logits.shape[:2], k, dtype=torch.int64, device=logits.device)
            tlabels = torch.cat([t["labels"][ti] for t, (_, ti) in
                                 zip(targets, matches, strict=True)])
            cls[bidx, qidx] = tlabels
            weight = torch.ones(k + 1, device=logits.device)
            weight[k] = self.cfg.no_object_weight
            presence = F.cross_entropy(logits.flatten(0, 1), cls.flatten(), weight=weight)
        if qidx.numel() == 0:
            zero = pboxes.sum() * 0.0  # keeps the graph connected when no box is in the batch
            return {"presence": presence, "l1": zero, "giou": zero}
        pb = pboxes[bidx, qidx]
        l1 = F.l1_loss(pb, tboxes, reduction="sum") / n_boxes
        giou = (1.0 - generalized_box_iou_aligned(cxcywh_to_xyxy(pb),
                                                  cxcywh_to_xyxy(tboxes))).sum() / n_boxes
        return {"presence": presence, "l1": l1, "giou": giou}
