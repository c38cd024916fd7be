"""Study sampling: the patient (measurements, labels) and the protocol (which views).

Measurements come from latent disease processes with configurable prevalences
(``SimConfig.prev_*``) that produce the clinically expected correlations: cardiomyopathy gives low
EF with LV dilation, LA enlargement and functional MR; calcific AS comes with MV calcification and
LVH; primary MR enlarges the LA; pulmonary hypertension enlarges the RV/RA with TR; a bicuspid
valve may be stenotic or regurgitant. A fraction of studies (``borderline_prob``) get one or two
measurements placed within ±8% of their cut-off, so labels are not trivially separable.
Labels are ALWAYS ``taxonomy.labels_from_measurements(measurements)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from echosonar.config.sim import SimConfig
from echosonar.taxonomy import labels_from_measurements

SPLITS = ("train", "val", "test")


@dataclass
class StudySpec:
    """Everything needed to render and describe one study (JSON-able).

    Attributes:
        index: position in the study set; with ``seed`` it fixes every random draw.
        key: non-identifying study key, e.g. ``"sim0-default-000007"``.
        seed: the set's seed.
        split: "train", "val" or "test".
        measurements: every ``taxonomy.MEASUREMENTS`` key.
        labels: ``labels_from_measurements(measurements)``.
        views: views acquired, in ``taxonomy.VIEWS`` order.
        patient: anatomy/imaging traits shared by the study's clips (heart axis angle,
            LV shape, image quality, LV wall-motion pattern).
    """

    index: int
    key: str
    seed: int
    split: str
    measurements: dict[str, Any]
    labels: dict[str, int]
    views: list[str]
    patient: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def study_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """Independent generator for (seed, study index, stream); stream 0 samples the study,
    stream 1 + view index renders a clip. Independent of worker count and of other studies."""
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, index, stream]))


def study_key(cfg: SimConfig, index: int) -> str:
    return f"sim{cfg.seed}-{cfg.preset}-{index:06d}"


def split_of(cfg: SimConfig, index: int) -> str:
    """Deterministic split from a dedicated stream, so splits do not depend on other draws."""
    u = study_rng(cfg.seed, index, 10_000).random()
    edges = np.cumsum(cfg.split_fractions)
    return SPLITS[min(int(np.searchsorted(edges, u, side="right")), 2)]


def lvesd_from_ef(lvedd: float, ef_pct: float) -> float:
    """End-systolic diameter that gives ``ef_pct`` with LVEDD by the Teichholz formula
    V = 7 D^3 / (2.4 + D)."""
    grid = np.linspace(1.0, 9.0, 801)
    vol = 7.0 * grid ** 3 / (2.4 + grid)
    v_ed = 7.0 * lvedd ** 3 / (2.4 + lvedd)
    return float(np.interp(v_ed * (1.0 - ef_pct / 100.0), vol, grid))


# Cut-offs used to place borderline values (key, cut-off function of the measurements).
_BORDERLINE = (
    ("ef_pct", lambda m: 50.0),
    ("lvedd_cm", lambda m: 5.8 if m["sex"] == "M" else 5.2),
    ("ivs_cm", lambda m: 1.2),
    ("la_ap_cm", lambda m: 4.0),
    ("ra_minor_cm", lambda m: 4.4),
    ("rv_basal_cm", lambda m: 4.1),
    ("av_opening_cm", lambda m: 1.5),
    ("mv_calc_score", lambda m: 0.5),
    ("mr_jet_ratio", lambda m: 0.20),
    ("tr_jet_ratio", lambda m: 0.20),
    ("ar_jet_ratio", lambda m: 0.25),
    ("pe_depth_cm", lambda m: 0.5),
)


def sample_measurements(rng: np.random.Generator, cfg: SimConfig) -> dict[str, Any]:
    """Draw one patient's measurements (every ``taxonomy.MEASUREMENTS`` key)."""
    u = rng.uniform
    male = rng.random() < 0.5
    m: dict[str, Any] = {
        "sex": "M" if male else "F",
        "heart_rate_bpm": float(np.clip(rng.normal(72, 11), 48, 115)),
        "ef_pct": float(np.clip(rng.normal(62, 5), 52, 75)),
        "lvedd_cm": float(np.clip(rng.normal(4.9 if male else 4.5, 0.35), 3.8,
                                  5.6 if male else 5.1)),
        "ivs_cm": float(np.clip(rng.normal(0.9, 0.11), 0.6, 1.12)),
        "la_ap_cm": float(np.clip(rng.normal(3.4, 0.3), 2.6, 3.9)),
        "ra_minor_cm": float(np.clip(rng.normal(3.7, 0.3), 2.9, 4.3)),
        "rv_basal_cm": float(np.clip(rng.normal(3.3, 0.3), 2.5, 4.0)),
        "av_cusps": 3,
        "av_opening_cm": float(np.clip(rng.normal(2.0, 0.18), 1.6, 2.5)),
        "mv_calc_score": float(u(0.0, 0.3)),
        "mr_jet_ratio": float(u(0.05, 0.17) if rng.random() < 0.35 else u(0.0, 0.04)),
        "tr_jet_ratio": float(u(0.05, 0.17) if rng.random() < 0.4 else u(0.0, 0.04)),
        "ar_jet_ratio": float(u(0.05, 0.2) if rng.random() < 0.12 else 0.0),
        "pe_depth_cm": float(u(0.1, 0.4) if rng.random() < 0.08 else 0.0),
    }
    m["lvpw_cm"] = float(np.clip(m["ivs_cm"] + rng.normal(0, 0.05), 0.6, 1.12))
    p = cfg
    if rng.random() < p.prev_cardiomyopathy:
        m["ef_pct"] = float(u(18, 49))
        if rng.random() < 0.75:
            m["lvedd_cm"] += float(u(0.5, 2.0))
        if rng.random() < 0.6:
            m["la_ap_cm"] += float(u(0.4, 1.5))
        if rng.random() < 0.45:
            m["mr_jet_ratio"] = float(u(0.12, 0.5))
        if rng.random() < 0.2:
            m["tr_jet_ratio"] = float(u(0.12, 0.45))
        if rng.random() < 0.15:
            m["rv_basal_cm"] += float(u(0.5, 1.5))
    if rng.random() < p.prev_hypertensive:
        thick = float(u(0.25, 0.8))
        m["ivs_cm"] += thick
        m["lvpw_cm"] += thick * float(u(0.7, 1.0))
        if rng.random() < 0.5:
            m["la_ap_cm"] += float(u(0.2, 0.9))
    bicuspid = rng.random() < p.prev_bicuspid
    if bicuspid:
        m["av_cusps"] = 2
        r = rng.random()
        if r < 0.35:
            m["av_opening_cm"] = float(u(0.6, 1.45))
        elif r < 0.65:
            m["ar_jet_ratio"] = float(u(0.25, 0.65))
        else:
            m["av_opening_cm"] = float(u(1.5, 1.9))
    if rng.random() < p.prev_aortic_stenosis:
        m["av_opening_cm"] = float(u(0.5, 1.45))
        if rng.random() < 0.6:
            m["mv_calc_score"] = float(u(0.45, 0.95))
        if rng.random() < 0.5:
            thick = float(u(0.2, 0.6))
            m["ivs_cm"] += thick
            m["lvpw_cm"] += thick * float(u(0.7, 1.0))
        if rng.random() < 0.3:
            m["ar_jet_ratio"] = max(m["ar_jet_ratio"], float(u(0.1, 0.45)))
    if rng.random() < p.prev_mitral_regurgitation:
        m["mr_jet_ratio"] = float(u(0.2, 0.7))
        if rng.random() < 0.8:
            m["la_ap_cm"] += float(u(0.5, 1.8))
        if rng.random() < 0.35:
            m["lvedd_cm"] += float(u(0.4, 1.2))
    if rng.random() < p.prev_right_heart:
        if rng.random() < 0.65:
            m["rv_basal_cm"] += float(u(0.8, 2.0))
        if rng.random() < 0.75:
            m["ra_minor_cm"] += float(u(0.6, 2.0))
        if rng.random() < 0.7:
            m["tr_jet_ratio"] = float(u(0.2, 0.65))
    if rng.random() < p.prev_tricuspid_regurgitation:
        m["tr_jet_ratio"] = max(m["tr_jet_ratio"], float(u(0.2, 0.7)))
        if rng.random() < 0.7:
            m["ra_minor_cm"] += float(u(0.5, 1.8))
        if rng.random() < 0.3:
            m["rv_basal_cm"] += float(u(0.5, 1.3))
    if rng.random() < p.prev_aortic_regurgitation:
        m["ar_jet_ratio"] = float(u(0.25, 0.75))
        if rng.random() < 0.45:
            m["lvedd_cm"] += float(u(0.5, 1.5))
    if rng.random() < p.prev_effusion:
        m["pe_depth_cm"] = float(u(0.5, 2.8))
    if rng.random() < p.prev_mv_calcification:
        m["mv_calc_score"] = float(u(0.5, 1.0))
    if rng.random() < p.borderline_prob:
        for i in rng.choice(len(_BORDERLINE), size=int(rng.integers(1, 3)), replace=False):
            key, cut = _BORDERLINE[int(i)]
            c = cut(m)
            m[key] = float(c * (1.0 + u(-0.08, 0.08)))
            if key == "ivs_cm":
                m["lvpw_cm"] = float(min(m["lvpw_cm"], m["ivs_cm"] + 0.05))
    # keep everything physiological, then derive LVESD from EF and LVEDD (Teichholz)
    m["ef_pct"] = float(np.clip(m["ef_pct"], 12, 78))
    m["lvedd_cm"] = float(np.clip(m["lvedd_cm"], 3.6, 8.2))
    m["la_ap_cm"] = float(np.clip(m["la_ap_cm"], 2.4, 6.5))
    m["ra_minor_cm"] = float(np.clip(m["ra_minor_cm"], 2.6, 6.8))
    m["rv_basal_cm"] = float(np.clip(m["rv_basal_cm"], 2.3, 6.2))
    m["ivs_cm"] = float(np.clip(m["ivs_cm"], 0.55, 2.2))
    m["lvpw_cm"] = float(np.clip(m["lvpw_cm"], 0.55, 2.2))
    m["av_opening_cm"] = float(np.clip(m["av_opening_cm"], 0.4, 2.6))
    for k in ("mv_calc_score", "mr_jet_ratio", "tr_jet_ratio", "ar_jet_ratio"):
        m[k] = float(np.clip(m[k], 0.0, 0.95))
    m["pe_depth_cm"] = float(np.clip(m["pe_depth_cm"], 0.0, 3.0))
    if m["ef_pct"] < 45:  # failing hearts run faster
        m["heart_rate_bpm"] = float(min(125.0, m["heart_rate_bpm"] + u(0, 15)))
    m["lvesd_cm"] = lvesd_from_ef(m["lvedd_cm"], m["ef_pct"])
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in m.items()}


