import torch

from echosonar.detect.boxes import xyxy_to_cxcywh
from echosonar.detect.matcher import HungarianMatcher, class_bound_match, sparse_targets

K = 12


def test_empty_targets_give_empty_matches():
    m = HungarianMatcher()
    logits = torch.randn(2, 16, K + 1)
    boxes = torch.rand(2, 16, 4)
    tg = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
    out = m(logits, boxes, tg)
    assert len(out) == 2 and all(q.numel() == 0 and t.numel() == 0 for q, t in out)
    present = torch.zeros(2, K, dtype=torch.bool)
    assert all(q.numel() == 0 for q, _ in class_bound_match(present))


def test_more_predictions_than_targets_finds_the_obvious_assignment():
    tboxes = xyxy_to_cxcywh(torch.tensor([[0.1, 0.1, 0.3, 0.3], [0.6, 0.5, 0.9, 0.9]]))
    labels = torch.tensor([3, 7])
    boxes = torch.rand(1, 10, 4) * 0.1 + 0.45
    boxes[0, 8] = tboxes[0]   # query 8 sits on target 0
    boxes[0, 2] = tboxes[1]   # query 2 sits on target 1
    logits = torch.zeros(1, 10, K + 1)
    logits[0, 8, 3] = 5.0
    logits[0, 2, 7] = 5.0
    (q, t), = HungarianMatcher()(logits, boxes, [{"labels": labels, "boxes": tboxes}])
    assert q.tolist() == [8, 2] and t.tolist() == [0, 1]
    assert len(set(q.tolist())) == len(q)  # one query per target


def test_class_bound_match_is_identity_on_present_classes():
    present = torch.zeros(3, K, dtype=torch.bool)
    present[0, [0, 5, 11]] = True
    present[2, 4] = True
    boxes = torch.rand(3, K, 4)
    tg = sparse_targets(present, boxes)
    matches = class_bound_match(present)
    assert matches[0][0].tolist() == [0, 5, 11] and matches[0][1].tolist() == [0, 1, 2]
    assert matches[1][0].numel() == 0
    assert torch.equal(tg[2]["boxes"], boxes[2, [4]])
    # the match indexes the sparse targets consistently
    for (q, t), g in zip(matches, tg, strict=True):
        assert torch.equal(g["labels"][t], q)
