"""Training data for the detector: frames + dense per-class targets, sampling and augmentation.

A :class:`FrameSet` holds every frame of a set of clips in memory as uint8 (a 64x64 RGB frame is
12 KiB, so ten thousand frames are ~120 MiB)::

    frames  uint8 [N, 3, S, S]   B-mode grey replicated to RGB; colour clips as they are
    present bool  [N, K]         class k is in frame n
    boxes   float [N, K, 4]      cxcywh in 0..1 of the frame (rows of absent classes are 0)
    views   int64 [N]            model.VIEW_INDEX of the clip's view
    clip    int64 [N]            clip id (frames of a clip are contiguous)

Ground truth comes from ``Clip.boxes`` (per frame ``{structure: [x0, y0, x1, y1]}`` in pixels of
``Clip.frames``), as ingest attaches it for simulated studies.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from echosonar.detect.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from echosonar.detect.model import OTHER_INDEX, VIEW_INDEX
from echosonar.schema import Clip, Study
from echosonar.taxonomy import STRUCTURE_INDEX, STRUCTURES

K = len(STRUCTURES)


def clip_targets(clip: Clip) -> tuple[np.ndarray, np.ndarray]:
    """``clip.boxes`` -> ``present`` bool [T, K] and ``boxes`` float32 [T, K, 4] (xyxy in 0..1).

    Raises ``ValueError`` when the clip has no ground truth or it does not fit the frames.
    """
    if clip.boxes is None:
        raise ValueError(f"clip {clip.source or clip.view!r} has no ground-truth boxes")
    t, _, h, w = clip.frames.shape
    if len(clip.boxes) != t:
        raise ValueError(f"clip {clip.source or clip.view!r}: {len(clip.boxes)} box frames for "
                         f"{t} image frames")
    present = np.zeros((t, K), bool)
    boxes = np.zeros((t, K, 4), np.float32)
    scale = np.array([w, h, w, h], np.float32)
    for i, fb in enumerate(clip.boxes):
        for name, b in fb.items():
            if name not in STRUCTURE_INDEX:
                raise ValueError(f"clip {clip.source or clip.view!r}: unknown structure {name!r}")
            bb = np.clip(np.asarray(b, np.float32) / scale, 0.0, 1.0)
            if bb[2] - bb[0] <= 0 or bb[3] - bb[1] <= 0:
                continue  # degenerate after clipping: nothing to detect
            k = STRUCTURE_INDEX[name]
            present[i, k] = True
            boxes[i, k] = bb
    return present, boxes


def to_rgb_uint8(frames: np.ndarray, size: int) -> np.ndarray:
    """``[T, C, H, W]`` float 0..1 (or uint8), C = 1 or 3 -> uint8 ``[T, 3, size, size]``."""
    x = torch.as_tensor(np.asarray(frames))
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ValueError(f"frames must have 1 or 3 channels, got shape {tuple(x.shape)}")
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


@dataclass
class FrameSet:
    frames: Tensor
    present: Tensor
    boxes: Tensor
    views: Tensor
    clip: Tensor

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def n_clips(self) -> int:
        return int(self.clip.max()) + 1 if len(self) else 0


def build_frameset(studies: Iterable[Study], size: int, max_clips: int = 0) -> FrameSet:
    """Collect every clip with ground-truth boxes into one :class:`FrameSet` (clips without
    boxes are skipped; ``max_clips`` > 0 caps the number of clips)."""
    fr, pr, bx, vw, cl = [], [], [], [], []
    n = 0
    for study in studies:
        for c in study.clips:
            if c.boxes is None:
                continue
            if max_clips and n >= max_clips:
                break
            p, b = clip_targets(c)
            fr.append(to_rgb_uint8(c.frames, size))
            pr.append(p)
            bx.append(xyxy_to_cxcywh(torch.as_tensor(b)).numpy() * p[..., None])
            vw.append(np.full(len(p), VIEW_INDEX.get(c.view, OTHER_INDEX), np.int64))
            cl.append(np.full(len(p), n, np.int64))
            n += 1
    if not fr:
        raise ValueError("no clip with ground-truth boxes found (is this a simulated cache?)")
    return FrameSet(torch.as_tensor(np.concatenate(fr)), torch.as_tensor(np.concatenate(pr)),
                    torch.as_tensor(np.concatenate(bx)), torch.as_tensor(np.concatenate(vw)),
                    torch.as_tensor(np.concatenate(cl)))


def _clip_spans(fs: FrameSet) -> list[tuple[int, int]]:
    starts = torch.nonzero(torch.diff(fs.clip, prepend=fs.clip[:1] - 1)).flatten().tolist()
    return list(zip(starts, starts[1:] + [len(fs)], strict=True))


def repeat_factors(fs: FrameSet, threshold: float) -> tuple[Tensor, Tensor]:
    """Repeat-factor sampling (Gupta et al., LVIS 2019) at clip level.

    With f_k the fraction of clips showing class k, class k's factor is
    ``max(1, sqrt(threshold / f_k))`` and a clip's factor that of its rarest class. Returns
    ``(factor [n_clips] float, rarest [n_clips] int64)`` (rarest = -1 for clips without boxes).
    Jets and effusions are in a few percent of clips; without this they are rarely seen.
    """
    spans = _clip_spans(fs)
    has = torch.stack([fs.present[s:e].any(0) for s, e in spans])      # [n_clips, K]
    freq = has.float().mean(0)
    r_k = torch.where(freq > 0, (threshold / freq.clamp(min=1e-9)).sqrt(), torch.ones(K))
    r_k = r_k.clamp(min=1.0) if threshold > 0 else torch.ones(K)
    per = torch.where(has, r_k[None], torch.zeros(1))
    factor, rarest = per.max(1)
    rarest = torch.where(has.any(1), rarest, torch.full_like(rarest, -1))
    return factor.clamp(min=1.0), rarest


def epoch_indices(fs: FrameSet, per_clip: int, gen: torch.Generator,
                  repeat_threshold: float = 0.0) -> Tensor:
    """A shuffled epoch: ``per_clip`` distinct random frames of every clip (all when fewer),
    plus, with repeat-factor sampling, ``per_clip * (factor - 1)`` extra frames (stochastic
    rounding) drawn from the frames that show the clip's rarest class."""
    spans = _clip_spans(fs)
    factor, rarest = repeat_factors(fs, repeat_threshold) if repeat_threshold > 0 else \
        (torch.ones(len(spans)), torch.full((len(spans),), -1))
    picks = []
    for c, (s, e) in enumerate(spans):
        picks.append(s + torch.randperm(e - s, generator=gen)[:per_clip])
        extra = per_clip * (float(factor[c]) - 1.0)
        n_extra = int(extra) + int(torch.rand(1, generator=gen).item() < extra - int(extra))
        if n_extra and int(rarest[c]) >= 0:
            frames = s + torch.nonzero(fs.present[s:e, int(rarest[c])]).flatten()
            picks.append(frames[torch.randint(len(frames), (n_extra,), generator=gen)])
    idx = torch.cat(picks)
    return idx[torch.randperm(len(idx), generator=gen)]


