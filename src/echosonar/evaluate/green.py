"""GREEN-style report faithfulness with a deterministic echo judge (``green_rule``).

GREEN's formula (Ostmeier et al., 2024)::

    green = matched_findings / (matched_findings + clinically_significant_errors)

(0 when nothing matched) with errors in six categories: (a) false report of a finding,
(b) missing a finding, (c) misidentification of a finding's anatomic location/position,
(d) misassessment of severity, (e) mentioning a comparison that isn't in the reference,
(f) omitting a comparison detailing a change from a prior study.

Here the judge is a rule-based extractor instead of an LLM, so numbers are reproducible and
cheap, but they are *not* comparable with LLM-judged GREEN (the paper's 7B judge), hence the name
``green_rule``. Each report is reduced to structured findings — ``{finding: (present, severity,
structure, side)}`` — using :mod:`echosonar.evaluate.green_lexicon`; explicit negative statements
("no pericardial effusion") are findings too, as an LLM judge counts them. Comparison:

* present in both, same or unstated severity -> matched (an unstated severity on one side is an
  insignificant (d)); different severities -> significant (d);
* absent in both -> matched;
* present only in the candidate -> (a); present only in the reference -> (b) (sub-threshold
  "trace"/"trivial"/"physiological" grades count as absent, as the simulator's phrase bank
  defines them);
* an (a) and a (b) of the same kind (chamber enlargement, valve regurgitation) at different
  structures are merged into one (c);
* a normal statement of the reference missing from the candidate -> insignificant (b);
* prior-study comparisons (per section) only in the candidate -> (e); only in the reference -> (f).

The optional LLM judge lives in :mod:`echosonar.evaluate.green_llm`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from echosonar.evaluate.green_lexicon import (
    COMPARISON_RE,
    KIND,
    LOCATION,
    SEVERITY_RANK,
    normalize_severity,
    patterns,
)
from echosonar.evaluate.green_llm import ERROR_LETTERS, green_score
from echosonar.taxonomy import REPORT_SECTION_TITLES, REPORT_SECTIONS

__all__ = ["Finding", "GreenRuleResult", "compare_reports", "extract_findings", "green_rule_batch",
           "green_score", "report_to_text"]

_POST_NEG = re.compile(r"^\s*(?:(?:is|are|was|were)\s+)?(?:not\s+(?:seen|present|identified|"
                       r"demonstrated|visuali[sz]ed|noted|detected)|absent)\b")
_AND_RE = re.compile(r"(?:\band\b|,)\s*")
_SENT_SPLIT = re.compile(r"(?<=[.;!?])\s+|\n+")


@dataclass
class Finding:
    """One structured finding of a report (the judge's unit of comparison)."""

    finding: str
    present: bool
    severity: str | None
    structure: str
    side: str
    sections: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)


def _sections(report: Mapping[str, str] | str) -> list[tuple[str, str]]:
    """``[(section_key, text)]``; a plain string is split on "Title:" line prefixes."""
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


def _mentions(section: str, sentence: str) -> list[tuple[str, bool, str | None, str]]:
    """``[(finding, present, severity, matched text)]`` in one sentence, left to right."""
    pats, sev_re, neg_re, normal_re, term_re = patterns()
    s = sentence.lower()
    spans: list[tuple[int, int, Any]] = []
    for p in pats:
        if p.section is not None and p.section != section:
            continue
        for m in p.regex.finditer(s):
            if m.end() > m.start():
                spans.append((m.start(), m.end(), p))
    # Longest match wins where matches overlap (specific phrases beat bare section terms).
    spans.sort(key=lambda t: (-(t[1] - t[0]), t[2].section is not None, t[0]))
    chosen: list[tuple[int, int, Any]] = []
    for a, b, p in spans:
        if all(b <= a2 or a >= b2 for a2, b2, _ in chosen):
            chosen.append((a, b, p))
    chosen.sort(key=lambda t: t[0])
    out = []
    prev_end = 0
    for i, (a, b, p) in enumerate(chosen):
        nxt = chosen[i + 1][0] if i + 1 < len(chosen) else len(s)
        before = list(sev_re.finditer(s, prev_end, b))
        after = sev_re.search(s[b:nxt])
        sev = (normalize_severity(before[-1].group(0)) if before else
               normalize_severity(after.group(0)) if after and after.start() < 40 else None)
        # Cue scope: from the last terminator before the mention to the mention's end; a
        # severity word after an "and"/comma starts a new statement ("no stenosis, mild AR").
        start = max([m.end() for m in term_re.finditer(s, 0, a)] or [0])
        if before:
            start = max([start] + [m.end() for m in _AND_RE.finditer(s, start,
                                                                      before[-1].start())])
        negated = bool(neg_re.search(s, start, b)) or bool(_POST_NEG.match(s[b:]))
        present = p.present != negated
        if p.present and normal_re.search(s, start, b):
            present = False
        out.append((p.finding, present, sev if present else None, s[a:b]))
        prev_end = b
    return out


