"""Geometric phantom primitives and the painter canvas.

The phantom is painted, in order, onto the sample points of the polar grid (``X, Z`` in cm,
shape ``[N]``) for all ``T`` frames at once: every primitive takes parameters that are scalars or
arrays of shape ``[T]`` and returns a boolean mask ``[T, N]``. Later primitives overwrite earlier
ones (echogenicity, structure label and a blood flag), so a structure's region is simply where
its label survives: that gives occlusion-correct ground-truth boxes for free.

Echogenicity is on a linear power scale with myocardium ≈ 1 (blood ≈ 2e-4, i.e. -37 dB).
"""

from __future__ import annotations

import numpy as np

from echosonar.taxonomy import STRUCTURE_INDEX

BLOOD = 2e-4
MYO = 1.0
TISSUE = 0.35
VALVE = 3.0
PERICARDIUM = 6.0


def _p(a: float | np.ndarray) -> np.ndarray:
    """Parameter as a column ``[T, 1]`` (or ``[1, 1]``) for broadcasting against ``[N]``."""
    return np.asarray(a, dtype=np.float32).reshape(-1, 1)


def to_frame(x: np.ndarray, z: np.ndarray, ox: float, oz: float,
             angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Image cm coordinates -> a rotated frame with origin ``(ox, oz)``.

    A frame point ``(u, v)`` sits at ``x = ox + u cos a - v sin a``, ``z = oz + u sin a + v cos a``.
    """
    a = np.deg2rad(angle_deg)
    dx, dz = x - ox, z - oz
    c, s = np.cos(a), np.sin(a)
    return (dx * c + dz * s).astype(np.float32), (-dx * s + dz * c).astype(np.float32)


def ellipse(u: np.ndarray, v: np.ndarray, cu, cv, ru, rv, ang=0.0, umin=None, umax=None,
            vmin=None, vmax=None) -> np.ndarray:
    """Filled ellipse (optionally rotated by ``ang`` degrees and cut by half-planes in its own
    axes, e.g. ``vmax`` truncates a ventricle at its valve plane)."""
    du, dv = u - _p(cu), v - _p(cv)
    if np.any(np.asarray(ang) != 0):
        a = np.deg2rad(_p(ang))
        c, s = np.cos(a), np.sin(a)
        du, dv = du * c + dv * s, -du * s + dv * c
    m = (du / _p(ru)) ** 2 + (dv / _p(rv)) ** 2 <= 1.0
    if umin is not None:
        m &= du >= _p(umin)
    if umax is not None:
        m &= du <= _p(umax)
    if vmin is not None:
        m &= dv >= _p(vmin)
    if vmax is not None:
        m &= dv <= _p(vmax)
    return m


def rect(u: np.ndarray, v: np.ndarray, u0, v0, u1, v1) -> np.ndarray:
    """Axis-aligned rectangle in the frame of ``(u, v)``."""
    return (u >= _p(u0)) & (u <= _p(u1)) & (v >= _p(v0)) & (v <= _p(v1))


def segment(u: np.ndarray, v: np.ndarray, u0, v0, u1, v1, width) -> np.ndarray:
    """Thick line segment from ``(u0, v0)`` to ``(u1, v1)`` (a valve leaflet)."""
    au, av = _p(u0), _p(v0)
    bu, bv = _p(u1) - au, _p(v1) - av
    t = ((u - au) * bu + (v - av) * bv) / np.maximum(bu * bu + bv * bv, 1e-6)
    t = np.clip(t, 0.0, 1.0)
    du, dv = u - (au + t * bu), v - (av + t * bv)
    return du * du + dv * dv <= (_p(width) * 0.5) ** 2


def polyline(u: np.ndarray, v: np.ndarray, pts: list[tuple], width) -> np.ndarray:
    """Union of segments through ``pts`` (each point a pair of scalars or ``[T]`` arrays)."""
    m = segment(u, v, *pts[0], *pts[1], width)
    for a, b in zip(pts[1:-1], pts[2:], strict=False):
        m |= segment(u, v, *a, *b, width)
    return m


def annulus_sector(u: np.ndarray, v: np.ndarray, cu, cv, r0, r1, a0_deg: float,
                   a1_deg: float) -> np.ndarray:
    """Ring between radii ``r0..r1`` from angle ``a0`` to ``a1`` (degrees, image convention:
    0 = +u, 90 = +v i.e. downward)."""
    du, dv = u - _p(cu), v - _p(cv)
    r2 = du * du + dv * dv
    ang = np.rad2deg(np.arctan2(dv, du)) % 360.0
    a0, a1 = a0_deg % 360.0, a1_deg % 360.0
    inside = (ang >= a0) & (ang <= a1) if a0 <= a1 else (ang >= a0) | (ang <= a1)
    return inside & (r2 >= _p(r0) ** 2) & (r2 <= _p(r1) ** 2)


class Canvas:
    """Echogenicity, structure labels, blood flag and (for colour views) flow, all ``[T, N]``.

    Attributes:
        echo: float32 linear echogenicity.
        label: int8 structure id (``taxonomy.STRUCTURE_INDEX`` + 1; 0 = unnamed tissue).
        blood: bool, True where blood is (colour flow may show there).
        vel: float32 velocity toward the transducer, in units of the Nyquist limit.
        turb: float32 turbulence (velocity variance) 0..1.
        jets: ``{"MR_JET": mask [T, N], ...}`` regurgitant jet regions (only labelled jets).
    """

    def __init__(self, x: np.ndarray, z: np.ndarray, n_frames: int, background: float = TISSUE,
                 min_width: float = 0.0):
        self.x, self.z, self.T = x, z, n_frames
        self.min_width = min_width          # thin lines are widened to one grid cell
        n = x.shape[0]
        self.echo = np.full((n_frames, n), background, np.float32)
        self.label = np.zeros((n_frames, n), np.int8)
        self.blood = np.zeros((n_frames, n), bool)
        self.vel = np.zeros((n_frames, n), np.float32)
        self.turb = np.zeros((n_frames, n), np.float32)
        self.jets: dict[str, np.ndarray] = {}

    def segment(self, u, v, u0, v0, u1, v1, width) -> np.ndarray:
        """:func:`segment` at least one grid cell wide, so leaflets never break up."""
        return segment(u, v, u0, v0, u1, v1, np.maximum(width, self.min_width))

    def polyline(self, u, v, pts, width) -> np.ndarray:
        return polyline(u, v, pts, np.maximum(width, self.min_width))

    def paint(self, mask: np.ndarray, value, structure: str | None = None,
              blood: bool = False) -> None:
        mask = np.broadcast_to(mask, self.echo.shape)
        val = np.broadcast_to(np.asarray(value, np.float32).reshape(-1, 1), self.echo.shape)
        self.echo[mask] = val[mask]
        self.label[mask] = 0 if structure is None else STRUCTURE_INDEX[structure] + 1
        self.blood[mask] = blood

    def flow(self, mask: np.ndarray, vel, turb=0.0) -> None:
        """Set velocity (toward transducer, Nyquist units) and turbulence inside ``mask``."""
        mask = np.broadcast_to(mask, self.vel.shape)
        v = np.broadcast_to(np.asarray(vel, np.float32), self.vel.shape) \
            if np.ndim(vel) == 2 else np.broadcast_to(
                np.asarray(vel, np.float32).reshape(-1, 1), self.vel.shape)
        t = np.broadcast_to(np.asarray(turb, np.float32).reshape(-1, 1), self.vel.shape)
        self.vel[mask] = v[mask]
        self.turb[mask] = t[mask]

    def toward(self, du, dv, frame_angle_deg: float) -> np.ndarray:
        """Velocity component toward the transducer ``[T, N]`` of a unit flow direction
        ``(du, dv)`` given in a frame rotated by ``frame_angle_deg``; beams point away from the
        apex at the origin of the image, so toward = -(flow . beam)."""
        a = np.deg2rad(frame_angle_deg)
        fx = _p(du) * np.cos(a) - _p(dv) * np.sin(a)
        fz = _p(du) * np.sin(a) + _p(dv) * np.cos(a)
        r = np.maximum(np.hypot(self.x, self.z), 1e-3)
        return -(fx * (self.x / r) + fz * (self.z / r))
