"""Physically scaled measurements from box tracks.

Each :data:`RULES` entry says how one ``taxonomy.MEASUREMENTS`` quantity is read from one view:
which structure, which frame (end-diastole, end-systole, or the maximum over the cycle) and which
two box features ``(f1, f2)``. The value is ``c0 * f1 + c1 * f2 + c2`` with per-rule
coefficients stored in the detector (buffer ``measure_calib`` [R, 3]): the defaults are the plain
geometric reading (e.g. LVEDD = LV box width at ED in A4C), and ``fit_calibration`` refits them
by least squares on training clips, because an axis-aligned box of a tilted chamber is wider than
the chamber's minor axis (a calliper is placed perpendicular to the long axis, a box is not).

Rules only use views where the taxonomy says the finding can be assessed (colour views do not
measure LV size, A2C does not measure RV size, ...), since elsewhere a sonographer would not
read it either.

Features (cm use ``cm_per_px`` of the clip's frames; ratios are unit-free):
``w``/``h`` box width/height; ``area_ratio:X`` = box area / area of structure X's box in the
same frame; ``h_ratio:X`` = box height / X's box height.

The measurement *vector* a classifier reads (:func:`measurement_slots`, :func:`raw_values`,
:func:`slot_statistics`, :func:`standardised_measurements`) lives here too, because the VLM's
measurement head (``reason.measure_head``) and the evidence baseline (``encode.baselines``) must
read the detector's numbers the same way and ``encode`` may not import from ``reason``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from echosonar.taxonomy import FINDING_BY_KEY, STRUCTURE_INDEX


@dataclass(frozen=True)
class Rule:
    key: str                # taxonomy.MEASUREMENTS key
    finding: str            # finding whose views say where the quantity can be read
    view: str
    structure: str
    phase: str              # "ed", "es" or "max" (maximum of f1 over frames)
    f1: str
    f2: str = ""
    default: tuple[float, float, float] = (1.0, 0.0, 0.0)


RULES: tuple[Rule, ...] = (
    Rule("lvedd_cm", "lv_enlargement", "A4C", "LV", "ed", "w", "h"),
    Rule("lvedd_cm", "lv_enlargement", "A2C", "LV", "ed", "w", "h"),
    Rule("lvedd_cm", "lv_enlargement", "PLAX", "LV", "ed", "h", "w"),
    Rule("lvesd_cm", "lv_systolic_dysfunction", "A4C", "LV", "es", "w", "h"),
    Rule("lvesd_cm", "lv_systolic_dysfunction", "A2C", "LV", "es", "w", "h"),
    Rule("lvesd_cm", "lv_systolic_dysfunction", "PLAX", "LV", "es", "h", "w"),
    Rule("la_ap_cm", "la_enlargement", "PLAX", "LA", "es", "h", "w"),
    Rule("la_ap_cm", "la_enlargement", "A4C", "LA", "es", "w", "h", (1 / 1.05, 0.0, 0.0)),
    Rule("la_ap_cm", "la_enlargement", "A2C", "LA", "es", "w", "h"),
    Rule("ra_minor_cm", "ra_enlargement", "A4C", "RA", "es", "w", "h"),
    Rule("rv_basal_cm", "rv_enlargement", "A4C", "RV", "ed", "w", "h"),
    Rule("mr_jet_ratio", "mitral_regurgitation", "A4C_COLOR", "MR_JET", "max", "area_ratio:LA"),
    Rule("mr_jet_ratio", "mitral_regurgitation", "PLAX_COLOR", "MR_JET", "max", "area_ratio:LA"),
    Rule("tr_jet_ratio", "tricuspid_regurgitation", "A4C_COLOR", "TR_JET", "max",
         "area_ratio:RA"),
    Rule("ar_jet_ratio", "aortic_regurgitation", "PLAX_COLOR", "AR_JET", "max", "h_ratio:LVOT"),
    Rule("pe_depth_cm", "pericardial_effusion", "PLAX", "PE", "max", "h", "w"),
    Rule("pe_depth_cm", "pericardial_effusion", "A4C", "PE", "max", "w", "h",
         (0.25, 0.0, 0.0)),
)
for _r in RULES:  # every rule must sit in a view where its finding is assessable
    assert _r.view in FINDING_BY_KEY[_r.finding].views, _r
N_RULES = len(RULES)
DEFAULT_CALIB = np.array([r.default for r in RULES], np.float32)
#: quantities that are 0 (not missing) when their structure is absent from a view that shows it
ZERO_WHEN_ABSENT = ("mr_jet_ratio", "tr_jet_ratio", "ar_jet_ratio", "pe_depth_cm")


def teichholz_volume(d_cm: float) -> float:
    """LV volume (mL) from a diameter (cm): V = 7 D^3 / (2.4 + D)."""
    return 7.0 * d_cm ** 3 / (2.4 + d_cm)


def ef_teichholz(edd_cm: float, esd_cm: float) -> float:
    """Ejection fraction (%) from end-diastolic and end-systolic diameters (Teichholz).

    >>> round(ef_teichholz(5.0, 3.3), 1)
    62.7
    """
    ved, ves = teichholz_volume(edd_cm), teichholz_volume(esd_cm)
    return 100.0 * (ved - ves) / max(ved, 1e-6)


def _feature(name: str, k: int, t: int | np.ndarray, tracks: np.ndarray,
             scale_cm: np.ndarray) -> float | np.ndarray:
    """One feature of structure ``k`` at frame(s) ``t``. tracks [T, K, 4] xyxy 0..1."""
    b = tracks[t, k]
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    if name == "w":
        return w * scale_cm[0]
    if name == "h":
        return h * scale_cm[1]
    kind, other = name.split(":")
    o = tracks[t, STRUCTURE_INDEX[other]]
    ow, oh = o[..., 2] - o[..., 0], o[..., 3] - o[..., 1]
    if kind == "area_ratio":
        return w * h / np.maximum(ow * oh, 1e-6)
    if kind == "h_ratio":
        return h / np.maximum(oh, 1e-6)
    raise ValueError(f"unknown measurement feature {name!r}")


def rule_features(view: str, tracks: np.ndarray, frame_scores: np.ndarray, present: np.ndarray,
                  ed: int, es: int, cm_per_px: float, frame_hw: tuple[int, int],
                  threshold: float = 0.5) -> list[tuple[int, float, float] | tuple[int, None, None]]:
    """Features of every rule of ``view``: ``[(rule_index, f1, f2)]``; ``f1 = None`` when the
    structure is absent. Rules in cm are left out when ``cm_per_px`` is unknown (NaN).

    tracks [T, K, 4] xyxy 0..1; frame_scores [T, K]; present [K] bool; ed/es frame indices.
    """
    h, w = frame_hw
    scale = np.array([w * cm_per_px, h * cm_per_px]) if math.isfinite(cm_per_px) else None
    out: list = []
    for i, r in enumerate(RULES):
        if r.view != view:
            continue
        k = STRUCTURE_INDEX[r.structure]
        if r.f1 in ("w", "h") and scale is None:
            continue
        if not present[k]:
            out.append((i, None, None))
            continue
        sc = scale if scale is not None else np.ones(2)
        if r.phase == "max":
            need = [k] + ([STRUCTURE_INDEX[r.f1.split(":")[1]]] if ":" in r.f1 else [])
            ok = np.all(frame_scores[:, need] >= threshold, axis=1)
            frames = np.nonzero(ok)[0] if ok.any() else np.array([int(frame_scores[:, k].argmax())])
            f1s = np.asarray(_feature(r.f1, k, frames, tracks, sc))
            t = int(frames[int(f1s.argmax())])
        else:
            t = ed if r.phase == "ed" else es
        f1 = float(_feature(r.f1, k, t, tracks, sc))
        f2 = float(_feature(r.f2, k, t, tracks, sc)) if r.f2 else 0.0
        out.append((i, f1, f2))
    return out


def measurement_slots() -> list[tuple[str, str]]:
    """Every ``(view, quantity)`` the detector can measure (:data:`RULES`, plus ``lv_fs_pct``
    and ``ef_proxy_pct`` wherever both LV diameters are measured), sorted.

    >>> ("A4C_COLOR", "tr_jet_ratio") in measurement_slots()
    True
    """
    slots = {(r.view, r.key) for r in RULES}
    for v in {r.view for r in RULES}:
        if (v, "lvedd_cm") in slots and (v, "lvesd_cm") in slots:
            slots |= {(v, "lv_fs_pct"), (v, "ef_proxy_pct")}
    return sorted(slots)


def apply_rules(view: str, feats: list, calib: np.ndarray) -> dict[str, float]:
    """Measurements of one clip from its rule features and coefficients ``calib`` [R, 3]."""
    out: dict[str, float] = {}
    for i, f1, f2 in feats:
        r = RULES[i]
        if f1 is None:  # structure absent: an absent jet or effusion measures 0
            if r.key in ZERO_WHEN_ABSENT:
                out.setdefault(r.key, 0.0)
            continue
        c = calib[i]
        val = float(c[0] * f1 + c[1] * f2 + c[2])
        out[r.key] = max(val, 0.0)
    if "lvedd_cm" in out and "lvesd_cm" in out and out["lvedd_cm"] > 0:
        edd, esd = out["lvedd_cm"], min(out["lvesd_cm"], out["lvedd_cm"])
        out["lv_fs_pct"] = 100.0 * (edd - esd) / edd
        out["ef_proxy_pct"] = ef_teichholz(edd, esd)
    return out


def fit_calibration(samples: list[tuple[int, float, float, float]], min_samples: int = 12,
                    ridge: float = 1e-3) -> np.ndarray:
    """Least-squares coefficients ``[R, 3]`` from ``(rule_index, f1, f2, truth)`` samples.

    Rules with fewer than ``min_samples`` samples keep their default. A small ridge keeps the
    fit stable when f1 and f2 are nearly collinear.
    """
    calib = DEFAULT_CALIB.copy()
    for i in range(N_RULES):
        rows = [(f1, f2, y) for j, f1, f2, y in samples if j == i]
        if len(rows) < min_samples:
            continue
        a = np.array([[f1, f2, 1.0] for f1, f2, _ in rows], np.float64)
        y = np.array([v for _, _, v in rows], np.float64)
        reg = ridge * len(rows) * np.diag([1.0, 1.0, 0.0])
        calib[i] = np.linalg.solve(a.T @ a + reg, a.T @ y).astype(np.float32)
    return calib


def study_measurements(per_clip: list[dict[str, float]]) -> dict[str, float]:
    """Merge clip measurements into one study value per key (mean over the clips giving it;
    the EF proxy is the mean of the clips' EF proxies)."""
    acc: dict[str, list[float]] = {}
    for m in per_clip:
        for k, v in m.items():
            acc.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}


