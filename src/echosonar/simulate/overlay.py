"""Burned-in overlays outside the sector, as real scanners draw them: an ECG trace with a moving
cursor along the bottom, text in the top corners, depth markers beside the sector edge and, for
colour Doppler, a colour bar. Ingestion must mask all of it (everything outside the sector).

Text uses a built-in 3x5 pixel font so rendering needs no font files and is deterministic.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# 3x5 glyphs, rows top to bottom, '#' = on.
_GLYPHS = {
    "0": "###,#.#,#.#,#.#,###", "1": ".#.,##.,.#.,.#.,###", "2": "###,..#,###,#..,###",
    "3": "###,..#,.##,..#,###", "4": "#.#,#.#,###,..#,..#", "5": "###,#..,###,..#,###",
    "6": "###,#..,###,#.#,###", "7": "###,..#,.#.,.#.,.#.", "8": "###,#.#,###,#.#,###",
    "9": "###,#.#,###,..#,###", "A": ".#.,#.#,###,#.#,#.#", "B": "##.,#.#,##.,#.#,##.",
    "C": ".##,#..,#..,#..,.##", "D": "##.,#.#,#.#,#.#,##.", "E": "###,#..,##.,#..,###",
    "F": "###,#..,##.,#..,#..", "G": ".##,#..,#.#,#.#,.##", "H": "#.#,#.#,###,#.#,#.#",
    "I": "###,.#.,.#.,.#.,###", "J": "..#,..#,..#,#.#,.#.", "K": "#.#,#.#,##.,#.#,#.#",
    "L": "#..,#..,#..,#..,###", "M": "#.#,###,###,#.#,#.#", "N": "##.,#.#,#.#,#.#,#.#",
    "O": ".#.,#.#,#.#,#.#,.#.", "P": "##.,#.#,##.,#..,#..", "Q": ".#.,#.#,#.#,##.,.##",
    "R": "##.,#.#,##.,#.#,#.#", "S": ".##,#..,.#.,..#,##.", "T": "###,.#.,.#.,.#.,.#.",
    "U": "#.#,#.#,#.#,#.#,###", "V": "#.#,#.#,#.#,#.#,.#.", "W": "#.#,#.#,###,###,#.#",
    "X": "#.#,#.#,.#.,#.#,#.#", "Y": "#.#,#.#,.#.,.#.,.#.", "Z": "###,..#,.#.,#..,###",
    ".": "...,...,...,...,.#.", ":": "...,.#.,...,.#.,...", "/": "..#,..#,.#.,#..,#..",
    "-": "...,...,###,...,...", "%": "#.#,..#,.#.,#..,#.#", " ": "...,...,...,...,...",
}
_FONT = {c: np.array([[ch == "#" for ch in row] for row in g.split(",")], bool)
         for c, g in _GLYPHS.items()}


@lru_cache(maxsize=512)
def text_mask(text: str, scale: int = 1) -> np.ndarray:
    """Boolean bitmap ``[5*scale, 4*len*scale]`` of ``text`` (unknown characters print blank).
    Cached: callers must not modify the returned array."""
    cols = []
    for c in text.upper():
        g = _FONT.get(c, _FONT[" "])
        cols.append(np.pad(g, ((0, 0), (0, 1))))
    m = np.concatenate(cols, axis=1) if cols else np.zeros((5, 0), bool)
    return np.kron(m, np.ones((scale, scale), bool)).astype(bool)


def stamp(mask: np.ndarray, bitmap: np.ndarray, y: int, x: int) -> None:
    """OR ``bitmap`` into ``mask`` at top-left ``(y, x)``, clipped to the image."""
    h, w = bitmap.shape
    H, W = mask.shape
    y1, x1 = min(H, y + h), min(W, x + w)
    if y1 > y and x1 > x and y >= 0 and x >= 0:
        mask[y:y1, x:x1] |= bitmap[: y1 - y, : x1 - x]


def ecg_wave(phase: np.ndarray, es_phase: float) -> np.ndarray:
    """Synthetic ECG (P, QRS at phase 0, T near end-systole), amplitude about -0.25..1."""
    p = (phase + 0.5) % 1.0 - 0.5          # centred on the QRS
    qrs = np.exp(-(p / 0.012) ** 2) - 0.25 * np.exp(-((p - 0.03) / 0.012) ** 2) \
        - 0.15 * np.exp(-((p + 0.025) / 0.01) ** 2)
    t_wave = 0.28 * np.exp(-((phase - (es_phase - 0.08)) / 0.05) ** 2)
    p_wave = 0.15 * np.exp(-((phase - 0.9) / 0.03) ** 2)
    return qrs + t_wave + p_wave


def ecg_layer(H: int, W: int, y0: int, phases: np.ndarray, es_phase: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """ECG trace mask ``[H, W]`` in the strip below ``y0`` and per-frame cursor masks
    ``[T, H, W]`` (a dot riding the trace at each frame's phase)."""
    trace = np.zeros((H, W), bool)
    cursor = np.zeros((len(phases), H, W), bool)
    strip = H - y0
    if strip < 5:
        return trace, cursor
    x0, x1 = 3, W - 4
    xs = np.arange(x0, x1)
    offset = rng.uniform(0.05, 0.3)
    span = rng.uniform(1.1, 1.5)         # cycles shown across the strip
    ph = ((xs - x0) / (x1 - x0) * span + offset) % 1.0
    base = y0 + int(strip * 0.7)
    amp = strip * 0.55
    ys = np.clip(np.round(base - amp * ecg_wave(ph, es_phase)).astype(int), y0 + 1, H - 1)
    for i in range(len(xs) - 1):       # connect successive samples vertically
        lo, hi = sorted((ys[i], ys[i + 1]))
        trace[lo:hi + 1, xs[i]] = True
    for t, p in enumerate(phases):
        # first x position on the strip where the trace is at this phase
        d = np.abs(((ph - p) + 0.5) % 1.0 - 0.5)
        i = int(np.argmin(d))
        cy, cx = ys[i], xs[i]
        cursor[t, max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2] = True
    return trace, cursor