def augment(frames: Tensor, present: Tensor, boxes: Tensor, strength: float,
            gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Batched augmentation. frames float [B, 3, S, S] 0..1; boxes cxcywh [B, K, 4].

    Geometry: zoom 0.6..1.25 and shift +-8 % (boxes follow; a box with < 40 % of its area left
    in view becomes absent) — covers other depths and sector widths (a real 19 cm-deep A4C shows
    the heart at ~0.7x the simulator's scale). Intensity: gain, gamma (0.7..1.4),
    Gaussian blur (coarser speckle of lower-frequency probes) and noise, on the B-mode part only
    (colour pixels keep their hue so jets stay recognisable). No flips: left/right is anatomy.
    """
    if strength <= 0:
        return frames, present, boxes
    b = frames.shape[0]
    dev = frames.device

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*(shape or (b,)), generator=gen).to(dev)

    zoom = torch.exp(u(-0.5, 0.22) * strength)  # 0.6..1.25: deeper settings shrink the heart
    shift = u(-0.08, 0.08, b, 2) * strength
    # grid_sample: output normalised coords p map to input p / zoom + shift
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = 1 / zoom
    theta[:, 1, 1] = 1 / zoom
    theta[:, :, 2] = shift * 2
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
    frames = F.grid_sample(frames, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=False)
    xy = cxcywh_to_xyxy(boxes) * 2 - 1                              # [B, K, 4] in -1..1
    sh = shift.repeat(1, 2)[:, None, :] * 2
    xy_new = (xy - sh) * zoom[:, None, None]
    area_old = ((xy_new[..., 2] - xy_new[..., 0]) * (xy_new[..., 3] - xy_new[..., 1])).clamp(min=0)
    xy_new = xy_new.clamp(-1, 1)
    area_new = ((xy_new[..., 2] - xy_new[..., 0]) * (xy_new[..., 3] - xy_new[..., 1])).clamp(min=0)
    keep = present & (area_new > 0.4 * area_old) & (area_old > 0)
    boxes = torch.where(keep[..., None], xyxy_to_cxcywh((xy_new + 1) / 2), torch.zeros_like(boxes))
    # intensity on the grey part: x = grey + chroma, chroma untouched
    grey = frames.min(1, keepdim=True).values
    chroma = frames - grey
    gain = torch.exp(u(-0.35, 0.35) * strength)[:, None, None, None]
    # gamma exp(+-0.35) is the measured recipe (run3). A wider gamma (up to 2) plus a "reject"
    # of low echoes, meant to mimic real scanners' near-black tissue, measured no better on the
    # shifted preset and doubled its EF error (run5, docs/notes/detect.md), so it is not used.
    gamma = torch.exp(u(-0.35, 0.35) * strength)[:, None, None, None]
    grey = (grey.clamp(1e-4, 1) ** gamma * gain).clamp(0, 1)
    # one blur width per batch, applied to a random half: a single 1-channel convolution
    sigma = float(u(0.3, 1.6, 1)) * strength
    blur = torch.rand(b, generator=gen).to(dev) < 0.5
    grey = torch.where(blur[:, None, None, None], _blur(grey, sigma), grey)
    noise = u(0.0, 0.06) * strength
    grey = grey + noise[:, None, None, None] * torch.randn(grey.shape, generator=gen).to(dev)
    frames = (grey + chroma).clamp(0, 1)
    return frames, keep, boxes


def us_augment_frames(frames: Tensor, present: Tensor, boxes: Tensor, p: float,
                      gen: torch.Generator, depth_zoom: bool = True
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """Ultrasound-specific domain randomisation (:func:`echosonar.us_augment.us_augment`, the
    view classifier's) of a batch of frames ``[B, 3, S, S]`` 0..1 with their targets (boxes
    cxcywh ``[B, K, 4]``): each frame is a one-frame clip; boxes follow the zoom about the apex
    (``depth_zoom``), and a box with < 40 % of its area left in the frame becomes absent."""
    if p <= 0:
        return frames, present, boxes
    from echosonar.us_augment import apex_zoom_boxes, us_augment

    x, zoom = us_augment(frames[:, None], gen, p, geometry=True, depth_zoom=depth_zoom)
    xy = apex_zoom_boxes(cxcywh_to_xyxy(boxes), zoom)
    area_old = ((xy[..., 2] - xy[..., 0]) * (xy[..., 3] - xy[..., 1])).clamp(min=0)
    xy = xy.clamp(0, 1)
    area_new = ((xy[..., 2] - xy[..., 0]) * (xy[..., 3] - xy[..., 1])).clamp(min=0)
    keep = present & (area_new > 0.4 * area_old) & (area_old > 0)
    boxes = torch.where(keep[..., None], xyxy_to_cxcywh(xy), torch.zeros_like(boxes))
    return x[:, 0], keep, boxes


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[B, 1, H, W]`` with ``sigma`` pixels."""
    r = 3
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / max(sigma, 1e-3)) ** 2)
    k = k / k.sum()
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1))
