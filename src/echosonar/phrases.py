"""Report phrase banks and the rule that reads findings back out of report text.

Shared by the simulator (which writes reference reports) and the evaluation's rule-based GREEN
judge (which extracts ``(section, finding, severity)`` from generated and reference reports).
The public constants below are a contract: keep their names and meaning stable.

The rules every report sentence written by EchoSim obeys, and that :func:`extract_findings`
relies on:

* Sentences are split on ``.``, ``;`` and line breaks (:func:`split_sentences`).
* A **positive** sentence mentions exactly one finding through one of its
  ``FINDING_PHRASES[key]`` noun phrases (case-insensitive substring), contains exactly one
  ``SEVERITY_WORDS`` word (whole word, adjective form, e.g. "moderate", never "moderately"),
  and contains no ``NEGATION_CUES`` (whole words/phrases).
* A **negative** (normal) sentence either contains a ``NEGATION_CUES`` cue (then any finding
  phrase in it is negated, e.g. "No pericardial effusion", "trivial mitral regurgitation") or
  mentions no finding phrase at all (e.g. "Left ventricular size is normal" — where "normal" is
  itself a cue).
* Sub-threshold regurgitation or effusion is written with "trace"/"trivial"/"physiological"
  (cues), never "mild", because the findings are defined as moderate or worse.

``POSITIVE_TEMPLATES[key]`` and ``NEGATIVE_TEMPLATES[key]`` hold the sentence templates, with
``{sev}`` (severity word), ``{np}`` (a noun phrase of the finding) and measurement fields such as
``{ef:.0f}`` filled by the report writer.
"""

from __future__ import annotations

import re

#: Noun phrases that name each finding (lower case; matched case-insensitively as substrings).
FINDING_PHRASES: dict[str, tuple[str, ...]] = {
    "lv_systolic_dysfunction": ("lv systolic dysfunction", "left ventricular systolic dysfunction",
                                "impairment of lv systolic function",
                                "impairment of left ventricular systolic function"),
    "lv_enlargement": ("lv enlargement", "left ventricular enlargement", "lv dilatation",
                       "left ventricular dilatation", "dilated left ventricle"),
    "lv_hypertrophy": ("lv hypertrophy", "left ventricular hypertrophy",
                       "concentric hypertrophy", "lv wall thickening"),
    "la_enlargement": ("la enlargement", "left atrial enlargement", "left atrial dilatation",
                       "dilated left atrium", "la dilatation"),
    "ra_enlargement": ("ra enlargement", "right atrial enlargement", "right atrial dilatation",
                       "dilated right atrium", "ra dilatation"),
    "rv_enlargement": ("rv enlargement", "right ventricular enlargement",
                       "right ventricular dilatation", "dilated right ventricle",
                       "rv dilatation"),
    "aortic_stenosis": ("aortic stenosis", "aortic valve stenosis", "stenotic aortic valve"),
    "bicuspid_aortic_valve": ("bicuspid aortic valve", "bicuspid valve"),
    "mitral_valve_calcification": ("mitral valve calcification", "mitral annular calcification",
                                   "calcification of the mitral", "calcified mitral"),
    "mitral_regurgitation": ("mitral regurgitation", "mitral valve regurgitation",
                             "mitral insufficiency"),
    "tricuspid_regurgitation": ("tricuspid regurgitation", "tricuspid valve regurgitation",
                                "tricuspid insufficiency"),
    "aortic_regurgitation": ("aortic regurgitation", "aortic valve regurgitation",
                             "aortic insufficiency"),
    "pericardial_effusion": ("pericardial effusion", "pericardial fluid collection"),
}

#: Severity words, whole-word and lower case. "present" is the grade of bicuspid AV;
#: effusions are small/moderate/large.
SEVERITY_WORDS: tuple[str, ...] = ("mild", "moderate", "severe", "small", "large", "present")

#: Cues that make a sentence negative/normal (whole words or phrases, lower case).
NEGATION_CUES: tuple[str, ...] = (
    "no", "not", "without", "normal", "absent", "negative for", "no evidence of", "trace",
    "trivial", "physiological", "within normal limits", "preserved", "unremarkable", "none",
)

