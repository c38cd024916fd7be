"""Echo report lexicon for the rule-based GREEN judge: finding patterns, severity words,
negation cues and comparison cues.

Three sources, merged:

1. built-in patterns for every ``taxonomy.FINDINGS`` entry (clinical phrasing: "dilated left
   ventricle", "LV systolic dysfunction", "no significant mitral regurgitation", "trileaflet
   aortic valve" ...), each with a polarity (``True`` = the phrase asserts the finding,
   ``False`` = it asserts its absence, e.g. "normal LV size");
2. section-resolved bare terms: "regurgitation" in the *Mitral valve* section means mitral
   regurgitation, "dilated" in the *Right atrium* section means RA enlargement;
3. the simulator's phrase banks (:mod:`echosonar.phrases`: ``FINDING_PHRASES``,
   ``SEVERITY_WORDS``, ``NEGATION_CUES``) when that module exists, so every sentence the
   report writer can produce is recognised with the polarity it was written with.

All matching is on lower-cased text; patterns are plain regular expressions.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from echosonar.taxonomy import FINDINGS

#: Canonical severity grades and their rank (for "is the severity the same?").
SEVERITY_RANK: dict[str, float] = {
    "trace": 0.0, "trivial": 0.0, "minimal": 0.0, "mild": 1.0, "small": 1.0,
    "mild-to-moderate": 1.5, "moderate": 2.0, "moderate-to-severe": 2.5, "severe": 3.0,
    "large": 3.0,
}
_SEV_ALIASES = {"mildly": "mild", "moderately": "moderate", "severely": "severe",
                "mild to moderate": "mild-to-moderate", "moderate to severe": "moderate-to-severe",
                "mildly to moderately": "mild-to-moderate",
                "moderately to severely": "moderate-to-severe"}
SEVERITY_RE_TEXT = (r"(?:mild(?:ly)?[- ]to[- ]moderate(?:ly)?|moderate(?:ly)?[- ]to[- ]"
                    r"sever(?:e|ely)|trace|trivial|minimal|mild(?:ly)?|moderate(?:ly)?|"
                    r"sever(?:e|ely)|small|large)")
#: Cues that negate (flip) a finding mentioned after them in the same clause.
NEGATION_CUES: tuple[str, ...] = (
    "no", "not", "without", "absent", "negative for", "free of", "no evidence of", "none",
    "neither", "nor", "excluded", "ruled out", "rules out",
)
#: Cues that state normality: a finding phrase in their scope is absent (sub-threshold
#: "trace"/"trivial" regurgitation included, as the simulator's phrase bank defines), but they
#: do not flip a phrase that already states absence ("normal LV size").
NORMAL_CUES: tuple[str, ...] = (
    "normal", "normally", "preserved", "within normal limits", "unremarkable", "trace",
    "trivial", "physiological", "physiologic", "minimal",
)
#: Words that end a negation's scope inside a sentence.
TERMINATORS: tuple[str, ...] = ("but", "however", "although", "though", "except", "whereas",
                                "while", "with", "aside from", "apart from", "yet")
#: A clause that mentions a prior study (GREEN categories e and f).
COMPARISON_RE = re.compile(
    r"\b(?:compared (?:with|to)|comparison|prior (?:study|exam|examination|echo\w*)|"
    r"previous(?:ly)?|since the (?:last|prior|previous)|interval(?:ly)?|unchanged|"
    r"no (?:significant )?(?:interval )?change|(?:has|have) (?:worsened|improved|progressed|"
    r"increased|decreased|resolved)|newly|new since|stable (?:since|compared))\b")

# Location of each finding: (structure, side) — the "where" GREEN's category (c) checks.
LOCATION: dict[str, tuple[str, str]] = {
    "lv_systolic_dysfunction": ("LV", "left"), "lv_enlargement": ("LV", "left"),
    "lv_hypertrophy": ("LV", "left"), "la_enlargement": ("LA", "left"),
    "ra_enlargement": ("RA", "right"), "rv_enlargement": ("RV", "right"),
    "aortic_stenosis": ("AV", "left"), "bicuspid_aortic_valve": ("AV", "left"),
    "mitral_valve_calcification": ("MV", "left"), "mitral_regurgitation": ("MV", "left"),
    "tricuspid_regurgitation": ("TV", "right"), "aortic_regurgitation": ("AV", "left"),
    "pericardial_effusion": ("PE", ""),
}
#: Findings of one kind at different locations: mixing them up is a location error (c).
KIND: dict[str, str] = {
    "lv_enlargement": "enlargement", "la_enlargement": "enlargement",
    "ra_enlargement": "enlargement", "rv_enlargement": "enlargement",
    "mitral_regurgitation": "regurgitation", "tricuspid_regurgitation": "regurgitation",
    "aortic_regurgitation": "regurgitation",
}

_SEV = rf"(?:{SEVERITY_RE_TEXT} )?"
_IS = r"(?:(?:is|are|was|appears|appear|seems|remains) )?(?:not )?(?:(?:at most|only) )?"
_CH = {
    "lv": r"(?:lv|left ventric(?:le|ular))(?: cavity)?",
    "la": r"(?:la|left atri(?:um|al))",
    "ra": r"(?:ra|right atri(?:um|al))",
    "rv": r"(?:rv|right ventric(?:le|ular))(?: cavity)?",
}


def _chamber(ch: str) -> list[tuple[str, bool]]:
    c = _CH[ch]
    return [
        (rf"\b{c} (?:size )?(?:enlargement|dilatation|dilation)", True),
        (rf"\b(?:enlarged|dilated) {c}\b", True),
        (rf"\b{c} {_IS}{_SEV}(?:enlarged|dilated)", True),
        (rf"\b{c} {_IS}(?:of )?normal(?: in)? size", False),
        (rf"\b{c} size {_IS}normal", False),
        (rf"\b{c} (?:size|dimensions?|cavity size) {_IS}(?:within normal limits|normal)", False),
        (rf"\bnormal(?:-sized| sized| size)? {c}(?: size)?\b", False),
    ]


_FN = r"(?:systolic function|ejection fraction|\bef\b|contractility|function)"
BUILTIN: dict[str, list[tuple[str, bool]]] = {
    "lv_systolic_dysfunction": [
        (r"\b(?:lv|left ventricular) systolic dysfunction", True),
        (rf"\b(?:reduced|impaired|depressed|decreased|low|poor) (?:lv |left ventricular )?"
         rf"(?:global )?{_FN}", True),
        (rf"\b(?:lv |left ventricular )?(?:global )?{_FN} {_IS}{_SEV}(?:reduced|impaired|"
         r"depressed|decreased)", True),
        (rf"\b(?:normal|preserved) (?:lv |left ventricular )?(?:global )?{_FN}", False),
        (rf"\b(?:lv |left ventricular )?(?:global )?{_FN} {_IS}(?:normal|preserved)", False),
        (r"\b(?:global )?hypokinesis", True),
        (r"\b(?:ejection fraction|ef)\b[^;]{0,30}?within normal limits", False),
    ],
    "lv_enlargement": _chamber("lv"),
    "lv_hypertrophy": [
        (r"\b(?:lv|left ventricular|concentric|septal|asymmetric) hypertrophy", True),
        (r"\blvh\b", True),
        (r"\b(?:increased|thickened) (?:lv |left ventricular )?(?:wall|septal)s?(?: thickness)?",
         True),
        (rf"\bwalls? {_IS}{_SEV}thickened", True),
        (r"\bnormal (?:lv |left ventricular )?wall thickness", False),
        (rf"\bwall thickness {_IS}(?:within normal limits|normal)", False),
    ],
    "la_enlargement": _chamber("la"),
    "ra_enlargement": _chamber("ra"),
    "rv_enlargement": _chamber("rv"),
    "aortic_stenosis": [
        (r"\baortic (?:valve )?stenosis", True),
        (r"\bstenotic aortic valve", True),
        (r"\b(?:restricted|reduced) (?:aortic )?(?:cusp|leaflet) (?:opening|excursion|separation)",
         True),
        (r"\baortic (?:valve|cusps?) opens? normally", False),
        (r"\bnormal (?:aortic )?(?:cusp|leaflet|valve) (?:opening|excursion|separation)", False),
    ],
    "bicuspid_aortic_valve": [
        (r"\bbicuspid(?: aortic valve)?", True),
        (r"\btwo (?:aortic )?(?:cusps|leaflets)", True),
        (r"\bfish-?mouth", True),
        (r"\b(?:trileaflet|tricuspid|three-cusp) aortic valve", False),
        (r"\baortic valve (?:is |appears )?(?:trileaflet|tricuspid)", False),
        (r"\bthree (?:aortic )?(?:cusps|leaflets)", False),
    ],
    "mitral_valve_calcification": [
        (r"\bmitral (?:annular |annulus |valve |leaflet )*calcification", True),
        (r"\bcalcified mitral (?:valve|annulus|leaflets?)", True),
        (r"\bmitral (?:valve|annulus|leaflets?) (?:is |are |appears )?(?:not )?"
         rf"{_SEV}calcified", True),
        (r"\bmac\b", True),
        (r"\bnormal mitral (?:valve |leaflet |leaflets )?morphology", False),
    ],
    "mitral_regurgitation": [(r"\bmitral (?:valve )?(?:regurgitation|insufficiency)", True),
                             (r"\bmr\b", True)],
    "tricuspid_regurgitation": [(r"\btricuspid (?:valve )?(?:regurgitation|insufficiency)", True),
                                (r"\btr\b", True)],
    "aortic_regurgitation": [(r"\baortic (?:valve )?(?:regurgitation|insufficiency)", True),
                             (r"\bar\b", True)],
    "pericardial_effusion": [(r"\bpericardial effusion", True), (r"\beffusion", True)],
}

#: Bare terms resolved by the report section they appear in.
SECTION_TERMS: dict[str, list[tuple[str, str, bool]]] = {
    "mitral": [(r"\b(?:regurgitation|insufficiency|regurgitant jet)", "mitral_regurgitation",
                True),
               (r"\b(?:calcification|calcified)", "mitral_valve_calcification", True)],
    "tricuspid": [(r"\b(?:regurgitation|insufficiency|regurgitant jet)",
                   "tricuspid_regurgitation", True)],
    "aortic": [(r"\b(?:regurgitation|insufficiency|regurgitant jet)", "aortic_regurgitation",
                True),
               (r"\b(?:stenosis|stenotic)", "aortic_stenosis", True),
               (r"\b(?:cusps? (?:open|opens) normally|opens normally)", "aortic_stenosis",
                False)],
    "LV": [(rf"\b{_SEV}(?:enlarged|dilated|enlargement|dilatation)", "lv_enlargement", True),
           (r"\b(?<!rv )(?<!right ventricular )systolic dysfunction", "lv_systolic_dysfunction",
            True),
           (r"\bnormal(?: in)? size", "lv_enlargement", False),
           (r"\bhypertrophy|thickened", "lv_hypertrophy", True)],
    "LA": [(rf"\b{_SEV}(?:enlarged|dilated|enlargement|dilatation)", "la_enlargement", True),
           (r"\bnormal(?: in)? size", "la_enlargement", False)],
    "RA": [(rf"\b{_SEV}(?:enlarged|dilated|enlargement|dilatation)", "ra_enlargement", True),
           (r"\bnormal(?: in)? size", "ra_enlargement", False)],
    "RV": [(rf"\b{_SEV}(?:enlarged|dilated|enlargement|dilatation)", "rv_enlargement", True),
           (r"\bnormal(?: in)? size", "rv_enlargement", False)],
}


@dataclass(frozen=True)
class Pattern:
    finding: str
    regex: re.Pattern[str]
    present: bool
    section: str | None  # None = valid in every section


def normalize_severity(word: str) -> str | None:
    """Canonical grade of a severity word, or None.

    >>> normalize_severity("Moderately"), normalize_severity("mild to moderate")
    ('moderate', 'mild-to-moderate')
    """
    w = word.lower().strip().replace("-", " ")
    w = _SEV_ALIASES.get(w, w).replace(" to ", "-to-")
    w = {"severly": "severe"}.get(w, w)
    return w if w in SEVERITY_RANK else None


def _phrase_bank() -> tuple[dict[str, list[tuple[str, bool]]], list[str], list[str]]:
    """Patterns, severity words and negation cues from :mod:`echosonar.phrases`, if present.

    Accepts ``FINDING_PHRASES`` as ``{finding_key: [phrase, ...]}``, ``{finding_key:
    {anything: [phrase, ...] | phrase}}`` or nested lists; phrases may contain ``{...}``
    placeholders (matched as any short text) and are taken as asserting the finding, unless they
    sit under a key that names absence ("normal", "absent", "negative", "no").
    """
    try:
        from echosonar import phrases  # type: ignore[attr-defined]
    except ImportError:
        return {}, [], []
    pats: dict[str, list[tuple[str, bool]]] = {}
    for key, bank in dict(getattr(phrases, "FINDING_PHRASES", {}) or {}).items():
        if key not in LOCATION:
            continue
        for text, present in _flatten(bank, True):
            rx = _phrase_regex(text)
            if rx:
                pats.setdefault(key, []).append((rx, present))
    sev = [str(w) for w in _flatten_words(getattr(phrases, "SEVERITY_WORDS", []))]
    neg = [str(w) for w in _flatten_words(getattr(phrases, "NEGATION_CUES", []))]
    return pats, sev, neg


_ABSENT_KEYS = ("normal", "absent", "negative", "no", "none", "neg")


def _flatten(bank: Any, present: bool) -> Iterable[tuple[str, bool]]:
    if isinstance(bank, str):
        yield bank, present
    elif isinstance(bank, dict):
        for k, v in bank.items():
            is_abs = str(k).lower() in _ABSENT_KEYS or str(k).lower() in ("false", "0")
            yield from _flatten(v, present and not is_abs)
    elif isinstance(bank, (list, tuple, set, frozenset)):
        for v in bank:
            yield from _flatten(v, present)


def _flatten_words(x: Any) -> Iterable[str]:
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield str(k)
            yield from (w for w in _flatten_words(v) if not w.replace(".", "").isdigit())
    elif isinstance(x, (list, tuple, set, frozenset)):
        for v in x:
            yield from _flatten_words(v)


def _phrase_regex(text: str) -> str | None:
    """A literal phrase (with ``{slot}`` placeholders) -> regex; None if too generic."""
    text = text.lower().strip().rstrip(".")
    parts = re.split(r"\{[^}]*\}", text)
    words = "".join(parts).strip()
    if len(words) < 6:
        return None
    esc = [re.escape(p.strip()) for p in parts]
    body = r"(?:\s*[\w.%/-]+(?:\s+[\w.%/-]+){0,3}\s*)".join(esc)
    body = re.sub(r"(\\ )+", r"\\s+", body)
    return rf"\b{body}" if body[:1].isalnum() else body


@functools.lru_cache(maxsize=1)
def patterns() -> tuple[tuple[Pattern, ...], re.Pattern[str], re.Pattern[str], re.Pattern[str],
                        re.Pattern[str]]:
    """``(finding patterns, severity, negation-cue, normality-cue, terminator regexes)``.

    Cues from the phrase bank's ``NEGATION_CUES`` that state normality ("normal", "trace"...)
    are sorted into the normality class; the rest negate.
    """
    bank, sev_words, neg_words = _phrase_bank()
    out: list[Pattern] = []
    for key in [f.key for f in FINDINGS]:
        for rx, present in bank.get(key, []) + BUILTIN.get(key, []):
            out.append(Pattern(key, re.compile(rx), present, None))
    for sec, terms in SECTION_TERMS.items():
        for rx, key, present in terms:
            out.append(Pattern(key, re.compile(rx), present, sec))
    extra_sev = [re.escape(w.lower()) for w in sev_words if normalize_severity(w)]
    sev = re.compile(r"\b(?:" + "|".join([SEVERITY_RE_TEXT, *extra_sev]) + r")\b")
    normal = {*NORMAL_CUES}
    negators = {*NEGATION_CUES, *(w.lower().strip() for w in neg_words if w.strip())} - normal
    return tuple(out), sev, _words_re(negators), _words_re(normal), _words_re(TERMINATORS)


def _words_re(words: Iterable[str]) -> re.Pattern[str]:
    alts = sorted(set(words), key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in alts) + r")\b")