def extract_findings(report: Mapping[str, str] | str) -> dict[str, Finding]:
    """Structured findings of a report, merged over sections (a positive statement anywhere
    wins over a negative one; the most severe stated grade is kept).

    >>> f = extract_findings({"LV": "The left ventricle is moderately dilated.",
    ...                       "pericardium": "No pericardial effusion."})
    >>> (f["lv_enlargement"].present, f["lv_enlargement"].severity,
    ...  f["pericardial_effusion"].present)
    (True, 'moderate', False)
    """
    out: dict[str, Finding] = {}
    for section, text in _sections(report):
        for sent in _SENT_SPLIT.split(text):
            for key, present, sev, ev in _mentions(section, sent):
                struct, side = LOCATION[key]
                f = out.get(key)
                if f is None:
                    out[key] = Finding(key, present, sev, struct, side, [section], [ev])
                    continue
                f.sections.append(section)
                f.evidence.append(ev)
                if present and not f.present:
                    f.present, f.severity = True, sev
                elif present and sev is not None and (
                        f.severity is None or SEVERITY_RANK[sev] > SEVERITY_RANK[f.severity]):
                    f.severity = sev
    return out


def extract_comparisons(report: Mapping[str, str] | str) -> set[str]:
    """Sections that mention a prior study (GREEN categories e/f)."""
    return {sec for sec, text in _sections(report)
            for sent in _SENT_SPLIT.split(text) if COMPARISON_RE.search(sent.lower())}


@dataclass
class GreenRuleResult:
    """Counts per GREEN category (index 0..5 = a..f) and what each error was."""

    significant: list[int] = field(default_factory=lambda: [0] * 6)
    insignificant: list[int] = field(default_factory=lambda: [0] * 6)
    matched: int = 0
    matched_findings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        return green_score(self.matched, self.significant)

    def _add(self, cat: str, significant: bool, what: str) -> None:
        i = ERROR_LETTERS.index(cat)
        (self.significant if significant else self.insignificant)[i] += 1
        self.errors.append(f"({cat}){'' if significant else ' [insignificant]'} {what}")


def compare_reports(reference: Mapping[str, str] | str,
                    candidate: Mapping[str, str] | str | None) -> GreenRuleResult:
    """Judge one candidate report against its reference (see the module docstring).

    >>> r = compare_reports({"mitral": "Moderate mitral regurgitation."},
    ...                     {"mitral": "Severe mitral regurgitation."})
    >>> r.significant, r.matched, r.score
    ([0, 0, 0, 1, 0, 0], 0, 0.0)
    """
    ref = extract_findings(reference)
    cand = extract_findings(candidate or {})
    res = GreenRuleResult()
    false_pos: list[Finding] = []
    missed: list[Finding] = []
    for key in sorted(set(ref) | set(cand)):
        r, c = ref.get(key), cand.get(key)
        if r is not None and c is not None and r.present == c.present:
            if r.present and r.severity and c.severity and r.severity != c.severity:
                res._add("d", True, f"{key}: {c.severity} instead of {r.severity}")
                continue
            if r.present and (r.severity is None) != (c.severity is None):
                res._add("d", False, f"{key}: severity stated on one side only")
            res.matched += 1
            res.matched_findings.append(f"{key} {'present' if r.present else 'absent'}")
        elif c is not None and c.present:  # reference absent or silent
            false_pos.append(c)
        elif r is not None and r.present:  # candidate absent or silent
            missed.append(r)
        elif r is not None and c is None:  # a normal statement the candidate left out
            res._add("b", False, f"{key}: normal statement omitted")
    # A false report and a miss of the same kind at another structure = one location error.
    for fp in list(false_pos):
        kind = KIND.get(fp.finding)
        twin = next((m for m in missed if kind and KIND.get(m.finding) == kind), None)
        if twin is not None:
            res._add("c", True, f"{twin.finding.split('_')[0].upper()} finding reported at "
                                f"{fp.structure} ({fp.finding} instead of {twin.finding})")
            false_pos.remove(fp)
            missed.remove(twin)
    for fp in false_pos:
        res._add("a", True, f"{fp.finding} reported but not in the reference")
    for m in missed:
        res._add("b", True, f"{m.finding} in the reference but not reported")
    ref_cmp, cand_cmp = extract_comparisons(reference), extract_comparisons(candidate or {})
    for sec in sorted(cand_cmp - ref_cmp):
        res._add("e", True, f"comparison with a prior study in section {sec}")
    for sec in sorted(ref_cmp - cand_cmp):
        res._add("f", True, f"prior-study comparison of section {sec} omitted")
    return res


def green_rule_batch(references: Sequence[Mapping[str, str] | str],
                     candidates: Sequence[Mapping[str, str] | str | None]) -> dict[str, Any]:
    """Mean ``green_rule`` over studies plus error totals per category.

    A missing candidate (malformed generation) is judged as an empty report (score 0).
    Returns ``{"green_rule", "n", "matched", "significant_errors": {a..f: n},
    "insignificant_errors": {a..f: n}, "per_study": [score, ...]}``.
    """
    if len(references) != len(candidates):
        raise ValueError(f"{len(references)} references but {len(candidates)} candidates")
    results = [compare_reports(r, c) for r, c in zip(references, candidates, strict=True)]
    n = len(results)
    return {
        "green_rule": sum(r.score for r in results) / n if n else float("nan"),
        "n": n, "matched": sum(r.matched for r in results),
        "significant_errors": {ERROR_LETTERS[i]: sum(r.significant[i] for r in results)
                               for i in range(6)},
        "insignificant_errors": {ERROR_LETTERS[i]: sum(r.insignificant[i] for r in results)
                                 for i in range(6)},
        "per_study": [round(r.score, 6) for r in results],
    }


def report_to_text(report: Mapping[str, str] | str) -> str:
    """Report sections as "Title: text" lines (the form the LLM judge reads)."""
    if isinstance(report, str):
        return report
    return "\n".join(f"{REPORT_SECTION_TITLES.get(s, s)}: {report[s]}"
                     for s in REPORT_SECTIONS if report.get(s))
