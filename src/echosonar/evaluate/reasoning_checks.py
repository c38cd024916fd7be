"""Deterministic checks that a generation's reasoning supports its answer.

Three checks per study, on :class:`echosonar.textformat.ParsedOutput`:

* ``agreement``: the set of findings concluded anywhere in the reasoning equals the answer's
  finding set (``healthy`` in the answer counts as the empty set);
* ``grounded``: every positive answer finding is concluded in the line of an *acquired* view
  that can show it (``Finding.views``), and that line cites at least one of the finding's
  grounding structures (``Finding.structures``) with a box;
* ``no_unassessable_claims``: no view line concludes a finding its view cannot show.

A malformed generation fails every check (its partial parse is not trusted), so the rates over
all studies are what a user gets; ``*_well_formed`` rates restrict to well-formed generations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from echosonar.taxonomy import FINDING_BY_KEY, FINDING_BY_NAME, HEALTHY
from echosonar.textformat import ParsedOutput

CHECKS = ("agreement", "grounded", "no_unassessable_claims")


@dataclass
class ReasoningCheck:
    """Result for one study; ``problems`` says in words what failed."""

    well_formed: bool
    agreement: bool
    grounded: bool
    no_unassessable_claims: bool
    problems: list[str] = field(default_factory=list)

    @property
    def all_pass(self) -> bool:
        return self.agreement and self.grounded and self.no_unassessable_claims


def check_reasoning(parsed: ParsedOutput) -> ReasoningCheck:
    """Run the three checks on one parsed generation.

    >>> from echosonar.textformat import parse_generation, render_generation, render_view_line
    >>> from echosonar.taxonomy import REPORT_SECTIONS, VIEWS
    >>> a4c = ("view A4C: structures RV (1,2,30,40). evidence: wide. findings: RV enlargement. "
    ...        "implication: pressure load.")
    >>> lines = [a4c] + [render_view_line(v, None) for v in VIEWS[1:]]
    >>> g = render_generation(lines, ["RV enlargement"], {s: "text" for s in REPORT_SECTIONS})
    >>> check_reasoning(parse_generation(g)).all_pass
    True
    """
    if not parsed.well_formed:
        return ReasoningCheck(False, False, False, False, ["malformed generation"])
    problems: list[str] = []
    answer = set(parsed.findings) - {HEALTHY.key}
    reasoned = parsed.reasoning_findings - {HEALTHY.key}

    agreement = reasoned == answer
    if not agreement:
        if answer - reasoned:
            problems.append("answered but not concluded in reasoning: "
                            + ", ".join(sorted(answer - reasoned)))
        if reasoned - answer:
            problems.append("concluded in reasoning but not answered: "
                            + ", ".join(sorted(reasoned - answer)))

    grounded = True
    for key in sorted(answer):
        f = FINDING_BY_KEY[key]
        ok = any(v.acquired and v.view in f.views and f.name in v.findings
                 and any(s in v.structures for s in f.structures)
                 for v in parsed.views.values())
        if not ok:
            grounded = False
            problems.append(f"{key}: no acquired view that can show it concludes it while "
                            f"citing one of {', '.join(f.structures)}")

    no_unassessable = True
    for v in parsed.views.values():
        for name in v.findings:
            f = FINDING_BY_NAME[name]
            if f is not HEALTHY and v.view not in f.views:
                no_unassessable = False
                problems.append(f"{f.key} claimed from {v.view}, which cannot show it")
    return ReasoningCheck(True, agreement, grounded, no_unassessable, problems)


def reasoning_check_rates(parsed: Sequence[ParsedOutput],
                          keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-study results and rates.

    Returns ``{"n", "well_formed_rate", "<check>_rate" for each of CHECKS, "all_pass_rate",
    "<check>_rate_well_formed", "all_pass_rate_well_formed", "per_study": {key: {...}}}``
    (``keys`` default to the study's index as a string). Rates over an empty set are NaN.
    """
    keys = list(keys) if keys is not None else [str(i) for i in range(len(parsed))]
    if len(keys) != len(parsed):
        raise ValueError(f"{len(keys)} keys for {len(parsed)} generations")
    results = [check_reasoning(p) for p in parsed]
    n = len(results)
    wf = [r for r in results if r.well_formed]

    def rate(rs: list[ReasoningCheck], name: str) -> float:
        if not rs:
            return float("nan")
        return sum(bool(getattr(r, name)) for r in rs) / len(rs)

    out: dict[str, Any] = {"n": n, "well_formed_rate": rate(results, "well_formed")}
    for name in (*CHECKS, "all_pass"):
        out[f"{name}_rate"] = rate(results, name)
        out[f"{name}_rate_well_formed"] = rate(wf, name)
    out["per_study"] = {k: {**asdict(r), "all_pass": r.all_pass} for k, r in zip(keys, results, strict=True)}
    return out
