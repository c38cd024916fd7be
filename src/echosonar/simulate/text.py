"""Language-model targets from the ground truth: per-view reasoning lines and a sectioned report.

Reasoning (``StudyRecord.reasoning``): one line per ``taxonomy.VIEWS`` view in order, rendered by
``textformat.render_view_line``. Acquired views cite their structures with end-diastolic boxes
normalised to the ultrasound region (jets, absent at ED, are cited at their peak frame), give
evidence with measurements in cm, the positive findings assessable in that view and an
implication. Missing views say which findings they alone could have assessed.

Report (``StudyRecord.report``): every ``taxonomy.REPORT_SECTIONS`` section, written from the
:mod:`echosonar.phrases` banks so the rule-based judge can read findings back
(:func:`echosonar.phrases.extract_findings` returns exactly the positive findings, with their
``taxonomy`` severities).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from echosonar.phrases import (
    ASSESSED_THING,
    FINDING_PHRASES,
    NEGATIVE_TEMPLATES,
    NOT_ASSESSED_TEMPLATES,
    POSITIVE_TEMPLATES,
)
from echosonar.taxonomy import FINDINGS, REPORT_SECTIONS, VIEWS, assessable
from echosonar.textformat import render_view_line

# Noun phrases that read well after a severity adjective ("moderate LV dilatation").
_NP_EXCLUDE = ("dilated ", "calcified ", "stenotic ", "calcification of the mitral")
_ABBR = re.compile(r"\b(lv|la|ra|rv|lvot)\b")


def _display(np_: str) -> str:
    return _ABBR.sub(lambda mt: mt.group(1).upper(), np_)


def _nps(key: str) -> list[str]:
    return [_display(p) for p in FINDING_PHRASES[key] if not p.startswith(_NP_EXCLUDE)]


def _fields(m: dict[str, Any]) -> dict[str, float]:
    return {"ef": m["ef_pct"], "lvedd": m["lvedd_cm"], "ivs": m["ivs_cm"], "lvpw": m["lvpw_cm"],
            "wall": max(m["ivs_cm"], m["lvpw_cm"]), "la": m["la_ap_cm"], "ra": m["ra_minor_cm"],
            "rv": m["rv_basal_cm"], "avo": m["av_opening_cm"], "mr": 100 * m["mr_jet_ratio"],
            "tr": 100 * m["tr_jet_ratio"], "ar": 100 * m["ar_jet_ratio"], "pe": m["pe_depth_cm"]}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def finding_sentence(key: str, m: dict[str, Any], positive: bool,
                     rng: np.random.Generator) -> str:
    """One report sentence about finding ``key`` (positive: with its taxonomy severity)."""
    from echosonar.taxonomy import FINDING_BY_KEY

    f = _fields(m)
    if not positive:
        return _cap(str(rng.choice(NEGATIVE_TEMPLATES[key])).format(**f))
    sev = FINDING_BY_KEY[key].severity(m)
    np_ = str(rng.choice(_nps(key)))
    tpl = str(rng.choice(POSITIVE_TEMPLATES[key]))
    return _cap(tpl.format(sev=sev, Sev=_cap(sev), np=np_, Np=_cap(np_), **f))


_SECTION_EXTRAS: dict[str, tuple[str, ...]] = {
    "RV": ("Normal RV systolic function", "RV free wall motion is normal",
           "No RV systolic dysfunction"),
    "RA": ("Interatrial septum intact on 2D imaging", "No mass within the right atrium"),
    "LA": ("No left atrial mass seen", ""),
    "tricuspid": ("Tricuspid leaflets are thin and mobile", "Normal tricuspid leaflet motion"),
    "mitral": ("", "Normal mitral inflow pattern on colour Doppler"),
    "aortic": ("", "Aortic root not dilated"),
}
_NORMAL_CONCLUSION = (
    "Normal study", "Structurally normal heart with normal biventricular size and function",
    "No significant abnormality detected", "Normal transthoracic echocardiogram",
)


def report_sections(m: dict[str, Any], labels: dict[str, int], rng: np.random.Generator,
                    views: list[str] | None = None) -> dict[str, str]:
    """``{section: text}`` for every ``taxonomy.REPORT_SECTIONS`` section. With ``views`` (the
    acquired views), negative findings no acquired view can show are reported as not assessed."""
    out: dict[str, str] = {}
    for sec in REPORT_SECTIONS[:-1]:
        sents = []
        for f in FINDINGS:
            if f.section != sec:
                continue
            if views is not None and not labels[f.key] and not assessable(f.key, views):
                sents.append(str(rng.choice(NOT_ASSESSED_TEMPLATES)).format(
                    thing=ASSESSED_THING[f.key]))
            else:
                sents.append(finding_sentence(f.key, m, bool(labels[f.key]), rng))
        extra = str(rng.choice(_SECTION_EXTRAS[sec])) if sec in _SECTION_EXTRAS else ""
        if extra and not any(labels[f.key] for f in FINDINGS if f.section == sec):
            sents.append(extra)
        out[sec] = ". ".join(s for s in sents if s) + "."
    pos = [f for f in FINDINGS if labels[f.key]]
    if pos:
        sents = []
        for f in pos:
            sev = f.severity(m)
            np_ = str(rng.choice(_nps(f.key)))
            sents.append(_cap(f"{sev} {np_}"))
        out["conclusion"] = ". ".join(sents) + "."
    else:
        out["conclusion"] = str(rng.choice(_NORMAL_CONCLUSION)) + "."
    return out


# ---------------------------------------------------------------------------------------------
# Reasoning
# ---------------------------------------------------------------------------------------------

_EVIDENCE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # finding: (positive clauses, negative clauses)
    "lv_systolic_dysfunction": (
        ("globally reduced wall thickening, EF about {ef:.0f}%", "poor LV contraction, "
         "EF roughly {ef:.0f}%", "LV walls move little between ED and ES, EF ~{ef:.0f}%"),
        ("LV walls thicken well, EF about {ef:.0f}%", "vigorous LV contraction, EF ~{ef:.0f}%",
         "good systolic excursion, EF roughly {ef:.0f}%")),
    "lv_enlargement": (
        ("LV cavity large, {lvedd:.1f} cm at end-diastole", "LVEDD {lvedd:.1f} cm, above range"),
        ("LVEDD {lvedd:.1f} cm", "LV cavity {lvedd:.1f} cm at end-diastole")),
    "lv_hypertrophy": (
        ("thick walls, septum {ivs:.1f} cm and posterior wall {lvpw:.1f} cm",
         "wall thickness up to {wall:.1f} cm"),
        ("septum {ivs:.1f} cm, posterior wall {lvpw:.1f} cm", "walls {wall:.1f} cm thick")),
    "la_enlargement": (
        ("LA large, {la:.1f} cm", "left atrium {la:.1f} cm across"),
        ("LA {la:.1f} cm", "left atrium {la:.1f} cm")),
    "ra_enlargement": (
        ("RA large, minor axis {ra:.1f} cm", "right atrium {ra:.1f} cm wide"),
        ("RA minor axis {ra:.1f} cm", "right atrium {ra:.1f} cm")),
    "rv_enlargement": (
        ("RV base {rv:.1f} cm, the RV rivals the LV", "RV basal diameter {rv:.1f} cm"),
        ("RV basal diameter {rv:.1f} cm", "RV smaller than the LV, {rv:.1f} cm at the base")),
    "aortic_stenosis": (
        ("thickened bright cusps opening only {avo:.1f} cm", "restricted cusp separation "
         "{avo:.1f} cm"),
        ("cusps thin, separation {avo:.1f} cm", "aortic cusps open {avo:.1f} cm")),
    "bicuspid_aortic_valve": (
        ("two cusps with a fish-mouth systolic opening", "single closure line, two cusps"),
        ("three cusps with a Y-shaped closure line", "three cusps seen")),
    "mitral_valve_calcification": (
        ("bright thickened mitral annulus and leaflets", "echo-bright mitral annulus"),
        ("thin mitral leaflets", "mitral leaflets thin and mobile")),
    "mitral_regurgitation": (
        ("systolic mosaic jet into the LA, about {mr:.0f}% of its area",
         "MR jet filling {mr:.0f}% of the LA"),
        ("no sizeable systolic jet into the LA", "at most a small MR jet ({mr:.0f}% of the LA)")),
    "tricuspid_regurgitation": (
        ("systolic mosaic jet into the RA, about {tr:.0f}% of its area",
         "TR jet filling {tr:.0f}% of the RA"),
        ("no sizeable systolic jet into the RA", "at most a small TR jet ({tr:.0f}% of the RA)")),
    "aortic_regurgitation": (
        ("diastolic jet into the LVOT, {ar:.0f}% of its width", "AR jet {ar:.0f}% of LVOT width"),
        ("no diastolic jet in the LVOT", "no significant diastolic LVOT jet")),
    "pericardial_effusion": (
        ("echo-free space {pe:.1f} cm around the heart", "pericardial fluid {pe:.1f} cm deep"),
        ("no pericardial fluid", "no echo-free space around the heart")),
}

_IMPLICATION: dict[str, tuple[str, ...]] = {
    "lv_systolic_dysfunction": ("reduced pump function", "supports a cardiomyopathy work-up"),
    "lv_enlargement": ("volume-loaded or remodelled LV", "LV remodelling"),
    "lv_hypertrophy": ("pressure load on the LV", "consider hypertension or outflow obstruction"),
    "la_enlargement": ("raised LA pressure or volume load", "chronic LA loading"),
    "ra_enlargement": ("raised right-sided filling pressure", "right atrial volume load"),
    "rv_enlargement": ("right ventricular volume or pressure load", "look for pulmonary "
                       "hypertension"),
    "aortic_stenosis": ("LV outflow obstruction", "valve disease needing follow-up"),
    "bicuspid_aortic_valve": ("congenital valve disease", "watch for stenosis, regurgitation "
                              "and aortopathy"),
    "mitral_valve_calcification": ("degenerative mitral disease", "age-related valve "
                                   "calcification"),
    "mitral_regurgitation": ("LA volume load from the leaking mitral valve", "significant mitral "
                             "leak"),
    "tricuspid_regurgitation": ("right-sided volume load", "significant tricuspid leak"),
    "aortic_regurgitation": ("LV volume load from the leaking aortic valve", "significant aortic "
                             "leak"),
    "pericardial_effusion": ("fluid around the heart; check for tamponade physiology",
                             "pericardial disease"),
}
_NO_IMPLICATION = ("nothing abnormal in this view", "this view looks normal",
                   "no abnormality seen here", "normal appearances in this view")


def view_line(view: str, m: dict[str, Any], labels: dict[str, int],
              boxes01: dict[str, list[float]] | None, acquired: list[str],
              rng: np.random.Generator) -> str:
    """One reasoning line; ``boxes01=None`` means the view was not acquired."""
    if boxes01 is None:
        na = [f.name for f in FINDINGS if view in f.views and not assessable(f.key, acquired)]
        return render_view_line(view, None, not_assessable=na)
    f = _fields(m)
    here = [fd for fd in FINDINGS if view in fd.views]
    pos = [fd for fd in here if labels[fd.key]]
    neg = [fd for fd in here if not labels[fd.key]]
    picked = pos + [neg[int(i)] for i in rng.permutation(len(neg))[: max(1, 3 - len(pos))]]
    picked.sort(key=lambda fd: FINDINGS.index(fd))
    clauses = []
    for fd in picked:
        bank = _EVIDENCE[fd.key][0 if labels[fd.key] else 1]
        clauses.append(str(rng.choice(bank)).format(**f))
    evidence = "; ".join(clauses) if clauses else "image quality adequate"
    impl = "; ".join(str(rng.choice(_IMPLICATION[fd.key])) for fd in pos) \
        or str(rng.choice(_NO_IMPLICATION))
    return render_view_line(view, boxes01, evidence, [fd.name for fd in pos], impl)


def reasoning_text(m: dict[str, Any], labels: dict[str, int],
                   boxes01: dict[str, dict[str, list[float]]], rng: np.random.Generator) -> str:
    """Reasoning lines for every view in ``taxonomy.VIEWS`` order (``boxes01`` has the
    acquired views only)."""
    acquired = [v for v in VIEWS if v in boxes01]
    return "\n".join(view_line(v, m, labels, boxes01.get(v), acquired, rng) for v in VIEWS)
