"""``preprocess(raw, cfg) -> Clip``: time resampling, sector crop and mask, colour decision,
aspect-preserving resize, physical spacing, and ground-truth boxes/ED/ES mapped along.

Order of operations (each chosen so nothing outside the sector can leak in):

1. Pick ``clip_len`` output times evenly over the clip (or its first heart cycle) by *real*
   frame time; nearest source frame (default) or linear blend.
2. Crop box = the ultrasound region when the header has one, else the fan's bounding box. Mask =
   the manifest's sector for simulated clips, else the fan estimated from the pixels
   (:mod:`echosonar.ingest.sector`); pixels outside it are zeroed *before* resizing.
3. B-mode -> one luminance channel; colour Doppler (many saturated in-sector pixels, or a colour
   view in the manifest) -> RGB.
4. Resize so that one output pixel is the same physical size in x and y (anisotropic spacing is
   corrected; a spacing outside 0.001-1 cm/px or more than 10x anisotropic is dropped with a
   warning, :func:`~echosonar.ingest.raw.plausible_spacing`), centred horizontally and top-aligned (the transducer stays at the top), zero
   padded to ``image_size`` squared; mask again at output resolution.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from echosonar.ingest.raw import RawClip, as_ingest_config, plausible_spacing
from echosonar.ingest.sector import estimate_sector, geometric_sector_mask
from echosonar.schema import Clip
from echosonar.taxonomy import COLOR_VIEWS, OTHER_VIEW, STRUCTURES

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601


def preprocess(raw: RawClip, cfg: Any | None = None) -> Clip:
    """Turn a :class:`RawClip` into a model-ready :class:`~echosonar.schema.Clip`.

    ``frames``: float32 ``[clip_len, C, S, S]`` in [0, 1], zero outside the sector, C = 1
    (B-mode) or 3 (colour Doppler), S = ``image_size``. ``view_conf = 0.0`` marks a clip whose
    view is unknown (the study assembler runs the view classifier on it).
    """
    icfg = as_ingest_config(cfg)
    size, warn = int(icfg.image_size), raw.warnings
    raw.spacing = plausible_spacing(raw.spacing, warn)  # every reader's (and the manifest's)
    idx, wts, times = temporal_plan(raw.frame_times, icfg.clip_len, icfg.temporal_window,
                                    icfg.temporal_interp, raw.heart_rate)
    (x0, y0, x1, y1), mask = crop_and_mask(raw, icfg.sector_from_image, warn)
    sel = np.unique(np.concatenate([idx[:, 0], idx[:, 1]]))
    crop = raw.frames[sel, y0:y1, x0:x1]  # only the frames we use: [F, h, w, C]
    color = is_color(crop, mask, raw.view, icfg.color_chroma, icfg.color_min_fraction)
    # Resize plan: equal physical pixel size in x and y, fit the longer side to `size`
    h, w = y1 - y0, x1 - x0
    dx, dy = raw.spacing if raw.spacing else (1.0, 1.0)
    side = max(w * dx, h * dy)
    cm_out = side / size if raw.spacing else math.nan
    nw = min(size, max(1, int(round(w * dx / side * size))))
    nh = min(size, max(1, int(round(h * dy / side * size))))
    ox = (size - nw) // 2
    m_out = _resize(mask.astype(np.float32), nw, nh) >= 0.5
    if color:
        img = crop.astype(np.float32) * mask[None, :, :, None]  # [F, h, w, 3]
    elif crop.shape[-1] == 3:
        img = (LUMA[0] * crop[..., 0] + LUMA[1] * crop[..., 1] + LUMA[2] * crop[..., 2])
        img = (img * mask)[..., None]
    else:
        img = crop.astype(np.float32) * mask[None, :, :, None]
    planes = {int(s): np.stack([_resize(img[j, :, :, c], nw, nh) for c in range(img.shape[-1])])
              for j, s in enumerate(sel)}
    c_out = 3 if color else 1
    out = np.zeros((len(times), c_out, size, size), np.float32)
    for t in range(len(times)):
        a, b = planes[int(idx[t, 0])], planes[int(idx[t, 1])]
        fr = a if wts[t] == 0.0 else (1.0 - wts[t]) * a + wts[t] * b
        out[t, :, :nh, ox:ox + nw] = fr * m_out
    np.clip(out / 255.0, 0.0, 1.0, out=out)
    sx, sy = nw / w, nh / h
    boxes = _map_boxes(raw.boxes, idx[:, 0], x0, y0, sx, sy, ox, size) if raw.boxes else None
    near = idx[:, 0] if wts.max(initial=0) == 0 else np.where(wts < 0.5, idx[:, 0], idx[:, 1])
    return Clip(
        view=raw.view or OTHER_VIEW, view_conf=1.0 if raw.view else 0.0, frames=out,
        cm_per_px=float(cm_out), frame_times=times.astype(np.float32),
        ed_index=_map_index(raw.ed_frames, near), es_index=_map_index(raw.es_frames, near),
        source=raw.source, boxes=boxes)


def temporal_plan(t_src: np.ndarray, n_out: int, window: str = "clip", interp: str = "nearest",
                  heart_rate: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Output sampling by real time.

    Returns ``idx`` int ``[n_out, 2]`` (source frames to blend), ``w`` float ``[n_out]`` (weight
    of the second; all 0 for nearest) and ``times`` float ``[n_out]`` seconds from the window start.

    >>> idx, w, t = temporal_plan(np.arange(30) / 30.0, 4)
    >>> idx[:, 0].tolist(), [round(float(x), 3) for x in t]
    ([0, 10, 19, 29], [0.0, 0.333, 0.633, 0.967])
    """
    if window not in ("clip", "cycle"):
        raise ValueError(f"temporal_window must be 'clip' or 'cycle', got {window!r}")
    if interp not in ("nearest", "linear"):
        raise ValueError(f"temporal_interp must be 'nearest' or 'linear', got {interp!r}")
    t_src = np.asarray(t_src, np.float64)
    n = len(t_src)
    if n == 1:
        return np.zeros((n_out, 2), int), np.zeros(n_out), np.zeros(n_out)
    end = float(t_src[-1])
    if window == "cycle" and heart_rate:
        end = min(end, float(t_src[0]) + 60.0 / heart_rate)
    want = np.linspace(float(t_src[0]), end, n_out)
    if interp == "nearest":
        j = np.clip(np.searchsorted(t_src, want), 1, n - 1)
        pick = np.where(want - t_src[j - 1] <= t_src[j] - want, j - 1, j)
        return np.stack([pick, pick], 1), np.zeros(n_out), t_src[pick] - t_src[0]
    j = np.clip(np.searchsorted(t_src, want, side="right"), 1, n - 1)
    w = np.clip((want - t_src[j - 1]) / (t_src[j] - t_src[j - 1]), 0.0, 1.0)
    return np.stack([j - 1, j], 1), w, want - t_src[0]


