"""Box operations in plain PyTorch (no torchvision).

Conventions: ``xyxy`` = ``[x0, y0, x1, y1]`` with x0 <= x1, y0 <= y1; ``cxcywh`` =
``[centre x, centre y, width, height]``. Every function takes ``[..., 4]`` tensors; the pairwise
ones (``box_iou``, ``generalized_box_iou``) take ``[N, 4]`` and ``[M, 4]`` and return ``[N, M]``,
the ``*_aligned`` ones take two ``[..., 4]`` tensors of the same shape and return ``[...]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

_EPS = 1e-7


def cxcywh_to_xyxy(b: Tensor) -> Tensor:
    """``[..., 4]`` centre/size -> corners.

    >>> cxcywh_to_xyxy(torch.tensor([0.5, 0.5, 0.2, 0.4])).tolist()
    [0.4000000059604645, 0.30000001192092896, 0.6000000238418579, 0.699999988079071]
    """
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def xyxy_to_cxcywh(b: Tensor) -> Tensor:
    """``[..., 4]`` corners -> centre/size."""
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_area(b: Tensor) -> Tensor:
    """``[..., 4]`` xyxy -> ``[...]`` area (0 for degenerate boxes)."""
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def _inter_union(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    # a, b broadcast against each other: [..., 4]
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    return inter, union


def _enclosing_area(a: Tensor, b: Tensor) -> Tensor:
    lt = torch.minimum(a[..., :2], b[..., :2])
    rb = torch.maximum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    return wh[..., 0] * wh[..., 1]


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU of ``a`` [N, 4] and ``b`` [M, 4] (xyxy) -> ``[N, M]``.

    >>> box_iou(torch.tensor([[0., 0., 2., 2.]]), torch.tensor([[1., 1., 3., 3.]])).item()
    0.1428571492433548
    """
    inter, union = _inter_union(a[:, None, :], b[None, :, :])
    return inter / union.clamp(min=_EPS)


def generalized_box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019) -> ``[N, M]`` in [-1, 1].

    GIoU = IoU - (|C| - |A u B|) / |C| with C the smallest enclosing box; unlike IoU it still
    has a gradient when the boxes do not overlap.
    """
    a, b = a[:, None, :], b[None, :, :]
    inter, union = _inter_union(a, b)
    encl = _enclosing_area(a, b)
    return inter / union.clamp(min=_EPS) - (encl - union) / encl.clamp(min=_EPS)


def box_iou_aligned(a: Tensor, b: Tensor) -> Tensor:
    """IoU of corresponding boxes: ``[..., 4]`` x ``[..., 4]`` -> ``[...]``."""
    inter, union = _inter_union(a, b)
    return inter / union.clamp(min=_EPS)


def generalized_box_iou_aligned(a: Tensor, b: Tensor) -> Tensor:
    """GIoU of corresponding boxes: ``[..., 4]`` x ``[..., 4]`` -> ``[...]``."""
    inter, union = _inter_union(a, b)
    encl = _enclosing_area(a, b)
    return inter / union.clamp(min=_EPS) - (encl - union) / encl.clamp(min=_EPS)


def clip_boxes01(b: Tensor) -> Tensor:
    """Clamp xyxy boxes to [0, 1] and make them well ordered (x0 <= x1, y0 <= y1)."""
    b = b.clamp(0.0, 1.0)
    x0 = torch.minimum(b[..., 0], b[..., 2])
    x1 = torch.maximum(b[..., 0], b[..., 2])
    y0 = torch.minimum(b[..., 1], b[..., 3])
    y1 = torch.maximum(b[..., 1], b[..., 3])
    return torch.stack([x0, y0, x1, y1], dim=-1)
