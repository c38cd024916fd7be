"""The shared ultrasound domain randomisation (echosonar.us_augment): the zoom it returns is the
one it applied, boxes follow it, and the detector's wrapper keeps its targets on the image."""

from __future__ import annotations

import torch

from echosonar.detect.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from echosonar.detect.data import us_augment_frames
from echosonar.us_augment import apex_zoom_boxes, us_augment


def test_apex_zoom_boxes_scales_about_the_top_centre():
    b = torch.tensor([[[0.25, 0.2, 0.75, 0.6]]])
    assert torch.allclose(apex_zoom_boxes(b, torch.ones(1, 2)), b)
    half = apex_zoom_boxes(b, torch.tensor([[0.5, 0.5]]))
    assert torch.allclose(half, torch.tensor([[[0.375, 0.1, 0.625, 0.3]]]))
    wide = apex_zoom_boxes(b, torch.tensor([[2.0, 1.0]]))  # lateral only
    assert torch.allclose(wide, torch.tensor([[[0.0, 0.2, 1.0, 0.6]]]))


def test_geometry_flag_changes_nothing_but_the_return():
    x = torch.rand(6, 2, 3, 32, 32)
    a = us_augment(x, torch.Generator().manual_seed(4), 1.0)
    b, zoom = us_augment(x, torch.Generator().manual_seed(4), 1.0, geometry=True)
    assert torch.equal(a, b) and zoom.shape == (6, 2)
    # clips left as simulated report no zoom
    same = [i for i in range(6) if torch.equal(b[i], x[i])]
    assert all(torch.equal(zoom[i], torch.ones(2)) for i in same)
    assert torch.equal(us_augment(x, torch.Generator(), 0.0, geometry=True)[1], torch.ones(6, 2))


def test_detector_boxes_follow_the_image():
    """A bright block on black where the box is: after the randomisation the block is still
    inside the transformed box (much brighter there than around it)."""
    n, s = 48, 64
    boxes = torch.zeros(n, 12, 4)
    present = torch.zeros(n, 12, dtype=torch.bool)
    frames = torch.zeros(n, 3, s, s)
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        x0, y0 = 0.15 + 0.4 * float(torch.rand((), generator=g)), 0.1 + 0.5 * float(
            torch.rand((), generator=g))
        xy = torch.tensor([x0, y0, x0 + 0.25, y0 + 0.25])
        boxes[i, 0] = xyxy_to_cxcywh(xy)
        present[i, 0] = True
        px = (xy * s).round().long()
        frames[i, :, px[1]:px[3], px[0]:px[2]] = 0.9
    out, keep, nb = us_augment_frames(frames, present, boxes, 1.0, torch.Generator().manual_seed(1))
    assert out.shape == frames.shape and (keep <= present).all() and keep[:, 0].sum() > n // 2
    assert (nb[~keep] == 0).all()
    moved = 0
    for i in torch.nonzero(keep[:, 0]).flatten().tolist():
        xy = (cxcywh_to_xyxy(nb[i, 0]) * s).round().long().clamp(0, s)
        inside = torch.zeros(s, s, dtype=torch.bool)
        inside[xy[1]:xy[3], xy[0]:xy[2]] = True
        img = out[i, 0]
        assert img[inside].mean() > 3 * img[~inside].mean() + 0.02, i
        moved += int(not torch.allclose(nb[i, 0], boxes[i, 0]))
    assert moved > 0  # some frames were zoomed, and their boxes with them
