"""Image formation: speckle convolution model, log compression, scan conversion, colour Doppler.

For one clip (brief, section 5):

1. the view's phantom is painted on a coarse polar grid (``[T, Nr/2 * Nth/2]``), giving
   echogenicity, structure labels, blood and flow;
2. echogenicity is textured, attenuated with depth, shadowed by dropouts and upsampled to the
   fine polar grid ``[T, Nr, Nth]`` (depth samples x beam lines);
3. complex Gaussian scatterers (correlated frame to frame) are weighted by sqrt(echogenicity)
   plus an electronic-noise floor, then blurred by a separable depth x angle point-spread
   function whose size follows the probe frequency;
4. the envelope gets time-gain compensation, log compression over the dynamic range, and
   bilinear scan conversion to the ``H x W`` image through precomputed index maps;
5. colour views add the velocity map (red toward the transducer, blue away, aliasing and
   turbulence mosaic) inside the colour box; overlays go outside the sector.

Ground-truth boxes come from the label map (occlusion-aware) at coarse-cell precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from echosonar.config.sim import SimConfig
from echosonar.simulate.cycle import make_cycle
from echosonar.simulate.overlay import ecg_layer, stamp, text_mask
from echosonar.simulate.shapes import Canvas
from echosonar.simulate.spec import StudySpec
from echosonar.simulate.views import paint_view, view_depth, visible_measurements
from echosonar.taxonomy import (
    COLOR_VIEWS,
    CONDITIONAL_STRUCTURES,
    STRUCTURE_INDEX,
    VIEW_STRUCTURES,
    VIEWS,
    check_view,
)


@dataclass(frozen=True)
class Sector:
    """Sector geometry in pixels and its precomputed scan-conversion maps.

    Attributes:
        H, W: image size; apex_x, apex_y: transducer position; radius: sector radius;
        half_angle: radians. n_r, n_th: fine polar grid (depth samples, beam lines).
        cu, cz: coarse cell centres as fractions of the depth (lateral, axial), ``[Nc]``.
        cpx, cpy: coarse cell centres in image pixels, ``[Nc]``.
        pix: flat indices of the image pixels inside the sector, ``[P]``.
        idx, wts: 4 bilinear source indices/weights into the fine grid, ``[4, P]``.
        cidx: nearest coarse cell of each sector pixel, ``[P]``.
        bbox: sector bounding box ``[x0, y0, x1, y1]`` (the DICOM ultrasound region).
    """

    H: int
    W: int
    apex_x: float
    apex_y: float
    radius: float
    half_angle: float
    n_r: int
    n_th: int
    cu: np.ndarray
    cz: np.ndarray
    cpx: np.ndarray
    cpy: np.ndarray
    pix: np.ndarray
    idx: np.ndarray
    wts: np.ndarray
    cidx: np.ndarray
    r_pix: np.ndarray
    th_pix: np.ndarray
    bbox: tuple[int, int, int, int]
    ecg_y0: int


@lru_cache(maxsize=8)
def sector_geometry(size: int, half_angle_deg: float) -> Sector:
    """Geometry for a ``size x size`` image (cached: computed once per process)."""
    H = W = size
    ecg_h = max(8, round(0.12 * H))
    apex_y = max(2.0, round(0.03 * H))
    half = np.deg2rad(half_angle_deg)
    radius = float(min(H - apex_y - ecg_h - 1, (W / 2 - 2) / np.sin(half)))
    apex_x = (W - 1) / 2
    n_r = 2 * int(round(0.48 * radius))
    n_th = 2 * int(round(half * radius * 0.75))
    # coarse grid cell centres (2x2 fine cells each)
    rc = (np.arange(n_r // 2) + 0.5) / (n_r // 2)
    tc = -half + (np.arange(n_th // 2) + 0.5) * (2 * half / (n_th // 2))
    R, TH = np.meshgrid(rc, tc, indexing="ij")
    cu, cz = (R * np.sin(TH)).ravel(), (R * np.cos(TH)).ravel()
    cpx, cpy = apex_x + radius * cu, apex_y + radius * cz
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    dx, dy = xx - apex_x, yy - apex_y
    r = np.hypot(dx, dy) / radius
    th = np.arctan2(dx, dy)
    inside = (r <= 1.0) & (np.abs(th) <= half) & (dy >= 0)
    pix = np.flatnonzero(inside)
    rf = r.ravel()[pix] * n_r - 0.5
    tf = (th.ravel()[pix] + half) / (2 * half) * n_th - 0.5
    r0 = np.clip(np.floor(rf), 0, n_r - 2).astype(np.int64)
    t0 = np.clip(np.floor(tf), 0, n_th - 2).astype(np.int64)
    wr, wt = np.clip(rf - r0, 0, 1), np.clip(tf - t0, 0, 1)
    idx = np.stack([r0 * n_th + t0, r0 * n_th + t0 + 1, (r0 + 1) * n_th + t0,
                    (r0 + 1) * n_th + t0 + 1])
    wts = np.stack([(1 - wr) * (1 - wt), (1 - wr) * wt, wr * (1 - wt), wr * wt]).astype(np.float32)
    cr = np.clip((r.ravel()[pix] * (n_r // 2)).astype(np.int64), 0, n_r // 2 - 1)
    ct = np.clip(((th.ravel()[pix] + half) / (2 * half) * (n_th // 2)).astype(np.int64), 0,
                 n_th // 2 - 1)
    cidx = cr * (n_th // 2) + ct
    x0 = int(np.floor(apex_x - radius * np.sin(half)))
    x1 = int(np.ceil(apex_x + radius * np.sin(half)))
    bbox = (max(x0, 0), int(apex_y), min(x1, W - 1), int(np.ceil(apex_y + radius)))
    return Sector(H, W, float(apex_x), float(apex_y), radius, float(half), n_r, n_th,
                  cu.astype(np.float32), cz.astype(np.float32), cpx.astype(np.float32),
                  cpy.astype(np.float32), pix, idx, wts, cidx, r.ravel()[pix].astype(np.float32),
                  th.ravel()[pix].astype(np.float32), bbox, int(H - ecg_h))


def expected_structures(view: str, labels: dict[str, int]) -> list[str]:
    """Structures whose boxes a clip of ``view`` carries: the view's fixed structures, plus
    effusion and jets only when the study has the finding and the view shows it."""
    out = list(VIEW_STRUCTURES[view])
    for s, (finding, views) in CONDITIONAL_STRUCTURES.items():
        if labels.get(finding) and view in views:
            out.append(s)
    return out


def _boxes(cv: Canvas, geo: Sector, structs: list[str], jets: dict[str, np.ndarray],
           T: int) -> list[dict[str, list[float]]]:
    """Per-frame ``{structure: [x0, y0, x1, y1]}`` (pixels) from the surviving labels."""
    half_cell = geo.radius / (geo.n_r // 2) * 0.5
    out: list[dict[str, list[float]]] = [{} for _ in range(T)]
    x0b, y0b, x1b, y1b = geo.bbox
    for s in structs:
        mask = jets[s] if s in jets else (cv.label == STRUCTURE_INDEX[s] + 1)
        if s in jets and mask is None:
            continue
        present = mask.any(axis=1)
        if not present.any():
            continue
        xs0 = np.where(mask, geo.cpx, np.inf).min(1)
        xs1 = np.where(mask, geo.cpx, -np.inf).max(1)
        ys0 = np.where(mask, geo.cpy, np.inf).min(1)
        ys1 = np.where(mask, geo.cpy, -np.inf).max(1)
        for t in np.flatnonzero(present):
            out[t][s] = [round(float(max(xs0[t] - half_cell, x0b)), 1),
                         round(float(max(ys0[t] - half_cell, y0b)), 1),
                         round(float(min(xs1[t] + half_cell, x1b)), 1),
                         round(float(min(ys1[t] + half_cell, y1b)), 1)]
    return out


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    f = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    return f / (f.std() + 1e-6)


def _color_rgb(v: np.ndarray, turb: np.ndarray) -> np.ndarray:
    """Velocity (Nyquist units, already aliased to [-1, 1]) and turbulence -> RGB 0..1,
    BART map: red/yellow toward the transducer, blue/cyan away, green for variance."""
    a = np.abs(v)
    pos = v > 0
    r = np.where(pos, 0.45 + 0.55 * a, 0.0) + np.where(~pos, np.clip(a - 0.8, 0, 1) * 1.0, 0)
    g = np.where(pos, np.clip(a - 0.55, 0, 1) * 1.6, np.clip(a - 0.55, 0, 1) * 1.5)
    b = np.where(~pos, 0.45 + 0.55 * a, 0.0)
    g = g + 0.65 * turb
    return np.clip(np.stack([r, g, b], -1), 0, 1)


def render_clip(spec: StudySpec, view: str, cfg: SimConfig,
                rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Render one cine clip of ``view`` for ``spec``.

    Returns ``(frames, meta)``: ``frames`` uint8 ``[T, H, W]`` (B-mode) or ``[T, H, W, 3]``
    (colour Doppler, RGB); ``meta`` has ``fps``, ``ed_frames``, ``es_frames``, ``cm_per_px``,
    ``depth_cm``, ``boxes`` (per frame ``{structure: [x0, y0, x1, y1]}`` pixels), ``sector``
    (``apex``, ``radius``, ``half_angle_deg``, ``bbox``), ``color`` and ``probe_mhz``.
    """
    check_view(view)
    if view not in VIEWS:
        raise ValueError(f"cannot render view {view!r}")
    T = cfg.frames
    geo = sector_geometry(cfg.image_size, cfg.half_angle_deg)
    pt = spec.patient
    m = visible_measurements(spec.measurements, view, pt["neutral"])
    depth = view_depth(view, m, pt, rng) * cfg.depth_scale
    hr = spec.measurements["heart_rate_bpm"] * rng.uniform(0.97, 1.03)
    cyc = make_cycle(T, hr)
    color = view in COLOR_VIEWS
    # probe placement: a small rotation and lateral shift of the anatomy under the sector
    a = np.deg2rad(rng.normal(0, 2.5 * cfg.jitter))
    shift = rng.normal(0, 0.3 * cfg.jitter)
    cx, cz = geo.cu * depth, geo.cz * depth
    cx, cz = cx * np.cos(a) - cz * np.sin(a) + shift, cx * np.sin(a) + cz * np.cos(a)
    real = float(np.clip(cfg.realism, 0.0, 1.0))
    # realism darkens the lung/mediastinum around the heart (13 dB at 1)
    cv = Canvas(cx.astype(np.float32), cz.astype(np.float32), T,
                background=0.07 * 10 ** (-1.3 * real), min_width=0.8 * depth / (geo.n_r // 2))
    info = paint_view(view, cv, m, pt, cyc, rng)
    nr, nt = geo.n_r // 2, geo.n_th // 2
    q = float(pt["quality"])
    # --- echogenicity: texture, haze, attenuation residue, dropout ---------------------------
    # tissue texture at two scales (fibres/fat at ~0.5 cm, patchy gain at ~2 cm)
    tex = np.exp(pt["tissue_texture"] * _smooth_field(rng, (nr, nt), 1.2) +
                 0.35 * _smooth_field(rng, (nr, nt), 5.0)).ravel()
    painted = cv.echo
    if real > 0:
        # soft endocardial / epicardial borders: the painted echogenicity blurred over about
        # 2-3 mm (0.8 coarse cells at 1), so walls fade into the cavities; weak blood speckle
        sig = 0.8 * real
        painted = gaussian_filter(painted.reshape(T, nr, nt), (0, sig, sig),
                                  mode="nearest").reshape(T, -1)
        painted = painted + cv.blood * (2e-3 * real)
    echo = np.where(cv.blood, painted, painted * tex)
    zc = geo.cz * depth
    # near-field reverberation clutter fills the apex region, worse in poor windows
    clutter = (1.15 - q) * 0.02 * np.exp(-zc / 2.5) * np.exp(_smooth_field(rng, (nr, nt), 2.0)
                                                             ).ravel()
    echo = echo + clutter
    if rng.random() < cfg.dropout * (1.3 - 0.5 * q):
        th = np.arctan2(geo.cu, geo.cz)
        c = rng.uniform(-geo.half_angle, geo.half_angle) * 0.9
        w = rng.uniform(0.03, 0.09)
        z_start = rng.uniform(0.0, 0.5) * depth
        shadow = (np.abs(th - c) < w) & (zc > z_start)
        echo = np.where(shadow, echo * rng.uniform(0.03, 0.3), echo)
    lateral = 1.0 - 0.45 * (np.abs(np.arctan2(geo.cu, geo.cz)) / geo.half_angle) ** 4
    slope = rng.normal(0, 0.25) + (1.0 - q) * 0.4                 # dB per cm, imperfect TGC
    echo = echo * lateral * 10 ** (-(slope * zc) / 10)
    # --- speckle: correlated complex scatterers x sqrt(echo + noise), depth x angle PSF -------
    noise_pow = 10 ** ((cfg.noise_db + 8 * (1 - q)) / 10)
    amp = np.sqrt(echo + noise_pow).reshape(T, nr, 1, nt, 1)
    amp = np.broadcast_to(amp, (T, nr, 2, nt, 2)).reshape(T, geo.n_r, geo.n_th)
    shape = (T, geo.n_r, geo.n_th)
    sc = rng.standard_normal((2,) + shape, dtype=np.float32)
    rho = cfg.speckle_corr
    if rho > 0:
        k = np.sqrt(1 - rho * rho)
        for t in range(1, T):
            sc[:, t] = rho * sc[:, t - 1] + k * sc[:, t]
    sc *= amp[None]
    cm_per_r = depth / geo.n_r
    sig_ax = (0.06 * 3.0 / cfg.probe_mhz) / cm_per_r
    sig_lat = (0.010 * 3.0 / cfg.probe_mhz) / (2 * geo.half_angle / geo.n_th)
    sc = gaussian_filter1d(sc, max(sig_ax, 0.4), axis=2, mode="nearest", truncate=2.5)
    sc = gaussian_filter1d(sc, max(sig_lat, 0.4), axis=3, mode="nearest", truncate=2.5)
    env2 = sc[0] * sc[0] + sc[1] * sc[1]
    norm = np.sqrt(2 * np.pi) * max(sig_ax, 0.4) * np.sqrt(2 * np.pi) * max(sig_lat, 0.4) / 2
    # --- scan conversion of the intensity, then log compression on the image pixels only -----
    g = env2.reshape(T, -1)
    vals = (g[:, geo.idx[0]] * geo.wts[0] + g[:, geo.idx[1]] * geo.wts[1] +
            g[:, geo.idx[2]] * geo.wts[2] + g[:, geo.idx[3]] * geo.wts[3])
    top = 12.0 - cfg.gain_db - rng.normal(0, 1.5)
    lo = top - cfg.dynamic_range_db
    db = 10 * np.log10(vals * norm + 1e-12)
    gray = np.clip((db - lo) * (1.0 / cfg.dynamic_range_db), 0, 1)
    gray = gray * np.sqrt(gray)
    H, W = geo.H, geo.W
    img = np.zeros((T, H * W), np.float32)
    img[:, geo.pix] = gray
    if color:
        rgb = np.repeat(img[..., None], 3, axis=-1)
        # the box is in anatomy polar coordinates: gate colour with it on the grid, draw its
        # outline in image coordinates (undo the probe rotation)
        from echosonar.simulate.views import cv_box_mask

        box = info["color_box"]
        inbox_grid = cv_box_mask(cv, box)[0][geo.cidx]
        rr, th = geo.r_pix * depth, geo.th_pix
        b0, b1 = box[2] + a, box[3] + a
        inbox = (rr >= box[0]) & (rr <= box[1]) & (th >= b0) & (th <= b1)
        vel = cv.vel + (cv.turb * rng.standard_normal(cv.vel.shape).astype(np.float32) * 1.2 +
                        0.06 * rng.standard_normal(cv.vel.shape).astype(np.float32))
        vel = ((vel + 1.0) % 2.0) - 1.0                       # aliasing at the Nyquist limit
        show = cv.blood & (np.abs(cv.vel) > 0.1) & (np.abs(vel) > 0.08)
        vp, tp, sp = vel[:, geo.cidx], cv.turb[:, geo.cidx], show[:, geo.cidx] & inbox_grid[None]
        col = _color_rgb(vp, tp)
        sub = rgb[:, geo.pix]
        sub[sp] = col[sp]
        edge = inbox & ((np.abs(rr - box[0]) < 0.6 * depth / geo.radius) |
                        (np.abs(rr - box[1]) < 0.6 * depth / geo.radius) |
                        (np.abs(th - b0) < 0.6 / (geo.radius * max(rr.mean(), 1e-3) / depth)) |
                        (np.abs(th - b1) < 0.6 / (geo.radius * max(rr.mean(), 1e-3) / depth)))
        sub[:, edge] = 0.55
        rgb[:, geo.pix] = sub
        out = rgb.reshape(T, H, W, 3)
    else:
        out = img.reshape(T, H, W)
    frames = (out * 255 + 0.5).astype(np.uint8)
    _overlays(frames, geo, cfg, cyc, depth, hr, color, rng)
    jets = {k[4:]: v for k, v in info.items() if k.startswith("jet_")}
    structs = expected_structures(view, spec.labels)
    boxes = _boxes(cv, geo, structs, jets, T)
    meta = {
        "fps": round(float(cyc.fps), 3), "ed_frames": [cyc.ed_frame], "es_frames": [cyc.es_frame],
        "cm_per_px": float(depth / geo.radius), "depth_cm": float(depth), "boxes": boxes,
        "sector": {"apex": [geo.apex_x, geo.apex_y], "radius": geo.radius,
                   "half_angle_deg": float(np.rad2deg(geo.half_angle)), "bbox": list(geo.bbox)},
        "color": color, "probe_mhz": cfg.probe_mhz, "heart_rate_bpm": float(hr),
    }
    return frames, meta


def _overlays(frames: np.ndarray, geo: Sector, cfg: SimConfig, cyc, depth: float, hr: float,
              color: bool, rng: np.random.Generator) -> None:
    """Burn ECG, text, depth markers and colour bar into ``frames`` outside the sector."""
    T, H, W = frames.shape[:3]
    scale = max(1, H // 128)
    inside = np.zeros(H * W, bool)
    inside[geo.pix] = True
    inside = inside.reshape(H, W)
    txt = np.zeros((H, W), bool)
    stamp(txt, text_mask(f"{cfg.probe_mhz:.1f}MHZ", scale), 2, 2)
    stamp(txt, text_mask("ADULT", scale), 2 + 7 * scale, 2)
    right = f"{int(round(depth))}CM"
    stamp(txt, text_mask(right, scale), 2, W - 2 - 4 * len(right) * scale)
    hr_s = f"HR{int(round(hr))}"
    stamp(txt, text_mask(hr_s, scale), 2 + 7 * scale, W - 2 - 4 * len(hr_s) * scale)
    # depth markers: a dot per 5 cm just outside the right sector edge
    for d in np.arange(5.0, depth, 5.0):
        rr = d / depth * geo.radius
        px = int(round(geo.apex_x + rr * np.sin(geo.half_angle) + 3))
        py = int(round(geo.apex_y + rr * np.cos(geo.half_angle)))
        if 0 <= px < W and 0 <= py < H:
            txt[py, px] = True
    trace, cursor = ecg_layer(H, W, geo.ecg_y0, cyc.phase, cyc.es_phase, rng)
    txt &= ~inside
    trace &= ~inside
    cursor &= ~inside[None]
    if color:
        frames[:, txt] = 210
        frames[:, trace] = (40, 200, 70)
        frames[cursor] = (250, 250, 60)
        y0, y1 = 2 + 14 * scale, min(2 + 14 * scale + 24 * scale, geo.ecg_y0 - 2)
        xs = slice(W - 3 - 2 * scale, W - 3)
        n = y1 - y0
        if n > 4:
            vv = np.linspace(1, -1, n)
            bar = (_color_rgb(vv, np.zeros_like(vv)) * 255).astype(np.uint8)
            frames[:, y0:y1, xs] = bar[None, :, None, :]
    else:
        frames[:, txt] = 210
        frames[:, trace] = 170
        frames[cursor] = 255