#: Positive sentence templates per finding. Fields: {sev} severity word, {np} noun phrase,
#: {Sev}/{Np} capitalised, plus measurement fields (see simulate/text.py).
POSITIVE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "lv_systolic_dysfunction": (
        "{Sev} {np}, LVEF about {ef:.0f}%",
        "There is {sev} {np} with an estimated ejection fraction of {ef:.0f}%",
        "{Sev} global {np} (visual EF {ef:.0f}%)",
        "Global hypokinesis consistent with {sev} {np}, EF approximately {ef:.0f}%",
    ),
    "lv_enlargement": (
        "{Sev} {np}, LVIDd {lvedd:.1f} cm",
        "There is {sev} {np} with an end-diastolic diameter of {lvedd:.1f} cm",
        "{Sev} {np} (LVEDD {lvedd:.1f} cm)",
    ),
    "lv_hypertrophy": (
        "{Sev} {np}, septum {ivs:.1f} cm and posterior wall {lvpw:.1f} cm",
        "There is {sev} {np} (IVSd {ivs:.1f} cm, LVPWd {lvpw:.1f} cm)",
        "{Sev} {np} with wall thickness up to {wall:.1f} cm",
    ),
    "la_enlargement": (
        "{Sev} {np}, antero-posterior diameter {la:.1f} cm",
        "The left atrium shows {sev} {np} ({la:.1f} cm)",
        "{Sev} {np} with an LA diameter of {la:.1f} cm",
    ),
    "ra_enlargement": (
        "{Sev} {np}, minor axis {ra:.1f} cm",
        "There is {sev} {np} (RA minor axis {ra:.1f} cm)",
        "{Sev} {np} measuring {ra:.1f} cm",
    ),
    "rv_enlargement": (
        "{Sev} {np}, basal diameter {rv:.1f} cm",
        "There is {sev} {np} with an RV basal diameter of {rv:.1f} cm",
        "{Sev} {np} ({rv:.1f} cm at the base)",
    ),
    "aortic_stenosis": (
        "{Sev} {np} with thickened, restricted cusps and systolic separation of {avo:.1f} cm",
        "Calcified cusps with reduced excursion, in keeping with {sev} {np} (cusp separation "
        "{avo:.1f} cm)",
        "{Sev} {np}; cusp separation {avo:.1f} cm",
    ),
    "bicuspid_aortic_valve": (
        "A {np} is {sev}, with a fish-mouth systolic opening",
        "{Np} {sev}: two cusps with a single commissural line",
        "Congenitally {np} {sev} on the short-axis view",
    ),
    "mitral_valve_calcification": (
        "{Sev} {np}",
        "There is {sev} {np} with echo-bright leaflets",
        "{Sev} {np} involving the posterior annulus",
    ),
    "mitral_regurgitation": (
        "{Sev} {np}, jet area about {mr:.0f}% of the left atrium",
        "There is {sev} {np} with a jet filling {mr:.0f}% of the LA",
        "Colour Doppler shows {sev} {np} (jet/LA area {mr:.0f}%)",
    ),
    "tricuspid_regurgitation": (
        "{Sev} {np}, jet area about {tr:.0f}% of the right atrium",
        "There is {sev} {np} with a jet filling {tr:.0f}% of the RA",
        "Colour Doppler shows {sev} {np} (jet/RA area {tr:.0f}%)",
    ),
    "aortic_regurgitation": (
        "{Sev} {np}, jet width {ar:.0f}% of the LVOT",
        "There is {sev} {np} with a jet width of {ar:.0f}% of the outflow tract",
        "Colour Doppler shows {sev} {np} (jet/LVOT width {ar:.0f}%)",
    ),
    "pericardial_effusion": (
        "{Sev} {np}, maximal depth {pe:.1f} cm",
        "There is a {sev} {np} measuring {pe:.1f} cm",
        "{Sev} circumferential {np} ({pe:.1f} cm)",
    ),
}