# ---------------------------------------------------------------------------------------------
# The measurement vector: one slot per (view, quantity), standardised, with presence bits
# ---------------------------------------------------------------------------------------------

#: standardised values are clipped to +-Z_CLIP (a wild detector reading must not dominate)
Z_CLIP = 6.0


def numeric_measurements(measurements: dict) -> list[tuple[str, float]]:
    """``[(key, value)]`` of the finite numbers among a view's measurements, sorted by key
    (the detector also stores strings and flags there).

    >>> numeric_measurements({"b": 1.5, "a": float("nan"), "c": True, "d": "x", "e": 2})
    [('b', 1.5), ('e', 2)]
    """
    return [(k, x) for k, x in sorted(measurements.items())
            if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)]


def raw_values(sf: Any, slots: Sequence[tuple[str, str]]) -> list[float]:
    """A study's finite measurement per slot (NaN where the view or value is missing).

    ``sf`` is a ``schema.StudyFeatures`` (anything with ``views``, each with ``view`` and
    ``measurements``); a view seen twice gives its last clip's value.

    >>> from types import SimpleNamespace as S
    >>> sf = S(views=[S(view="A4C", measurements={"lvedd_cm": 5.1, "note": "x"})])
    >>> raw_values(sf, [("A4C", "lvedd_cm"), ("PLAX", "lvedd_cm")])
    [5.1, nan]
    """
    by = {(v.view, k): x for v in sf.views
          for k, x in numeric_measurements(v.measurements or {})}
    return [float(by.get(s, math.nan)) for s in slots]


