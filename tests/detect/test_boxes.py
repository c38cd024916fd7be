import pytest
import torch

from echosonar.detect.boxes import (
    box_area,
    box_iou,
    box_iou_aligned,
    clip_boxes01,
    cxcywh_to_xyxy,
    generalized_box_iou,
    generalized_box_iou_aligned,
    xyxy_to_cxcywh,
)


def _rand_xyxy(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 2, generator=g) * 0.6
    wh = torch.rand(n, 2, generator=g) * 0.4 + 0.01
    return torch.cat([a, a + wh], 1)


def test_conversions_round_trip_and_known_values():
    b = _rand_xyxy(50)
    assert torch.allclose(cxcywh_to_xyxy(xyxy_to_cxcywh(b)), b, atol=1e-6)
    c = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    assert torch.allclose(cxcywh_to_xyxy(c), torch.tensor([[0.4, 0.3, 0.6, 0.7]]))
    assert torch.allclose(xyxy_to_cxcywh(torch.tensor([0.0, 0.0, 2.0, 4.0])),
                          torch.tensor([1.0, 2.0, 2.0, 4.0]))
    # batched leading dims work
    assert cxcywh_to_xyxy(torch.rand(3, 5, 4)).shape == (3, 5, 4)


def test_iou_known_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    iou = box_iou(a, b)[0]
    assert iou[0].item() == pytest.approx(1 / 7)
    assert iou[1].item() == pytest.approx(1.0)
    assert iou[2].item() == 0.0
    giou = generalized_box_iou(a, b)[0]
    assert giou[1].item() == pytest.approx(1.0)
    # disjoint: enclosing box 6x6=36, union 5 -> giou = 0 - 31/36
    assert giou[2].item() == pytest.approx(-31 / 36)
    # overlapping: enclosing 3x3=9, union 7 -> 1/7 - 2/9
    assert giou[0].item() == pytest.approx(1 / 7 - 2 / 9)
    assert box_area(b).tolist() == [4.0, 4.0, 1.0]


def test_iou_matches_brute_force_and_aligned_versions():
    a, b = _rand_xyxy(20, 1), _rand_xyxy(30, 2)
    iou, giou = box_iou(a, b), generalized_box_iou(a, b)
    assert iou.shape == (20, 30)
    assert ((iou >= 0) & (iou <= 1)).all() and ((giou >= -1) & (giou <= iou + 1e-6)).all()
    for i in (0, 7, 19):
        for j in (0, 11, 29):
            ix = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            iy = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            inter = ix * iy
            union = box_area(a[i]) + box_area(b[j]) - inter
            assert iou[i, j].item() == pytest.approx(float(inter / union), abs=1e-6)
    assert torch.allclose(box_iou_aligned(a, a[torch.arange(20)]), torch.ones(20))
    assert torch.allclose(generalized_box_iou_aligned(a, b[:20]), giou.diagonal())


def test_giou_gradient_for_disjoint_boxes():
    p = torch.tensor([[0.1, 0.1, 0.2, 0.2]], requires_grad=True)
    t = torch.tensor([[0.6, 0.6, 0.8, 0.8]])
    loss = (1 - generalized_box_iou_aligned(p, t)).sum()
    loss.backward()
    assert p.grad.abs().sum() > 0  # IoU alone would give zero gradient here


def test_clip_boxes01_orders_and_clamps():
    b = clip_boxes01(torch.tensor([[0.8, -0.2, 0.3, 1.4]]))
    assert b.tolist() == [[0.30000001192092896, 0.0, 0.800000011920929, 1.0]]