def sample_views(rng: np.random.Generator, cfg: SimConfig,
                 labels: dict[str, int] | None = None) -> list[str]:
    """Views acquired: required ones always, others missing with ``missing_view_prob``.

    A positive finding always keeps at least one view that shows it (its first allowed view
    is added back), so no target asserts a finding the study cannot show; negative findings
    may become "not assessable".
    """
    from echosonar.taxonomy import FINDINGS, VIEWS

    keep = {v for v in VIEWS if v in cfg.views and
            (v in cfg.required_views or rng.random() >= cfg.missing_view_prob)}
    for f in FINDINGS:
        if labels and labels.get(f.key) and not keep & set(f.views):
            allowed = [v for v in f.views if v in cfg.views]
            if allowed:
                keep.add(allowed[0])
    return [v for v in VIEWS if v in keep]


def sample_neutral(rng: np.random.Generator, sex: str) -> dict[str, float]:
    """Normal values shown in views where a finding cannot be assessed (see
    :func:`echosonar.simulate.views.visible_measurements`)."""
    u = rng.uniform
    return {
        "ef_pct": float(u(55, 68)), "lvedd_cm": float(u(4.4, 5.2) if sex == "M" else u(4.1, 4.8)),
        "ivs_cm": float(u(0.8, 1.0)), "lvpw_cm": float(u(0.8, 1.0)), "la_ap_cm": float(u(3.0, 3.7)),
        "ra_minor_cm": float(u(3.3, 4.0)), "rv_basal_cm": float(u(2.9, 3.6)),
        "av_opening_cm": float(u(1.8, 2.2)), "av_cusps": 3, "mv_calc_score": float(u(0.0, 0.2)),
        "mr_jet_ratio": 0.0, "tr_jet_ratio": 0.0, "ar_jet_ratio": 0.0, "pe_depth_cm": 0.0,
    }


