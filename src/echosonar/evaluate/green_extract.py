"""The GREEN-rule judge's reader: report text -> findings with a status and a severity.

A report (``{section: text}`` or a string with "Title:" line prefixes) is split into sentences
and each sentence into clauses. A clause ends at a strong boundary ("but", "with", "consistent
with", a bracket, ...) and at a comma or "and"/"or" that opens a new statement (a verb, a grade
or a finding adjective follows), so "No effusion, hypertrophy or stenosis" stays one list while
"no MR, mild TR" is two statements. In each clause the longest non-overlapping
:func:`green_lexicon.terms` are the mentions; each mention is

* ``normal`` when its term states normality, when a negation or normality cue precedes it in its
  clause (or sits inside it: "is not dilated"), or a negation follows it ("... was not
  evaluated", "...: none");
* otherwise asserted, with the nearest grade before it in its clause (or right after it: "TR is
  severe"): ``subthreshold`` when that grade is below the finding's threshold (trace anything,
  mild regurgitation), else ``abnormal``.

An ejection fraction with a number is a mention of LV systolic dysfunction graded by the
taxonomy's cut-offs. A sentence that is only "Normal." states its whole section normal. Per
finding the report keeps its strongest statement (abnormal > subthreshold > normal) and the
most severe grade stated for it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from echosonar.evaluate.green_lexicon import (
    ABNORMAL_FROM,
    COMPARISON_RE,
    EF_VALUE_RE,
    GRADE_RANK,
    LOCATION,
    NEGATION_RE,
    NEW_STATEMENT_RE,
    NORMAL_RE,
    POST_NEGATION_RE,
    SECTION_NORMAL_RE,
    SEVERITY_RE,
    STRONG_BOUNDARY_RE,
    STUDY_NORMAL_RE,
    UNGRADED,
    WEAK_BOUNDARY_RE,
    Term,
    ef_grade,
    grade_of,
    terms,
)
from echosonar.taxonomy import FINDINGS, REPORT_SECTION_TITLES, REPORT_SECTIONS

STATUS_ORDER = ("normal", "subthreshold", "abnormal")
_SENT_SPLIT = re.compile(r"(?<=[.;!?])\s+|\n+|;")
_ASIDE = re.compile(r"\(([^()]*)\)")


@dataclass
class Finding:
    """What a report says about one finding (the judge's unit of comparison)."""

    finding: str
    status: str  # "abnormal" | "subthreshold" | "normal"
    severity: str | None
    structure: str
    side: str
    sections: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)

    @property
    def present(self) -> bool:
        """True when the report calls the finding abnormal."""
        return self.status == "abnormal"


def report_sections(report: Mapping[str, str] | str) -> list[tuple[str, str]]:
    """``[(section_key, text)]``; a plain string is split on "Title:" line prefixes (text
    before any title is the conclusion)."""
    if isinstance(report, Mapping):
        return [(s, str(report.get(s) or "")) for s in REPORT_SECTIONS if report.get(s)] + [
            (str(s), str(t or "")) for s, t in report.items() if s not in REPORT_SECTIONS]
    by_title = {t.lower(): s for s, t in REPORT_SECTION_TITLES.items()}
    out, cur = [], "conclusion"
    for line in str(report).splitlines():
        head, sep, rest = line.partition(":")
        if sep and head.strip().lower() in by_title:
            cur, line = by_title[head.strip().lower()], rest
        if line.strip():
            out.append((cur, line.strip()))
    return out


def sentences(text: str) -> list[str]:
    """Lower-cased sentences of a section (a decimal point does not end one); a bracketed
    aside becomes a sentence of its own, so it neither splits nor joins the statement around
    it ("moderate (2+) MR").

    >>> sentences("LVEDD 6.1 cm. Moderate (2+) MR; trace TR")
    ['lvedd 6.1 cm.', 'moderate mr', '2+', 'trace tr']
    """
    out = []
    for s in _SENT_SPLIT.split(text.lower()):
        asides = _ASIDE.findall(s)
        out += [" ".join(_ASIDE.sub(" ", s).split()), *asides]
    return [s.strip() for s in out if s.strip()]


def clauses(sentence: str) -> list[tuple[int, int]]:
    """``[(start, end)]`` clause spans of one lower-cased sentence (see the module docstring).

    >>> s = "no mr, mild tr and no effusion, hypertrophy or stenosis"
    >>> [s[a:b] for a, b in clauses(s)]
    ['no mr', 'mild tr and no effusion, hypertrophy or stenosis']
    """
    cuts = [(m.start(), m.end()) for m in STRONG_BOUNDARY_RE.finditer(sentence)]
    weak = [(m.start(), m.end()) for m in WEAK_BOUNDARY_RE.finditer(sentence)]
    for i, (a, b) in enumerate(weak):
        nxt = min([x for x, _ in weak[i + 1:]] + [x for x, _ in cuts if x >= b] + [len(sentence)])
        if NEW_STATEMENT_RE.search(sentence, b, nxt):
            cuts.append((a, b))
    spans, pos = [], 0
    for a, b in sorted(cuts):
        if a > pos:
            spans.append((pos, a))
        pos = max(pos, b)
    if pos < len(sentence):
        spans.append((pos, len(sentence)))
    return [(a, b) for a, b in spans if sentence[a:b].strip()]