#: Negative sentence templates per finding; each contains a NEGATION_CUES cue.
NEGATIVE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "lv_systolic_dysfunction": (
        "Normal left ventricular systolic function, LVEF about {ef:.0f}%",
        "Preserved systolic function (EF {ef:.0f}%)",
        "No regional wall motion abnormality; EF estimated at {ef:.0f}%, within normal limits",
    ),
    "lv_enlargement": (
        "Normal LV cavity size, LVIDd {lvedd:.1f} cm",
        "LV dimensions within normal limits (LVEDD {lvedd:.1f} cm)",
        "No LV dilatation",
    ),
    "lv_hypertrophy": (
        "Normal wall thickness (septum {ivs:.1f} cm)",
        "No left ventricular hypertrophy",
        "Wall thickness within normal limits",
    ),
    "la_enlargement": (
        "Normal left atrial size ({la:.1f} cm)",
        "The left atrium is not dilated",
        "Left atrial dimensions within normal limits",
    ),
    "ra_enlargement": (
        "Normal right atrial size",
        "The right atrium is not dilated ({ra:.1f} cm)",
        "Right atrial dimensions within normal limits",
    ),
    "rv_enlargement": (
        "Normal right ventricular size (basal diameter {rv:.1f} cm)",
        "The right ventricle is not dilated",
        "RV size within normal limits",
    ),
    "aortic_stenosis": (
        "No aortic stenosis",
        "Aortic cusps open normally, no stenosis",
        "Normal aortic cusp excursion",
    ),
    "bicuspid_aortic_valve": (
        "The aortic valve is trileaflet, not bicuspid",
        "Trileaflet aortic valve with a normal closure line",
        "Normal trileaflet aortic valve morphology",
    ),
    "mitral_valve_calcification": (
        "No mitral valve calcification",
        "Mitral leaflets are thin and not calcified",
        "Normal mitral leaflet morphology",
    ),
    "mitral_regurgitation": (
        "No significant mitral regurgitation",
        "Trivial mitral regurgitation",
        "Mitral inflow normal; no more than trace regurgitation",
    ),
    "tricuspid_regurgitation": (
        "No significant tricuspid regurgitation",
        "Trace tricuspid regurgitation",
        "Physiological tricuspid regurgitation only",
    ),
    "aortic_regurgitation": (
        "No aortic regurgitation",
        "No significant aortic regurgitation on colour Doppler",
        "Trace aortic regurgitation",
    ),
    "pericardial_effusion": (
        "No pericardial effusion",
        "Pericardium unremarkable, no effusion",
        "Trivial physiological pericardial fluid, no significant effusion",
    ),
}

#: What a finding's assessment is about, for "not assessed" sentences when the views that
#: show it were not acquired (the sentence contains the cue "not").
ASSESSED_THING: dict[str, str] = {
    "lv_systolic_dysfunction": "LV systolic function", "lv_enlargement": "LV cavity size",
    "lv_hypertrophy": "LV wall thickness", "la_enlargement": "Left atrial size",
    "ra_enlargement": "Right atrial size", "rv_enlargement": "Right ventricular size",
    "aortic_stenosis": "Aortic cusp opening", "bicuspid_aortic_valve": "Aortic cusp number",
    "mitral_valve_calcification": "Mitral leaflet morphology",
    "mitral_regurgitation": "Mitral regurgitation", "tricuspid_regurgitation":
    "Tricuspid regurgitation", "aortic_regurgitation": "Aortic regurgitation",
    "pericardial_effusion": "Pericardial effusion",
}
NOT_ASSESSED_TEMPLATES: tuple[str, ...] = (
    "{thing} not assessed (view not acquired)", "{thing} could not be assessed",
    "{thing} not evaluated in this study",
)

_SPLIT_RE = re.compile(r"[.;\n]+")


def split_sentences(text: str) -> list[str]:
    """Split report text into sentences (on '.', ';' and line breaks), dropping empties.

    Decimal points inside numbers ("4.5 cm") are protected before splitting.
    """
    protected = re.sub(r"(\d)\.(\d)", r"\1<DOT>\2", text)
    return [s.strip().replace("<DOT>", ".") for s in _SPLIT_RE.split(protected) if s.strip()]


def _has_word(sentence: str, word: str) -> bool:
    return re.search(r"(?<![a-z])" + re.escape(word) + r"(?![a-z])", sentence) is not None


def sentence_polarity(sentence: str) -> tuple[str | None, str | None, bool]:
    """``(finding_key or None, severity word or None, negated)`` for one sentence. If several
    findings are named, the first in ``FINDING_PHRASES`` order is returned."""
    s = sentence.lower()
    key = next((k for k, nps in FINDING_PHRASES.items() if any(n in s for n in nps)), None)
    negated = any(_has_word(s, c) for c in NEGATION_CUES)
    sev = next((w for w in SEVERITY_WORDS if _has_word(s, w)), None)
    return key, sev, negated


def extract_findings(text: str) -> dict[str, str]:
    """Positive findings named in ``text``: ``{finding_key: severity word}`` ("" if none).

    >>> extract_findings("Severe aortic stenosis; cusp separation 0.7 cm. No pericardial effusion.")
    {'aortic_stenosis': 'severe'}
    """
    out: dict[str, str] = {}
    for sent in split_sentences(text):
        key, sev, negated = sentence_polarity(sent)
        if key is not None and not negated:
            out.setdefault(key, sev or "")
    return out
