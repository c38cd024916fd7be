"""Where the ultrasound image is: geometric sector masks and an image-based fan estimate.

The estimate works on any vendor layout without hard-coded crops:

1. *Active* pixels: temporal standard deviation above a small threshold over up to 32 frames
   (speckle and tissue move; burned-in text, calipers, ECG labels and logos are static), or
   intensity above a threshold for stills.
2. Morphological opening (cuts thin text strokes touching the fan), closing, hole filling, and
   the largest connected component.
3. A sector fit on that component: robust straight-line fits to its left and right edges give the
   two edge rays and their crossing (the apex, possibly above the image); the outer and inner
   radii come from distance percentiles (inner > 0 for curvilinear probes, whose top is an arc).
   Nearly parallel edges mean a linear probe: the mask is the band between them.
4. The fitted mask must agree with the component (IoU >= 0.8); else its convex hull is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def geometric_sector_mask(shape: tuple[int, int], sector: dict[str, Any]) -> np.ndarray:
    """Boolean ``[H, W]`` mask of a sector ``{"apex": [x, y], "radius": r, "half_angle_deg": a}``.

    Coordinates follow the simulator (and numpy): pixel ``(row i, column j)`` is the point
    ``(x=j, y=i)``. An optional ``"inner_radius"`` removes the near field of curvilinear sectors.
    """
    h, w = shape
    ax, ay = (float(v) for v in sector["apex"])
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    dx, dy = x - ax, y - ay
    r = np.hypot(dx, dy)
    ang = np.degrees(np.arctan2(np.abs(dx), dy))  # 0 = straight down from the apex
    mask = (r <= float(sector["radius"])) & (ang <= float(sector["half_angle_deg"])) & (dy >= 0)
    if sector.get("inner_radius"):
        mask &= r >= float(sector["inner_radius"])
    return mask


def active_pixels(grey: np.ndarray, std_thresh: float = 1.0, int_thresh: float = 12.0) -> np.ndarray:
    """``grey``: float ``[F, H, W]`` in 0..255 -> boolean ``[H, W]`` of pixels that look imaged."""
    if grey.shape[0] >= 3:
        return grey.std(axis=0) > std_thresh
    return grey.max(axis=0) > int_thresh


def _box(mask: np.ndarray, size: int) -> np.ndarray:
    """Fraction of True pixels in a ``size`` x ``size`` window (separable, O(1) per pixel)."""
    from scipy.ndimage import uniform_filter

    return uniform_filter(mask.astype(np.float32), size=size, mode="constant")


def _erode(mask: np.ndarray, size: int) -> np.ndarray:
    return _box(mask, size) > 1.0 - 1e-4


def _dilate(mask: np.ndarray, size: int) -> np.ndarray:
    return _box(mask, size) > 1e-4


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Clean ``mask`` morphologically and return its largest connected component (filled).

    Square structuring elements through box filters (fast for any size): opening by about 1% of
    the image side cuts thin text strokes and caliper lines, closing by 2% bridges dark cavities.
    """
    from scipy import ndimage as ndi

    h, w = mask.shape
    k = max(1, int(round(min(h, w) * 0.01)))
    m = _dilate(_erode(mask, 2 * k + 1), 2 * k + 1)
    m = _erode(_dilate(m, 4 * k + 1), 4 * k + 1)
    m = ndi.binary_fill_holes(m)
    lab, n = ndi.label(m)
    if n == 0:
        return np.zeros_like(mask)
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (1 + int(np.argmax(sizes)))


def _robust_line(y: np.ndarray, x: np.ndarray, iters: int = 4) -> tuple[float, float]:
    """Fit ``x = a + b * y`` with iterative rejection of outliers (> 3 MAD)."""
    keep = np.ones(len(y), bool)
    a, b = float(np.median(x)), 0.0
    for _ in range(iters):
        if keep.sum() < 3:
            break
        b, a = np.polyfit(y[keep], x[keep], 1)
        res = np.abs(x - (a + b * y))
        mad = np.median(res[keep]) + 0.5
        keep = res <= 3.0 * mad
    return float(a), float(b)


