"""GREEN-style report faithfulness with a deterministic echo judge (``green_rule``).

GREEN's formula (Ostmeier et al., 2024)::

    green = matched_findings / (matched_findings + clinically_significant_errors)

with errors in six categories: (a) false report of a finding, (b) missing a finding,
(c) misidentification of a finding's anatomic location/position, (d) misassessment of severity,
(e) mentioning a comparison that isn't in the reference, (f) omitting a comparison detailing a
change from a prior study.

The judge is rule-based instead of an LLM (reproducible and cheap, *not* comparable with
LLM-judged GREEN, hence ``green_rule``). It reads each report into findings with a status --
``abnormal`` (with its severity), ``subthreshold`` (trace/trivial, or mild regurgitation, which
the taxonomy does not count) or ``normal`` (stated absent, normal or not assessed) -- using its
own vocabulary (:mod:`echosonar.evaluate.green_lexicon`, not the simulator's phrase banks).

What counts (and why). A matched finding is a clinically significant one: an **abnormal**
finding both reports state. Agreeing normal statements are not matches: counted as matches they
dominate every score (a fixed healthy report scored 0.86 against sick studies, above the
models). Comparison:

* abnormal in both -> matched; stated severities a grade or more apart -> significant (d) instead
  (half a grade, or a grade stated on one side only -> insignificant (d), still matched);
* abnormal in the reference only -> (b); in the candidate only -> (a); abnormal on one side and
  graded below the finding's threshold on the other -> significant (d);
* an (a) and a (b) of the same kind (chamber enlargement, valve regurgitation) at different
  structures -> one (c);
* neither abnormal: a reference statement the candidate leaves out -> insignificant (b), a
  sub-threshold grade only in the candidate -> insignificant (a), normal vs sub-threshold ->
  insignificant (d) (reported, not scored);
* prior-study comparisons (per section) only in the candidate -> (e); only in the reference ->
  (f).

**Both reports normal** (no abnormal finding on either side): nothing significant is missed or
invented, so the score is 1.0 -- provided the candidate states something the judge reads (a
normal statement, or "normal study"); an empty or unreadable candidate scores 0. A constant
healthy report therefore scores about the fraction of healthy studies in a test set, and 0 on
every study with a finding.

The optional LLM judge lives in :mod:`echosonar.evaluate.green_llm`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from echosonar.evaluate.green_extract import (
    Finding,
    extract_comparisons,
    extract_findings,
    states_normality,
)
from echosonar.evaluate.green_lexicon import GRADE_RANK, KIND
from echosonar.evaluate.green_llm import ERROR_CATEGORIES, ERROR_LETTERS, green_score
from echosonar.taxonomy import FINDINGS, REPORT_SECTION_TITLES, REPORT_SECTIONS

__all__ = ["Finding", "GreenRuleResult", "compare_reports", "extract_findings", "green_rule_batch",
           "green_score", "report_to_text"]

Report = Mapping[str, str] | str


@dataclass
class GreenRuleResult:
    """Counts per GREEN category (index 0..5 = a..f), what each error was, and the abnormal
    findings of each side (for precision/recall)."""

    significant: list[int] = field(default_factory=lambda: [0] * 6)
    insignificant: list[int] = field(default_factory=lambda: [0] * 6)
    matched: int = 0
    matched_findings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    reference_abnormal: set[str] = field(default_factory=set)
    candidate_abnormal: set[str] = field(default_factory=set)
    candidate_states_normal: bool = False

    @property
    def both_normal(self) -> bool:
        return not self.reference_abnormal and not self.candidate_abnormal

    @property
    def score(self) -> float:
        """GREEN's formula; both-normal pairs score 1.0 when the candidate says so (see the
        module docstring)."""
        if self.both_normal and self.matched == 0 and not any(self.significant):
            return 1.0 if self.candidate_states_normal else 0.0
        return green_score(self.matched, self.significant)

    def _add(self, cat: str, significant: bool, what: str) -> None:
        i = ERROR_LETTERS.index(cat)
        (self.significant if significant else self.insignificant)[i] += 1
        self.errors.append(f"({cat}){'' if significant else ' [insignificant]'} {what}")


def _severity_error(key: str, r: Finding, c: Finding, res: GreenRuleResult) -> bool:
    """Record a severity difference between two abnormal statements; True when significant."""
    if r.severity is None or c.severity is None:
        if r.severity != c.severity:
            res._add("d", False, f"{key}: severity stated on one side only")
        return False
    gap = abs(GRADE_RANK[r.severity] - GRADE_RANK[c.severity])
    if gap >= 1.0:
        res._add("d", True, f"{key}: {c.severity} instead of {r.severity}")
        return True
    if gap > 0:
        res._add("d", False, f"{key}: {c.severity} instead of {r.severity}")
    return False


def compare_reports(reference: Report, candidate: Report | None) -> GreenRuleResult:
    """Judge one candidate report against its reference (see the module docstring).

    >>> r = compare_reports({"mitral": "Moderate mitral regurgitation."},
    ...                     {"mitral": "Severe mitral regurgitation."})
    >>> r.significant, r.matched, r.score
    ([0, 0, 0, 1, 0, 0], 0, 0.0)
    >>> compare_reports("Normal study.", "No pericardial effusion.").score
    1.0
    """
    ref = extract_findings(reference)
    cand = extract_findings(candidate or {})
    res = GreenRuleResult(
        reference_abnormal={k for k, f in ref.items() if f.status == "abnormal"},
        candidate_abnormal={k for k, f in cand.items() if f.status == "abnormal"},
        candidate_states_normal=candidate is not None and states_normality(candidate, cand))
    false_pos: list[Finding] = []
    missed: list[Finding] = []
    for key in [f.key for f in FINDINGS if f.key in ref or f.key in cand]:
        r, c = ref.get(key), cand.get(key)
        r_ab, c_ab = key in res.reference_abnormal, key in res.candidate_abnormal
        if r_ab and c_ab:
            if not _severity_error(key, r, c, res):  # type: ignore[arg-type]
                res.matched += 1
                res.matched_findings.append(key)
        elif r_ab or c_ab:
            other = c if r_ab else r
            if other is not None and other.status == "subthreshold":
                res._add("d", True, f"{key}: {'candidate' if r_ab else 'reference'} grades it "
                                    f"{other.severity}, below a finding")
            else:
                (missed if r_ab else false_pos).append(r if r_ab else c)  # type: ignore[arg-type]
        elif c is None:  # neither abnormal from here on
            res._add("b", False, f"{key}: {r.status} statement omitted")  # type: ignore[union-attr]
        elif r is None:
            if c.status == "subthreshold":
                res._add("a", False, f"{key}: {c.severity} grade not in the reference")
        elif r.status != c.status:
            res._add("d", False, f"{key}: {c.status} instead of {r.status}")
    # A false report and a miss of the same kind at another structure = one location error.
    for fp in list(false_pos):
        kind = KIND.get(fp.finding)
        twin = next((m for m in missed if kind and KIND.get(m.finding) == kind), None)
        if twin is not None:
            res._add("c", True, f"{kind} reported at {fp.structure} instead of "
                                f"{twin.structure} ({fp.finding} instead of {twin.finding})")
            false_pos.remove(fp)
            missed.remove(twin)
    for fp in false_pos:
        res._add("a", True, f"{fp.finding} reported but not in the reference")
    for m in missed:
        res._add("b", True, f"{m.finding} in the reference but not reported")
    ref_cmp = extract_comparisons(reference)
    cand_cmp = extract_comparisons(candidate or {})
    for sec in sorted(cand_cmp - ref_cmp):
        res._add("e", True, f"comparison with a prior study in section {sec}")
    for sec in sorted(ref_cmp - cand_cmp):
        res._add("f", True, f"prior-study comparison of section {sec} omitted")
    return res


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall, F1 (NaN where undefined; F1 is 0 when anything was missed or
    invented and nothing was found).

    >>> _prf(3, 1, 0)
    {'precision': 0.75, 'recall': 1.0, 'f1': 0.8571428571428571}
    """
    nan = float("nan")
    return {"precision": tp / (tp + fp) if tp + fp else nan,
            "recall": tp / (tp + fn) if tp + fn else nan,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else nan}