def _mentions(section: str, text: str, a: int, b: int) -> list[tuple[int, int, Term]]:
    """Longest non-overlapping term matches in ``text[a:b]`` that are valid in ``section``."""
    found = [(m.start(), m.end(), t) for t in terms() if t.section in (None, section)
             for m in t.regex.finditer(text, a, b) if m.end() > m.start()]
    found.sort(key=lambda x: (-(x[1] - x[0]), x[0]))
    chosen: list[tuple[int, int, Term]] = []
    for s, e, t in found:
        if all(e <= s2 or s >= e2 for s2, e2, _ in chosen):
            chosen.append((s, e, t))
    return sorted(chosen, key=lambda x: x[0])


def _status(finding: str, grade: str | None) -> tuple[str, str | None]:
    """Status and kept grade of an asserted mention."""
    if finding in UNGRADED or grade is None:
        return "abnormal", None
    if GRADE_RANK[grade] < ABNORMAL_FROM.get(finding, 1.0):
        return "subthreshold", grade
    return "abnormal", grade


def read_sentence(section: str, sent: str) -> list[tuple[str, str, str | None, str]]:
    """``[(finding, status, grade, evidence text)]`` of one lower-cased sentence.

    >>> read_sentence("conclusion", "no mr, mild tr and moderate as")
    [('mitral_regurgitation', 'normal', None, 'mr'), ('tricuspid_regurgitation', 'subthreshold', 'mild', 'tr'), ('aortic_stenosis', 'abnormal', 'moderate', 'moderate as')]
    """
    out = []
    if section != "conclusion" and SECTION_NORMAL_RE.fullmatch(sent.rstrip(". ")):
        return [(f.key, "normal", None, sent) for f in FINDINGS if f.section == section]
    for a, b in clauses(sent):
        found = _mentions(section, sent, a, b)
        prev = a
        for i, (s, e, t) in enumerate(found):
            nxt = found[i + 1][0] if i + 1 < len(found) else b
            head = sent[a:e]
            negated = bool(NEGATION_RE.search(head) or POST_NEGATION_RE.match(sent[e:b]))
            normal = not t.polarity or negated or bool(NORMAL_RE.search(head))
            before = [m.group(0) for m in SEVERITY_RE.finditer(sent, prev, e)]
            after = SEVERITY_RE.search(sent, e, min(nxt, e + 40))
            word = before[-1] if before else after.group(0) if after else None
            for key in t.findings:
                status, grade = ("normal", None) if normal else _status(
                    key, grade_of(word) if word else None)
                out.append((key, status, grade, sent[s:e]))
            prev = e
        for m in EF_VALUE_RE.finditer(sent, a, b):
            lo, hi = m.group(1), m.group(2) or m.group(1)
            grade = ef_grade((float(lo) + float(hi)) / 2)
            out.append(("lv_systolic_dysfunction", "abnormal" if grade else "normal", grade,
                        m.group(0)))
    return out


def extract_findings(report: Mapping[str, str] | str) -> dict[str, Finding]:
    """Findings of a report, merged over sections and sentences (the strongest status wins;
    the most severe grade of that status is kept).

    >>> f = extract_findings({"LV": "The left ventricle is moderately dilated.",
    ...                       "mitral": "Mild regurgitation.",
    ...                       "pericardium": "No pericardial effusion."})
    >>> [(k, v.status, v.severity) for k, v in f.items()]
    [('lv_enlargement', 'abnormal', 'moderate'), ('mitral_regurgitation', 'subthreshold', 'mild'), ('pericardial_effusion', 'normal', None)]
    """
    out: dict[str, Finding] = {}
    for section, text in report_sections(report):
        for sent in sentences(text):
            for key, status, grade, ev in read_sentence(section, sent):
                f = out.get(key)
                if f is None:
                    out[key] = Finding(key, status, grade, *LOCATION[key], [section], [ev])
                    continue
                f.sections.append(section)
                f.evidence.append(ev)
                rank = STATUS_ORDER.index
                if rank(status) > rank(f.status):
                    f.status, f.severity = status, grade
                elif status == f.status and grade is not None and (
                        f.severity is None or GRADE_RANK[grade] > GRADE_RANK[f.severity]):
                    f.severity = grade
    return out


def states_normality(report: Mapping[str, str] | str,
                     findings: Mapping[str, Finding] | None = None) -> bool:
    """True when the report says something the judge reads: a finding statement or "normal
    study" (what a both-normal pair needs to score 1.0)."""
    if findings is None:
        findings = extract_findings(report)
    return bool(findings) or any(STUDY_NORMAL_RE.search(s) for _, text in report_sections(report)
                                 for s in sentences(text))


def extract_comparisons(report: Mapping[str, str] | str) -> set[str]:
    """Sections that mention a prior study (GREEN categories e/f)."""
    return {sec for sec, text in report_sections(report)
            for sent in sentences(text) if COMPARISON_RE.search(sent)}
