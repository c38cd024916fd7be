"""The GREEN-rule judge's own echo vocabulary: how clinical report wording names each finding,
its severity, its negation and its normality.

Written for the judge alone, from echo reporting conventions (ASE-style phrasing, common
abbreviations, synonyms), and deliberately **not** from the simulator's phrase banks
(``echosonar.phrases``, ``simulate/text.py``): a judge that reads the writer's own templates
scores text from those templates 1.0 by construction and says nothing about other wording. Its
accuracy on wording the simulator never writes is measured on a held-out, hand-written set
(``tests/evaluate/data/green_paraphrases.json``).

Contents (all lower-case regular expressions):

* :data:`TERMS` -- phrases that mention findings, each with a polarity: ``True`` asserts the
  finding ("dilated left atrium"), ``False`` states it normal ("trileaflet aortic valve");
  a few name several findings ("biatrial enlargement"); some are valid only inside one report
  section ("regurgitation" in the Mitral valve section is mitral regurgitation), and
  *blockers* (finding ``None``) consume phrases that look like a finding but are not one
  ("RV systolic dysfunction", "aortic root dilated");
* severity grades (:func:`grade_of`) with their rank, and the rank from which each finding
  counts as abnormal (:data:`ABNORMAL_FROM`: regurgitation is a finding when moderate or worse,
  as the taxonomy defines it, so "mild MR" is a sub-threshold mention);
* negation, normality and hedge cues, clause boundaries, prior-study comparison cues.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from echosonar.taxonomy import FINDING_BY_KEY

#: Severity grades and their rank (small = mild and large = severe for effusions).
GRADE_RANK: dict[str, float] = {
    "trace": 0.0, "mild": 1.0, "small": 1.0, "mild-to-moderate": 1.5, "moderate": 2.0,
    "moderate-to-severe": 2.5, "severe": 3.0, "large": 3.0,
}
_GRADE_WORDS: tuple[tuple[str, str], ...] = (  # (regex, grade); longest alternatives first
    (r"(?:mild(?:ly)?|small)(?:[- ]to[- ]|-)moderate(?:ly)?", "mild-to-moderate"),
    (r"moderate(?:ly)?(?:[- ]to[- ]|-)(?:sever(?:e|ely)|large)|moderately severe",
     "moderate-to-severe"),
    (r"trace|trivial|minimal|physiologic(?:al)?", "trace"),
    (r"mild(?:ly)?|slight(?:ly)?|borderline|minor", "mild"),
    (r"moderate(?:ly)?", "moderate"),
    (r"sever(?:e|ely)|marked(?:ly)?|massive|critical|heavi(?:ly)?|heavy|extensive(?:ly)?|gross(?:ly)?",
     "severe"),
    (r"small", "small"),
    (r"large", "large"),
    (r"(?:grade )?[1-4] ?\+|grade (?:i{1,3}|iv|[1-4])(?:/4)?", "grade"),
)
SEVERITY_RE = re.compile(r"\b(?:" + "|".join(rx for rx, _ in _GRADE_WORDS)
                         + r")(?:[- ]sized)?(?![\w-])")
_NUMERIC_GRADE = {"1": "mild", "i": "mild", "2": "moderate", "ii": "moderate",
                  "3": "moderate-to-severe", "iii": "moderate-to-severe", "4": "severe",
                  "iv": "severe"}

#: Rank from which a stated grade makes a finding abnormal (default 1 = mild).
ABNORMAL_FROM: dict[str, float] = {"mitral_regurgitation": 2.0,
                                   "tricuspid_regurgitation": 2.0,
                                   "aortic_regurgitation": 2.0}
#: Findings whose grade is not a severity (a valve has two cusps or it has not).
UNGRADED: frozenset[str] = frozenset({"bicuspid_aortic_valve"})


def grade_of(word: str) -> str | None:
    """Canonical grade of a severity word or phrase (None if it is not one).

    >>> grade_of("Moderately"), grade_of("mild to moderate"), grade_of("3+"), grade_of("big")
    ('moderate', 'mild-to-moderate', 'moderate-to-severe', None)
    >>> grade_of("moderate-sized"), grade_of("small to moderate")
    ('moderate', 'mild-to-moderate')
    """
    w = re.sub(r"[- ]sized$", "", word.lower().strip())
    for rx, grade in _GRADE_WORDS:
        if re.fullmatch(rx, w):
            if grade == "grade":
                return _NUMERIC_GRADE[re.findall(r"iv|i{1,3}|[1-4]", w.replace("grade", ""))[0]]
            return grade
    return None


#: Cues that negate the findings after them in their clause.
NEGATION_RE = re.compile(
    r"\b(?:no|not|without|absent|negative for|free of|none|neither|nor|never|"
    r"no (?:evidence|echocardiographic evidence|sign|signs) of|rules? out|ruled out)\b")
#: Cues after a finding that negate it ("... is not seen", "... absent", "... excluded"); hedges
#: ("cannot be excluded") are not negations.
POST_NEGATION_RE = re.compile(
    r"^[\s:,]*(?:(?:is|are|was|were|has been|have been|could|can)\s+)?"
    r"(?:not\s+(?:be\s+)?(?:seen|present|identified|demonstrated|visuali[sz]ed|noted|detected|"
    r"assessed|evaluated|assessable|imaged|(?:well\s+)?seen|acquired)|absent|none|excluded|"
    r"ruled out)\b")
#: Cues that state normality: the findings they govern are normal (not flipped: a term that
#: already states normality stays normal).
NORMAL_RE = re.compile(r"\b(?:normal(?:ly)?|preserved|unremarkable|within normal limits|"
                       r"hyperdynamic|vigorous)\b")
#: Words that end a cue's scope inside a sentence; "," and "and" end it only before a new
#: statement (:data:`NEW_STATEMENT_RE`), so "no effusion, hypertrophy or stenosis" stays one list.
STRONG_BOUNDARY_RE = re.compile(r"\s*(?:\bbut\b|\bhowever\b|\balthough\b|\bthough\b|"
                                r"\bwhereas\b|\bwhile\b|\bexcept\b|\bwith\b|\bapart from\b|"
                                r"\baside from\b|\byet\b|\bconsistent with\b|\bin keeping with\b|"
                                r"\bsuggest(?:ing|ive of)\b)\s*")
WEAK_BOUNDARY_RE = re.compile(r"\s*(?:,|\band\b|\bor\b)\s*")
NEW_STATEMENT_RE = re.compile(r"\b(?:is|are|was|were|appears?|seems?|remains?|looks?|has|have|"
                              r"there|dilated|enlarged|reduced|impaired|depressed|thickened|"
                              r"calcified|stenotic)\b|" + SEVERITY_RE.pattern)
#: A whole sentence that states its section normal ("Left atrium: Normal.").
SECTION_NORMAL_RE = re.compile(r"^(?:normal(?: size| appearances?| study)?|unremarkable|"
                               r"within normal limits|no abnormality(?: seen| detected)?)$")
#: A statement that the whole study is normal.
STUDY_NORMAL_RE = re.compile(
    r"\b(?:normal (?:study|(?:transthoracic )?echo(?:cardiogram)?|examination)|"
    r"structurally normal heart|no significant (?:structural )?(?:abnormality|abnormalities|"
    r"cardiac abnormality)|no (?:structural )?abnormality (?:seen|detected)|"
    r"unremarkable (?:study|echo(?:cardiogram)?))\b")
#: A clause that mentions a prior study (GREEN categories e and f).
COMPARISON_RE = re.compile(
    r"\b(?:compared (?:with|to)|comparison|prior (?:study|exam|examination|echo\w*)|"
    r"previous(?:ly)?|since the (?:last|prior|previous)|interval(?:ly)?|unchanged|"
    r"no (?:significant )?(?:interval )?change|(?:has|have) (?:worsened|improved|progressed|"
    r"increased|decreased|resolved)|newly|new since|stable (?:since|compared))\b")

# Location of each finding: (structure, side) -- the "where" GREEN's category (c) checks.
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

# ---------------------------------------------------------------------------------------------
# Terms
# ---------------------------------------------------------------------------------------------

_ADV = (r"(?:(?:" + "|".join(rx for rx, g in _GRADE_WORDS if g != "grade")
        + r"|also|now|at most|only|somewhat|not|significantly|globally|diffusely)\s+)*")
_COP = r"(?:\s+(?:is|are|was|were|appears?|seems?|remains?|looks?))?\s+"
_BIG = r"(?:enlarged|dilated|increased in size|hypertrophied)"
_BIGN = r"(?:enlargement|dilatation|dilation)"
_CH = {
    "lv": r"(?:lv|left ventric(?:le|ular))(?: cavity)?",
    "la": r"(?:la|left atri(?:um|al))(?: cavity)?",
    "ra": r"(?:ra|right atri(?:um|al))(?: cavity)?",
    "rv": r"(?:rv|right ventric(?:le|ular))(?: cavity)?",
}
_SIZE = r"(?:size|dimensions?|diameters?|volumes?|cavity size)"


def _chamber(ch: str) -> list[tuple[str, bool]]:
    c = _CH[ch]
    return [
        (rf"\b{c}(?: {_SIZE})? {_BIGN}", True),
        (rf"\b{_ADV}{_BIG} {c}\b", True),
        (rf"\b{c}(?: {_SIZE})?{_COP}{_ADV}{_BIG}", True),
        (rf"\b{c} {_SIZE}{_COP}{_ADV}increased", True),
        (rf"\bnormal(?:[- ]sized| size)? {c}(?: {_SIZE})?", False),
        (rf"\b{c}(?: {_SIZE})?{_COP}(?:of )?normal(?: in)?(?: size)?", False),
        (rf"\b{c}(?: {_SIZE})?{_COP}(?:within normal limits|normal)", False),
        (rf"\b{c} {_SIZE}(?: is)? at the upper limits? of normal", False),
    ]


_LVQ = r"(?:global )?(?:(?:lv|left ventricular) )?(?:global )?(?:systolic )?"
_FN = r"(?:systolic function|ejection fraction|lvef|\bef\b|contractility|function)"
_DOWN = r"(?:reduced|impaired|depressed|decreased|low|poor|diminished|abnormal)"
#: ``{finding: [(regex, polarity)]}`` valid in every section.
TERMS: dict[str, list[tuple[str, bool]]] = {
    "lv_systolic_dysfunction": [
        (r"\b(?:lv |left ventricular )?systolic (?:dysfunction|impairment|failure)", True),
        (rf"\b{_ADV}{_DOWN} {_LVQ}{_FN}", True),
        (rf"\b{_LVQ}{_FN}{_COP}{_ADV}{_DOWN}", True),
        (r"\bimpairment of (?:lv |left ventricular )?(?:global )?systolic function", True),
        (r"\b(?:global(?:ly)? )?hypokine(?:sis|tic)(?: (?:lv|left ventricle))?", True),
        (r"\bpoorly (?:contracting|functioning)", True),
        (rf"\b(?:normal|preserved) {_LVQ}{_FN}", False),
        (rf"\b{_LVQ}{_FN}{_COP}(?:normal|preserved|within normal limits)", False),
        (r"\bhyperdynamic(?: (?:lv|left ventricle))?", False),
    ],
    "lv_enlargement": _chamber("lv"),
    "lv_hypertrophy": [
        (r"\b(?:(?:lv|left ventricular|concentric|eccentric|septal|asymmetric(?:al)?) )*"
         r"hypertrophy", True),
        (r"\blvh\b", True),
        (r"\bhypertrophied (?:lv|left ventricle)", True),
        (r"\b(?:increased|thickened) (?:lv |left ventricular )?(?:wall|septal)s?"
         r"(?: thickness)?", True),
        (r"\b(?:lv |left ventricular )?wall thickening", True),
        (rf"\b(?:(?:lv|left ventricular|septal) )?walls?(?: thickness)?{_COP}{_ADV}"
         r"(?:thickened|increased)", True),
        (r"\bnormal (?:lv |left ventricular )?wall thickness", False),
        (rf"\bwall thickness{_COP}(?:within normal limits|normal)", False),
    ],
    "la_enlargement": _chamber("la"),
    "ra_enlargement": _chamber("ra"),
    "rv_enlargement": _chamber("rv"),
    "aortic_stenosis": [
        (r"\b(?:calcific )?aortic (?:valve )?stenosis", True),
        (r"\bstenotic aortic valve|\baortic valve (?:is )?stenotic", True),
        (r"\b(?:" + "|".join(rx for rx, g in _GRADE_WORDS if g != "grade")
         + r"|no|significant) (?:aortic )?as\b", True),
        (r"\b(?:valvular )?stenosis|\bstenotic\b", True),
        (r"\b(?:restricted|reduced|limited) (?:aortic )?(?:cusp |leaflet |valve )?(?:opening|"
         r"excursion|separation|motion)", True),
        (r"\baortic (?:valve )?sclerosis", False),
        (r"\baortic (?:valve|cusps?|leaflets?) opens? (?:normally|well)", False),
        (r"\bnormal (?:aortic )?(?:cusp|leaflet|valve) (?:opening|excursion|separation)", False),
    ],
    "bicuspid_aortic_valve": [
        (r"\b(?:congenitally )?bicuspid(?: aortic valve| valve)?", True),
        (r"\bbav\b", True),
        (r"\btwo (?:aortic )?(?:cusps|leaflets)", True),
        (r"\bfish-?mouth", True),
        (r"\b(?:trileaflet|tricuspid|three-cusp) aortic valve", False),
        (r"\baortic valve (?:is |appears )?(?:trileaflet|tricuspid)", False),
        (r"\baortic valve morphology:? (?:is )?(?:trileaflet|tricuspid|normal)", False),
        (r"\bthree (?:aortic )?(?:cusps|leaflets)", False),
    ],
    "mitral_valve_calcification": [
        (r"\bmitral (?:annular |annulus |valve |leaflet )*(?:calcification|calcium)", True),
        (r"\bcalcified mitral (?:valve|annulus|leaflets?)", True),
        (r"\bcalcification of the mitral (?:valve|annulus|leaflets?)", True),
        (rf"\bmitral (?:valve|annulus|leaflets?){_COP}(?:thin and )?{_ADV}calcified", True),
        (r"\bmac\b", True),
        (r"\bnormal mitral (?:valve |leaflet |leaflets )?morphology", False),
    ],
    "mitral_regurgitation": [(r"\bmitral (?:valve )?(?:regurgitation|insufficiency)", True),
                             (r"\bmr\b", True)],
    "tricuspid_regurgitation": [(r"\btricuspid (?:valve )?(?:regurgitation|insufficiency)", True),
                                (r"\btr\b", True)],
    "aortic_regurgitation": [(r"\baortic (?:valve )?(?:regurgitation|insufficiency)", True),
                             (r"\bar\b|\bai\b", True)],
    "pericardial_effusion": [(r"\bpericardial (?:effusion|fluid(?: collection)?)", True),
                             (r"\beffusion", True)],
}
#: Phrases that name several findings: ``(regex, findings, polarity)``.
MULTI_TERMS: list[tuple[str, tuple[str, ...], bool]] = [
    (rf"\bbiatrial {_BIGN}|\bbiatrial (?:{_BIG})|\bboth atria{_COP}{_ADV}{_BIG}",
     ("la_enlargement", "ra_enlargement"), True),
    (rf"\bboth atria{_COP}normal(?: in size)?|\bnormal (?:bi)?atrial sizes?",
     ("la_enlargement", "ra_enlargement"), False),
    (r"\bnormal (?:lv|left ventricular) size and (?:systolic )?function",
     ("lv_enlargement", "lv_systolic_dysfunction"), False),
    (r"\bnormal biventricular size and (?:systolic )?function",
     ("lv_enlargement", "rv_enlargement", "lv_systolic_dysfunction"), False),
    (r"\bright heart (?:dilatation|dilation|enlargement)", ("ra_enlargement", "rv_enlargement"),
     True),
    (r"\baortic (?:valve )?(?:stenosis|sclerosis) (?:or|and|nor) (?:regurgitation|insufficiency)",
     ("aortic_stenosis", "aortic_regurgitation"), True),
]
# Two chambers named together share the statement: "dilated LA and RA", "LV and LA dilatation".
MULTI_TERMS += [
    (rx.format(a=_CH[a], b=_CH[b]), (f"{a}_enlargement", f"{b}_enlargement"), True)
    for a in _CH for b in _CH if a != b
    for rx in (rf"\b{_ADV}{_BIG} {{a}}(?:,| and| or) (?:the )?{{b}}\b",
               rf"\b{{a}}(?:,| and| or) (?:the )?{{b}}(?: {_SIZE})?{_COP}{_ADV}{_BIG}",
               rf"\b{{a}}(?:,| and| or) (?:the )?{{b}} {_BIGN}")]
#: Bare terms resolved by the report section they appear in: ``{section: [(regex, finding,
#: polarity)]}``.
SECTION_TERMS: dict[str, list[tuple[str, str, bool]]] = {
    "mitral": [(r"\b(?:regurgitation|insufficiency|regurgitant jet|leak)", "mitral_regurgitation",
                True),
               (r"\b(?:calcification|calcified)", "mitral_valve_calcification", True)],
    "tricuspid": [(r"\b(?:regurgitation|insufficiency|regurgitant jet|leak)",
                   "tricuspid_regurgitation", True)],
    "aortic": [(r"\b(?:regurgitation|insufficiency|regurgitant jet|leak)", "aortic_regurgitation",
                True),
               (r"\b(?:stenosis|stenotic)", "aortic_stenosis", True),
               (r"\b(?:cusps? )?opens? (?:normally|well)", "aortic_stenosis", False)],
    "pericardium": [(r"\b(?:effusion|fluid)", "pericardial_effusion", True)],
    **{ch.upper(): [(rf"\b{_ADV}(?:{_BIG}|{_BIGN})", f"{ch}_enlargement", True),
                    (r"\bnormal(?: in)? size|\bsize (?:is )?normal", f"{ch}_enlargement", False)]
       for ch in ("lv", "la", "ra", "rv")},
}
SECTION_TERMS["LV"] += [
    (r"\bsystolic dysfunction", "lv_systolic_dysfunction", True),
    (rf"\b(?:systolic )?function{_COP}{_ADV}{_DOWN}", "lv_systolic_dysfunction", True),
    (rf"\b(?:systolic )?function{_COP}(?:normal|preserved)|\bfunction preserved",
     "lv_systolic_dysfunction", False),
    (r"\bcavity size normal", "lv_enlargement", False),
]
#: Phrases that look like findings but are none of the taxonomy's (consumed, then ignored).
BLOCKERS: tuple[str, ...] = (
    r"\b(?:rv|right ventricular) (?:systolic )?(?:dysfunction|function|impairment|hypertrophy|"
    r"wall thickness|free wall)",
    r"\b(?:tapse|ivc|inferior vena cava|aortic root|ascending aorta|sinus(?:es)? of valsalva|"
    r"pulmonary arter(?:y|ies))\b",
    r"\bpleural effusion", r"\bregional wall motion", r"\bdiastolic (?:dysfunction|function)",
    r"\b(?:mitral|tricuspid|pulmonary|pulmonic|subaortic) (?:valve )?(?:stenosis|prolapse)",
    r"\bpulmonary (?:valve )?(?:regurgitation|insufficiency)",
)


@dataclass(frozen=True)
class Term:
    """One compiled phrase: the findings it names (empty for a blocker), its polarity, and the
    report section it is valid in (None = any)."""

    findings: tuple[str, ...]
    regex: re.Pattern[str]
    polarity: bool
    section: str | None


@functools.lru_cache(maxsize=1)
def terms() -> tuple[Term, ...]:
    """Every compiled term (global, multi-finding, section-resolved, blockers)."""
    out = [Term((key,), re.compile(rx), pol, None) for key, pats in TERMS.items()
           for rx, pol in pats]
    out += [Term(keys, re.compile(rx), pol, None) for rx, keys, pol in MULTI_TERMS]
    out += [Term((key,), re.compile(rx), pol, sec) for sec, pats in SECTION_TERMS.items()
            for rx, key, pol in pats]
    out += [Term((), re.compile(rx), False, None) for rx in BLOCKERS]
    return tuple(out)


#: An ejection fraction with its number ("LVEF 35%", "ejection fraction of about 25 percent").
EF_VALUE_RE = re.compile(r"\b(?:lvef|ef|ejection fraction)\b[^.;%]{0,30}?(\d{1,2})"
                         r"(?:\s*(?:-|to)\s*(\d{1,2}))?\s*(?:%|percent)")


def ef_grade(ef: float) -> str | None:
    """Grade of LV systolic dysfunction from an ejection fraction, by the taxonomy's cut-offs
    (None when the fraction is normal).

    >>> ef_grade(62), ef_grade(45), ef_grade(35), ef_grade(20)
    (None, 'mild', 'moderate', 'severe')
    """
    f = FINDING_BY_KEY["lv_systolic_dysfunction"]
    return f.severity({"ef_pct": ef}) if f.positive({"ef_pct": ef}) else None