def crop_and_mask(raw: RawClip, from_image: bool,
                  warn: list[str]) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Crop box ``(x0, y0, x1, y1)`` (end-exclusive) and boolean mask ``[y1-y0, x1-x0]``."""
    _, H, W, _ = raw.frames.shape
    box = raw.region or (0, 0, W, H)
    if raw.sector:  # simulated clip: the renderer's exact sector
        full = geometric_sector_mask((H, W), raw.sector)
        if raw.region is None and raw.sector.get("bbox"):  # the region the DICOM would carry
            bx0, by0, bx1, by1 = (int(v) for v in raw.sector["bbox"])
            box = (max(bx0, 0), max(by0, 0), min(bx1 + 1, W), min(by1 + 1, H))
        elif raw.region is None:
            box = _bbox(full) or box
        x0, y0, x1, y1 = box
        return box, full[y0:y1, x0:x1]
    x0, y0, x1, y1 = box
    if from_image:
        sub = raw.frames[_spread(raw.n_frames, 32), y0:y1, x0:x1]
        est = estimate_sector(_channel_max(sub).astype(np.float32))
        if est is not None:
            mask = est[0]
            if raw.region is None:  # no header box: crop to the estimated fan
                bx0, by0, bx1, by1 = _bbox(mask)
                return (x0 + bx0, y0 + by0, x0 + bx1, y0 + by1), mask[by0:by1, bx0:bx1]
            return box, mask
        warn.append("no ultrasound sector found in the pixels; whole "
                    + ("region" if raw.region else "image") + " kept")
    return box, np.ones((y1 - y0, x1 - x0), bool)


def is_color(crop: np.ndarray, mask: np.ndarray, view: str | None, chroma: float,
             min_fraction: float) -> bool:
    """Colour Doppler? The manifest's view decides when known; else the in-sector chroma."""
    if view is not None:
        return view in COLOR_VIEWS
    if crop.shape[-1] == 1 or not mask.any():
        return False
    # every other frame, row and column: the decision needs a fraction, not every pixel
    px = crop[::2, ::2, ::2][:, mask[::2, ::2]]  # [F', P', 3]
    r, g, b = px[..., 0], px[..., 1], px[..., 2]
    c = np.maximum(np.maximum(r, g), b).astype(np.int16) - np.minimum(np.minimum(r, g), b)
    return float((c > chroma).mean()) > min_fraction


def _channel_max(a: np.ndarray) -> np.ndarray:
    """Max over the last (channel) axis; numpy's reduce over a size-3 axis is slow."""
    if a.shape[-1] == 1:
        return a[..., 0]
    return np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2])


def _resize(plane: np.ndarray, nw: int, nh: int) -> np.ndarray:
    """Antialiased bilinear resize of one float plane with Pillow (no torch in workers)."""
    from PIL import Image

    if plane.shape == (nh, nw):
        return plane.astype(np.float32, copy=False)
    img = Image.fromarray(np.ascontiguousarray(plane, np.float32), mode="F")
    return np.asarray(img.resize((nw, nh), Image.Resampling.BILINEAR), np.float32)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _spread(n: int, k: int) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def _map_index(src: list[int], near: np.ndarray) -> int:
    """Output frame whose source frame is closest to the first of ``src`` (or -1)."""
    if not src:
        return -1
    return int(np.argmin(np.abs(near.astype(np.int64) - int(src[0]))))


def _map_boxes(boxes: list[dict[str, list[float]]], src: np.ndarray, x0: int, y0: int,
               sx: float, sy: float, ox: int, size: int) -> list[dict[str, list[float]]]:
    """Per output frame: the chosen source frame's boxes in output pixel coordinates.

    Boxes use pixel-centre coordinates (pixel column j is x = j; a box over columns a..b spans
    a - 0.5 .. b + 0.5), in the source image and in the output alike.
    """
    out = []
    for s in src:
        fb = boxes[int(s)] if int(s) < len(boxes) else {}
        mapped = {}
        for name, b in fb.items():
            if name not in STRUCTURES:
                continue
            nb = [(b[0] + 0.5 - x0) * sx + ox - 0.5, (b[1] + 0.5 - y0) * sy - 0.5,
                  (b[2] + 0.5 - x0) * sx + ox - 0.5, (b[3] + 0.5 - y0) * sy - 0.5]
            nb = [min(max(v, -0.5), size - 0.5) for v in nb]
            if nb[2] > nb[0] and nb[3] > nb[1]:
                mapped[name] = [round(v, 3) for v in nb]
        out.append(mapped)
    return out