def green_rule_batch(references: Sequence[Report], candidates: Sequence[Report | None]
                     ) -> dict[str, Any]:
    """Mean ``green_rule`` over studies, error totals per category and the abnormal-finding
    precision/recall/F1 of the report text.

    A missing candidate (malformed generation) is judged as an empty report (score 0).
    Returns ``{"green_rule", "n", "matched", "n_both_normal", "significant_errors": {a..f: n},
    "insignificant_errors": {a..f: n}, "error_types": {a..f: GREEN's category name},
    "abnormal_precision", "abnormal_recall", "abnormal_f1" (micro over studies and findings;
    a finding counts when both reports call it abnormal, whatever its severity),
    "per_finding": {finding: {"precision", "recall", "f1", "n_reference", "n_candidate"}},
    "per_study": [score, ...]}``; NaN where a ratio is undefined.
    """
    if len(references) != len(candidates):
        raise ValueError(f"{len(references)} references but {len(candidates)} candidates")
    results = [compare_reports(r, c) for r, c in zip(references, candidates, strict=True)]
    n = len(results)
    per_finding = {}
    for f in FINDINGS:
        tp = sum(f.key in r.reference_abnormal and f.key in r.candidate_abnormal for r in results)
        n_ref = sum(f.key in r.reference_abnormal for r in results)
        n_cand = sum(f.key in r.candidate_abnormal for r in results)
        per_finding[f.key] = {**_prf(tp, n_cand - tp, n_ref - tp), "n_reference": n_ref,
                              "n_candidate": n_cand}
    tp = sum(len(r.reference_abnormal & r.candidate_abnormal) for r in results)
    fp = sum(len(r.candidate_abnormal - r.reference_abnormal) for r in results)
    fn = sum(len(r.reference_abnormal - r.candidate_abnormal) for r in results)
    micro = _prf(tp, fp, fn)
    return {
        "green_rule": sum(r.score for r in results) / n if n else float("nan"),
        "n": n, "matched": sum(r.matched for r in results),
        "n_both_normal": sum(r.both_normal for r in results),
        "significant_errors": {ERROR_LETTERS[i]: sum(r.significant[i] for r in results)
                               for i in range(6)},
        "insignificant_errors": {ERROR_LETTERS[i]: sum(r.insignificant[i] for r in results)
                                 for i in range(6)},
        "error_types": dict(zip(ERROR_LETTERS, ERROR_CATEGORIES, strict=True)),
        "abnormal_precision": micro["precision"], "abnormal_recall": micro["recall"],
        "abnormal_f1": micro["f1"], "per_finding": per_finding,
        "per_study": [round(r.score, 6) for r in results],
    }


def report_to_text(report: Report) -> str:
    """Report sections as "Title: text" lines (the form the LLM judge reads)."""
    if isinstance(report, str):
        return report
    return "\n".join(f"{REPORT_SECTION_TITLES.get(s, s)}: {report[s]}"
                     for s in REPORT_SECTIONS if report.get(s))
