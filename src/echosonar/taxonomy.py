"""The single source of truth for views, structures and findings.

Everything that names a view, a detector class or a finding reads it from here: the simulator,
the ingest view classifier, the detector, the prompt builder, the strict parser, the rewards and
the evaluation. Nothing else keeps its own list.

Cut-offs follow the simplified adult values of the brief (section 4, ASE 2019). Each finding has
one ``positive(m)`` rule over the study's measurements dict, so labels and measurements can never
disagree, and one ``severity(m)`` used by the report writer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# --------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------

#: Views a study can contain, in the canonical order used for prompts and tensors.
VIEWS: tuple[str, ...] = ("A4C", "A2C", "PLAX", "PSAX_AV", "A4C_COLOR", "PLAX_COLOR")
#: Extra class of the view classifier for clips that are none of the above.
OTHER_VIEW = "OTHER"
CLASSIFIER_VIEWS: tuple[str, ...] = VIEWS + (OTHER_VIEW,)
#: Human names, used in prompts, reasoning and reports.
VIEW_NAMES: dict[str, str] = {
    "A4C": "apical 4-chamber",
    "A2C": "apical 2-chamber",
    "PLAX": "parasternal long-axis",
    "PSAX_AV": "parasternal short-axis at aortic-valve level",
    "A4C_COLOR": "apical 4-chamber colour Doppler",
    "PLAX_COLOR": "parasternal long-axis colour Doppler",
    OTHER_VIEW: "other / unclassified view",
}
COLOR_VIEWS: frozenset[str] = frozenset({"A4C_COLOR", "PLAX_COLOR"})


def check_view(view: str) -> str:
    """Return ``view`` if known, else raise ``ValueError`` naming the known views.

    >>> check_view("A4C")
    'A4C'
    """
    if view not in CLASSIFIER_VIEWS:
        raise ValueError(f"unknown view {view!r}; known views: {', '.join(CLASSIFIER_VIEWS)}")
    return view


# --------------------------------------------------------------------------------------------
# Structures (detector classes)
# --------------------------------------------------------------------------------------------

#: Detector classes. The paper's seven, plus AV, pericardial effusion and three jet classes
#: (a jet's class already says its receiving chamber, so no post-hoc chamber logic is needed).
STRUCTURES: tuple[str, ...] = (
    "LV", "LA", "RA", "RV", "MV", "TV", "LVOT", "AV", "PE", "MR_JET", "TR_JET", "AR_JET",
)
STRUCTURE_NAMES: dict[str, str] = {
    "LV": "left ventricle", "LA": "left atrium", "RA": "right atrium", "RV": "right ventricle",
    "MV": "mitral valve", "TV": "tricuspid valve", "LVOT": "LV outflow tract",
    "AV": "aortic valve", "PE": "pericardial effusion", "MR_JET": "mitral regurgitant jet",
    "TR_JET": "tricuspid regurgitant jet", "AR_JET": "aortic regurgitant jet",
}
STRUCTURE_INDEX: dict[str, int] = {s: i for i, s in enumerate(STRUCTURES)}
#: Structures that are always present when their view is present (jets and effusion are not:
#: they appear only with the matching finding).
VIEW_STRUCTURES: dict[str, tuple[str, ...]] = {
    "A4C": ("LV", "LA", "RA", "RV", "MV", "TV"),
    "A2C": ("LV", "LA", "MV"),
    "PLAX": ("LV", "LA", "RV", "MV", "LVOT", "AV"),
    "PSAX_AV": ("AV", "LA", "RA", "RV"),
    "A4C_COLOR": ("LV", "LA", "RA", "RV", "MV", "TV"),
    "PLAX_COLOR": ("LV", "LA", "RV", "MV", "LVOT", "AV"),
}
#: Conditional structures: appear in these views only when the study has the finding.
CONDITIONAL_STRUCTURES: dict[str, tuple[str, tuple[str, ...]]] = {
    "PE": ("pericardial_effusion", ("A4C", "PLAX", "A4C_COLOR", "PLAX_COLOR")),
    "MR_JET": ("mitral_regurgitation", ("A4C_COLOR", "PLAX_COLOR")),
    "TR_JET": ("tricuspid_regurgitation", ("A4C_COLOR",)),
    "AR_JET": ("aortic_regurgitation", ("PLAX_COLOR",)),
}

# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

#: Ground-truth measurement keys (physical units) the simulator must produce for every study.
MEASUREMENTS: dict[str, str] = {
    "sex": "'M' or 'F' (cut-offs for LV size depend on it)",
    "heart_rate_bpm": "heart rate, beats per minute",
    "ef_pct": "LV ejection fraction, %",
    "lvedd_cm": "LV end-diastolic diameter, cm",
    "lvesd_cm": "LV end-systolic diameter, cm",
    "ivs_cm": "interventricular septal thickness at end-diastole, cm",
    "lvpw_cm": "LV posterior wall thickness at end-diastole, cm",
    "la_ap_cm": "LA antero-posterior diameter, cm",
    "ra_minor_cm": "RA minor-axis diameter, cm",
    "rv_basal_cm": "RV basal diameter, cm",
    "av_cusps": "number of aortic cusps (2 = bicuspid, 3 = trileaflet)",
    "av_opening_cm": "maximal aortic cusp separation in systole, cm",
    "mv_calc_score": "mitral annular/leaflet calcification, 0 (none) .. 1 (heavy)",
    "mr_jet_ratio": "MR colour jet area / LA area, 0..1",
    "tr_jet_ratio": "TR colour jet area / RA area, 0..1",
    "ar_jet_ratio": "AR jet width / LVOT width, 0..1",
    "pe_depth_cm": "maximal pericardial effusion depth, cm (0 = none)",
}

# --------------------------------------------------------------------------------------------
# Findings
# --------------------------------------------------------------------------------------------

Rule = Callable[[Mapping[str, float]], bool]
Grade = Callable[[Mapping[str, float]], str]


def _lvedd_limit(m: Mapping[str, float]) -> float:
    return 5.8 if m.get("sex", "M") == "M" else 5.2


def _grade(value: float, moderate: float, severe: float) -> str:
    if value >= severe:
        return "severe"
    if value >= moderate:
        return "moderate"
    return "mild"


@dataclass(frozen=True)
class Finding:
    """One label of the multi-label task.

    Attributes:
        key: snake_case identifier used in code, manifests and metric tables.
        name: the exact text the language model must write in its answer.
        section: the report section that discusses it.
        views: views where a sonographer can assess it; elsewhere it is "not assessable".
        structures: detector classes that ground it (cited in the reasoning).
        cutoff: the rule in words, for documentation and reasoning text.
        positive: rule over the measurements dict.
        severity: grade over the measurements dict (only meaningful when positive).
    """

    key: str
    name: str
    section: str
    views: tuple[str, ...]
    structures: tuple[str, ...]
    cutoff: str
    positive: Rule = field(repr=False)
    severity: Grade = field(repr=False)


FINDINGS: tuple[Finding, ...] = (
    Finding("lv_systolic_dysfunction", "LV systolic dysfunction", "LV", ("A4C", "A2C", "PLAX"),
            ("LV",), "LVEF < 50%", lambda m: m["ef_pct"] < 50.0,
            lambda m: "severe" if m["ef_pct"] < 30 else "moderate" if m["ef_pct"] < 40 else "mild"),
    Finding("lv_enlargement", "LV enlargement", "LV", ("PLAX", "A4C", "A2C"), ("LV",),
            "LVEDD > 5.8 cm (men) / > 5.2 cm (women)", lambda m: m["lvedd_cm"] > _lvedd_limit(m),
            lambda m: _grade(m["lvedd_cm"] - _lvedd_limit(m), 0.4, 0.9)),
    Finding("lv_hypertrophy", "LV hypertrophy", "LV", ("PLAX", "A4C"), ("LV",),
            "septal or posterior wall >= 1.2 cm", lambda m: max(m["ivs_cm"], m["lvpw_cm"]) >= 1.2,
            lambda m: _grade(max(m["ivs_cm"], m["lvpw_cm"]), 1.4, 1.7)),
    Finding("la_enlargement", "LA enlargement", "LA", ("PLAX", "A4C", "A2C"), ("LA",),
            "LA antero-posterior diameter > 4.0 cm", lambda m: m["la_ap_cm"] > 4.0,
            lambda m: _grade(m["la_ap_cm"], 4.7, 5.2)),
    Finding("ra_enlargement", "RA enlargement", "RA", ("A4C",), ("RA",),
            "RA minor axis > 4.4 cm", lambda m: m["ra_minor_cm"] > 4.4,
            lambda m: _grade(m["ra_minor_cm"], 5.0, 5.5)),
    Finding("rv_enlargement", "RV enlargement", "RV", ("A4C",), ("RV",),
            "RV basal diameter > 4.1 cm", lambda m: m["rv_basal_cm"] > 4.1,
            lambda m: _grade(m["rv_basal_cm"], 4.6, 5.1)),
    Finding("aortic_stenosis", "aortic stenosis", "aortic", ("PLAX", "PSAX_AV"), ("AV",),
            "thickened, restricted cusps with systolic separation < 1.5 cm",
            lambda m: m["av_opening_cm"] < 1.5,
            lambda m: "severe" if m["av_opening_cm"] < 0.8 else
            "moderate" if m["av_opening_cm"] < 1.1 else "mild"),
    Finding("bicuspid_aortic_valve", "bicuspid aortic valve", "aortic", ("PSAX_AV",), ("AV",),
            "two cusps with a fish-mouth opening in PSAX", lambda m: int(m["av_cusps"]) == 2,
            lambda m: "present"),
    Finding("mitral_valve_calcification", "mitral valve calcification", "mitral",
            ("PLAX", "A4C"), ("MV",), "calcification score >= 0.5",
            lambda m: m["mv_calc_score"] >= 0.5, lambda m: _grade(m["mv_calc_score"], 0.7, 0.85)),
    Finding("mitral_regurgitation", "mitral regurgitation", "mitral", ("A4C_COLOR", "PLAX_COLOR"),
            ("MR_JET", "LA"), "moderate or worse: jet area >= 20% of LA area",
            lambda m: m["mr_jet_ratio"] >= 0.20, lambda m: _grade(m["mr_jet_ratio"], 0.20, 0.40)),
    Finding("tricuspid_regurgitation", "tricuspid regurgitation", "tricuspid", ("A4C_COLOR",),
            ("TR_JET", "RA"), "moderate or worse: jet area >= 20% of RA area",
            lambda m: m["tr_jet_ratio"] >= 0.20, lambda m: _grade(m["tr_jet_ratio"], 0.20, 0.40)),
    Finding("aortic_regurgitation", "aortic regurgitation", "aortic", ("PLAX_COLOR",),
            ("AR_JET", "LVOT"), "moderate or worse: jet width >= 25% of LVOT width",
            lambda m: m["ar_jet_ratio"] >= 0.25, lambda m: _grade(m["ar_jet_ratio"], 0.25, 0.65)),
    Finding("pericardial_effusion", "pericardial effusion", "pericardium",
            ("A4C", "PLAX", "A4C_COLOR", "PLAX_COLOR"), ("PE",), "effusion depth >= 0.5 cm",
            lambda m: m["pe_depth_cm"] >= 0.5,
            lambda m: "large" if m["pe_depth_cm"] >= 2.0 else
            "moderate" if m["pe_depth_cm"] >= 1.0 else "small"),
)
#: The label when no finding is positive.
HEALTHY = Finding("healthy", "healthy", "conclusion", VIEWS, (), "no finding is positive",
                  lambda m: False, lambda m: "")
#: All labels of the classification task, in canonical order (diseases first, healthy last).
LABELS: tuple[Finding, ...] = FINDINGS + (HEALTHY,)
LABEL_KEYS: tuple[str, ...] = tuple(f.key for f in LABELS)
FINDING_BY_KEY: dict[str, Finding] = {f.key: f for f in LABELS}
FINDING_BY_NAME: dict[str, Finding] = {f.name: f for f in LABELS}

#: Report sections, in the order a report writes them.
REPORT_SECTIONS: tuple[str, ...] = (
    "LV", "RV", "LA", "RA", "mitral", "aortic", "tricuspid", "pericardium", "conclusion",
)
REPORT_SECTION_TITLES: dict[str, str] = {
    "LV": "Left ventricle", "RV": "Right ventricle", "LA": "Left atrium", "RA": "Right atrium",
    "mitral": "Mitral valve", "aortic": "Aortic valve", "tricuspid": "Tricuspid valve",
    "pericardium": "Pericardium", "conclusion": "Conclusion",
}


def labels_from_measurements(m: Mapping[str, float]) -> dict[str, int]:
    """Derive every label (0/1) from measurements; ``healthy`` = 1 iff no finding is positive.

    >>> m = dict(sex="F", ef_pct=62, lvedd_cm=4.6, lvesd_cm=3.0, ivs_cm=0.9, lvpw_cm=0.9,
    ...          la_ap_cm=3.5, ra_minor_cm=3.8, rv_basal_cm=3.5, av_cusps=3, av_opening_cm=2.0,
    ...          mv_calc_score=0.1, mr_jet_ratio=0.05, tr_jet_ratio=0.05, ar_jet_ratio=0.0,
    ...          pe_depth_cm=0.0)
    >>> labels_from_measurements(m)["healthy"], sum(labels_from_measurements(m).values())
    (1, 1)
    """
    labels = {f.key: int(bool(f.positive(m))) for f in FINDINGS}
    labels[HEALTHY.key] = int(not any(labels.values()))
    return labels


#: A normal adult: the background against which :func:`findings_past_cutoff` judges one
#: measurement (every finding rule is negative on it).
REFERENCE_NORMAL: dict[str, Any] = dict(
    sex="M", ef_pct=62.0, lvedd_cm=4.8, lvesd_cm=3.1, ivs_cm=0.9, lvpw_cm=0.9, la_ap_cm=3.5,
    ra_minor_cm=3.8, rv_basal_cm=3.5, av_cusps=3, av_opening_cm=2.0, mv_calc_score=0.1,
    mr_jet_ratio=0.05, tr_jet_ratio=0.05, ar_jet_ratio=0.0, pe_depth_cm=0.0)
#: Detector quantities that estimate a ground-truth measurement under another name.
MEASUREMENT_ALIASES: dict[str, str] = {"ef_proxy_pct": "ef_pct"}


def findings_past_cutoff(key: str, value: float) -> list[tuple[str, str]]:
    """Findings whose guideline cut-off one measurement crosses, all else normal:
    ``[(finding name, qualifier)]`` with qualifier ``""`` or ``"for women"``/``"for men"``
    where the cut-off depends on sex (which the images do not show). Quantities no rule reads
    (e.g. ``lv_fs_pct``) give ``[]``. This is the reference-range flag an echo measurement
    package prints next to a value; it reuses the finding rules, so it cannot drift from them.

    >>> findings_past_cutoff("tr_jet_ratio", 0.36)
    [('tricuspid regurgitation', '')]
    >>> findings_past_cutoff("lvedd_cm", 5.5), findings_past_cutoff("ef_proxy_pct", 55.0)
    ([('LV enlargement', 'for women')], [])
    """
    key = MEASUREMENT_ALIASES.get(key, key)
    if key not in REFERENCE_NORMAL or key == "sex":
        return []
    out = []
    for f in FINDINGS:
        by_sex = [bool(f.positive({**REFERENCE_NORMAL, "sex": s, key: float(value)})) and
                  not f.positive({**REFERENCE_NORMAL, "sex": s}) for s in ("M", "F")]
        if all(by_sex):
            out.append((f.name, ""))
        elif any(by_sex):
            out.append((f.name, "for men" if by_sex[0] else "for women"))
    return out


def assessable(finding_key: str, views: set[str] | frozenset[str] | tuple[str, ...]) -> bool:
    """True if at least one of ``views`` can show ``finding_key``.

    >>> assessable("bicuspid_aortic_valve", ("A4C", "PLAX"))
    False
    """
    return any(v in FINDING_BY_KEY[finding_key].views for v in views)


def visible_label_mask(view: str) -> list[int]:
    """Per-label 0/1 mask (in ``LABEL_KEYS`` order) of what one clip of ``view`` can show.

    ``healthy`` counts as visible in no single view: it is a study-level statement that needs
    every finding excluded.
    """
    return [int(view in f.views) if f is not HEALTHY else 0 for f in LABELS]