def sample_patient(rng: np.random.Generator, cfg: SimConfig, m: dict[str, Any]) -> dict[str, Any]:
    """Anatomy and imaging traits shared by a study's clips."""
    q = cfg.quality_spread
    return {
        "heart_angle_deg": float(rng.normal(8.0, 5.0 * cfg.jitter)),
        "lv_length_ratio": float(rng.uniform(1.45, 1.75)),
        "quality": float(np.clip(1.0 - q * abs(rng.normal(0, 0.35)), 0.2, 1.0)),
        "tissue_texture": float(rng.uniform(0.2, 0.5)),
        "root_cm": float(rng.uniform(2.5, 3.3)),
        "apical_akinesis": float(rng.random() < 0.5),   # used only when EF < 45%
        "mr_ecc_deg": float(rng.normal(0, 14)),
        "tr_ecc_deg": float(rng.normal(0, 12)),
        "av_rot_deg": float(rng.normal(0, 12)),
        "neutral": sample_neutral(rng, m["sex"]),
    }


def sample_study(rng: np.random.Generator, cfg: SimConfig, index: int = 0) -> StudySpec:
    """Sample one study: measurements, labels, views, patient traits. Deterministic in ``rng``."""
    m = sample_measurements(rng, cfg)
    labels = labels_from_measurements(m)
    views = sample_views(rng, cfg, labels)
    patient = sample_patient(rng, cfg, m)
    return StudySpec(index=index, key=study_key(cfg, index), seed=cfg.seed,
                     split=split_of(cfg, index), measurements=m, labels=labels, views=views,
                     patient=patient)


def spec_for_index(cfg: SimConfig, index: int) -> StudySpec:
    """The study at ``index`` of the set defined by ``cfg`` (seed, preset, prevalences)."""
    return sample_study(study_rng(cfg.seed, index, 0), cfg, index)