def measurement_values(studies: Sequence[Any], slots: Sequence[tuple[str, str]],
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``[S, M]`` raw values of ``studies`` (:func:`raw_values` rows; NaN = not measured)."""
    rows = [raw_values(sf, slots) for sf in studies]
    return torch.tensor(rows, dtype=dtype).reshape(len(rows), len(slots))


def slot_statistics(values: torch.Tensor, mean: torch.Tensor | None = None,
                    std: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-slot ``(mean, std)`` float64 ``[M]`` of raw ``values [S, M]`` (the training split),
    NaN ignored. Slots measured fewer than twice keep the given ``mean``/``std`` (default 0/1,
    i.e. "read as missing"); std is floored at 1e-3 so a constant slot cannot blow up.

    >>> m, s = slot_statistics(torch.tensor([[1.0, float("nan")], [3.0, 2.0]]))
    >>> m.tolist(), [round(x, 4) for x in s.tolist()]
    ([2.0, 0.0], [1.4142, 1.0])
    """
    x = values.to(torch.float64)
    m = x.new_zeros(x.shape[1]) if mean is None else mean.detach().to("cpu", torch.float64)
    s = x.new_ones(x.shape[1]) if std is None else std.detach().to("cpu", torch.float64)
    m, s = m.clone(), s.clone()
    for j in range(x.shape[1]):
        col = x[:, j][~torch.isnan(x[:, j])]
        if len(col) >= 2:
            m[j] = float(col.mean())
            s[j] = max(float(col.std()), 1e-3)
    return m, s


def standardised_measurements(values: torch.Tensor, mean: torch.Tensor,
                              std: torch.Tensor) -> torch.Tensor:
    """Raw ``values [B, M]`` (NaN = missing) -> ``[B, 2M]``: per slot the z-score with the
    training ``mean``/``std [M]``, clipped to +-:data:`Z_CLIP`, then the presence bits; a
    missing value reads 0 with presence 0.

    >>> standardised_measurements(torch.tensor([[4.0, float("nan")]]), torch.tensor([2.0, 0.0]),
    ...                           torch.tensor([1.0, 1.0])).tolist()
    [[2.0, 0.0, 1.0, 0.0]]
    """
    present = ~torch.isnan(values)
    z = ((values - mean) / std).clamp(-Z_CLIP, Z_CLIP)
    z = torch.where(present, z, torch.zeros_like(z))
    return torch.cat([z, present.to(z.dtype)], -1)