def fit_sector(comp: np.ndarray) -> tuple[np.ndarray, dict[str, Any]] | None:
    """Sector (or band, for linear probes) fitted to a filled component; None if it fails."""
    h, w = comp.shape
    rows = np.flatnonzero(comp.any(axis=1))
    if len(rows) < 8:
        return None
    top, bot = int(rows[0]), int(rows[-1])
    span = bot - top + 1
    sel = rows[(rows >= top + 0.05 * span) & (rows <= top + 0.6 * span)]
    if len(sel) < 4:
        return None
    xl = np.array([np.argmax(comp[r]) for r in sel], np.float64)
    xr = np.array([w - 1 - np.argmax(comp[r, ::-1]) for r in sel], np.float64) + 1.0
    ys = sel.astype(np.float64) + 0.5
    al, bl = _robust_line(ys, xl)
    ar, br = _robust_line(ys, xr)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    band = (xx >= al + bl * yy) & (xx <= ar + br * yy)
    info: dict[str, Any] = {}
    if br - bl > 0.05:  # diverging edges: a sector with apex where the two rays cross
        ay = (al - ar) / (br - bl)
        ax = al + bl * ay
        if ay > top + 0.25 * span:
            return None
        r = np.hypot(xx - ax, yy - ay)
        rin = r[comp]
        r_out, r_in = float(np.percentile(rin, 99.7)), float(np.percentile(rin, 0.2))
        mask = band & (yy >= ay) & (r <= r_out + 0.5)
        if r_in > 0.1 * r_out:  # curvilinear probe: its top is an arc, not a point
            mask &= r >= r_in - 0.5
        half = float(np.degrees(0.5 * (np.arctan(br) - np.arctan(bl))))
        info = {"kind": "sector", "apex": [ax, ay], "radius": r_out, "inner_radius": r_in,
                "half_angle_deg": half}
    else:  # linear probe: a band between two (nearly) parallel edges
        mask = band & (yy >= top) & (yy <= bot + 1)
        info = {"kind": "band"}
    return mask, info


def convex_hull_mask(comp: np.ndarray) -> np.ndarray:
    """Filled convex hull of a boolean mask (pixel centres tested against hull facets)."""
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(comp)
    if len(xs) < 3:
        return comp.copy()
    pts = np.stack([xs, ys], 1).astype(np.float64)
    corners = np.concatenate([pts + [0, 0], pts + [1, 0], pts + [0, 1], pts + [1, 1]])
    try:
        hull = ConvexHull(corners)
    except QhullError:
        return comp.copy()
    yy, xx = np.mgrid[0:comp.shape[0], 0:comp.shape[1]].astype(np.float64) + 0.5
    inside = np.ones(comp.shape, bool)
    for a, b, c in hull.equations:
        inside &= a * xx + b * yy + c <= 1e-9
    return inside


def estimate_sector(grey: np.ndarray, min_area: float = 0.05) -> tuple[np.ndarray, dict] | None:
    """Estimate the imaged fan from ``grey`` float ``[F, H, W]`` (0..255).

    Returns ``(mask [H, W] bool, info)`` with ``info["kind"]`` in sector / band / hull, or None
    when nothing image-like is found (the caller then keeps the whole crop and warns).
    """
    comp = largest_component(active_pixels(grey))
    if comp.sum() < min_area * comp.size:
        return None
    fit = fit_sector(comp)
    if fit is not None:
        mask, info = fit
        inter = float((mask & comp).sum())
        iou = inter / float((mask | comp).sum())
        if iou >= 0.8:
            info["iou"] = iou
            return mask, info
    return convex_hull_mask(comp), {"kind": "hull"}
