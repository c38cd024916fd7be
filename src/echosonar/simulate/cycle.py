"""The cardiac cycle: phase-dependent volumes, wall thickening and valve opening.

A clip holds one cycle sampled at ``T`` frames, frame 0 at end-diastole (ED, mitral closure,
QRS). Systole runs from phase 0 to ``es_phase`` (end-systole, ES); diastole has rapid filling,
diastasis and the atrial kick. All arrays have shape ``[T]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Cycle:
    """Per-frame cardiac state, every array shape ``[T]``.

    Attributes:
        phase: cycle phase in [0, 1), 0 = ED.
        s: ventricular filling, 1 at ED, 0 at ES.
        mv_open, tv_open: atrioventricular valve opening 0..1 (diastole, E and A waves).
        av_open: semilunar valve opening 0..1 (ejection).
        systole: True while the ventricle ejects (AV open / MR and TR jets).
        ar_phase: True while aortic regurgitation flows (AV closed: diastole + isovolumic).
        es_phase: phase of end-systole; ed_frame / es_frame: frame indices.
        fps: frames per second for the clip's heart rate.
    """

    phase: np.ndarray
    s: np.ndarray
    mv_open: np.ndarray
    tv_open: np.ndarray
    av_open: np.ndarray
    systole: np.ndarray
    ar_phase: np.ndarray
    es_phase: float
    ed_frame: int
    es_frame: int
    fps: float


def _smooth(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def make_cycle(n_frames: int, heart_rate_bpm: float) -> Cycle:
    """One cycle of ``n_frames`` frames at ``heart_rate_bpm`` (ED at frame 0)."""
    phase = np.arange(n_frames, dtype=np.float64) / n_frames
    period = 60.0 / heart_rate_bpm
    # Systolic duration shortens slowly with heart rate (about 0.36 s at 60 bpm).
    es_phase = float(np.clip((0.36 - 0.0012 * (heart_rate_bpm - 60)) / period, 0.28, 0.5))
    sys_ = phase <= es_phase
    s = np.where(sys_, 0.5 * (1 + np.cos(np.pi * phase / es_phase)), 0.0)
    u = (phase - es_phase) / (1 - es_phase)
    dia = 0.78 * _smooth(u / 0.3) + 0.22 * _smooth((u - 0.75) / 0.22)
    s = np.where(sys_, s, dia)
    # AV valves: closed in systole and isovolumic relaxation; E wave, diastasis, A wave.
    e_wave = np.exp(-((u - 0.16) / 0.09) ** 2)
    a_wave = 0.75 * np.exp(-((u - 0.86) / 0.06) ** 2)
    mv = np.clip(np.maximum(e_wave, a_wave) + 0.35 * _smooth((u - 0.1) / 0.1) *
                 _smooth((0.95 - u) / 0.1), 0, 1)
    mv = np.where((u > 0.05) & (u < 0.97), mv, 0.0)
    # Aortic valve: open during ejection (after ~40 ms isovolumic contraction).
    t0 = 0.04 / period
    ej = (phase - t0) / max(es_phase - t0 - 0.01, 1e-3)
    av = np.where((ej > 0) & (ej < 1), np.sqrt(np.clip(np.sin(np.pi * ej), 0, 1)), 0.0)
    av = np.clip(av * 1.3, 0, 1)
    systole = (phase > 0.02) & (phase < es_phase + 0.03)
    ar_phase = (phase > es_phase + 0.04) | (phase < t0)
    es_frame = int(np.argmin(s))
    return Cycle(phase=phase, s=s, mv_open=mv, tv_open=np.clip(mv * 0.95, 0, 1), av_open=av,
                 systole=systole, ar_phase=ar_phase, es_phase=es_phase, ed_frame=0,
                 es_frame=es_frame, fps=n_frames / period)
