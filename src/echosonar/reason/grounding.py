"""Citation fidelity: do the boxes and numbers a reasoning trace cites equal its prompt's?

The prompt (:mod:`echosonar.reason.prompt`) prints, per view, the detector's boxes on the
0..99 grid and its measurements as ``key value`` (3 significant digits). A grounded trace cites
them verbatim; this module counts how often it does. It reads each ``view V: structures ...
evidence: ...`` line leniently (a malformed generation still has citations worth scoring):

* a box citation ``LV (52,11,77,58)`` in the structures list is right when the prompt shows
  that structure in that view with exactly that text;
* a number citation ``lvedd_cm 4.78`` anywhere in the evidence is right when the prompt shows
  that quantity in that view with exactly that text.

A citation of a view, structure or quantity the prompt does not show is wrong (invented).
One home for the measure: the SFT copy probe, ``evaluate`` and the GRPO grounding reward use it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from echosonar.detect.measure import numeric_measurements
from echosonar.reason.prompt import fmt_measurement
from echosonar.schema import StudyFeatures
from echosonar.taxonomy import STRUCTURES, VIEWS
from echosonar.textformat import box_to_text

_LINE_RE = re.compile(r"^view (\S+): structures (.*?)\. evidence: (.*?)(?:\. findings:|$)")
_BOX_RE = re.compile(r"(\S+) (\(\d{1,2},\d{1,2},\d{1,2},\d{1,2}\))")
_NUM_RE = re.compile(r"\b([a-z][a-z_]*_(?:cm|pct|ratio)) (-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)")


def prompt_citations(sf: StudyFeatures) -> dict[str, dict[str, dict[str, str]]]:
    """``{view: {"boxes": {structure: "(a,b,c,d)"}, "numbers": {quantity: "4.78"}}}`` as the
    prompt shows them (for a view with several clips, the last clip, as the targets cite it)."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for v in sf.views:
        if v.view not in VIEWS:
            continue
        out[v.view] = {
            "boxes": {s: box_to_text(v.boxes[s]) for s in STRUCTURES if s in (v.boxes or {})},
            "numbers": {k: fmt_measurement(x) for k, x in numeric_measurements(v.measurements)}}
    return out


def light_study(entry: dict[str, Any]) -> StudyFeatures:
    """A study as the citation measure needs it (views with boxes and measurements) from a
    feature-index entry, without loading its tensors."""
    import numpy as np

    from echosonar.schema import ViewFeatures

    z = np.zeros((0, 0), np.float32)
    views = [ViewFeatures(d["view"], z, z, np.zeros(0, np.float32), boxes=d.get("boxes") or {},
                          measurements=d.get("measurements") or {},
                          view_conf=float(d.get("view_conf", 1.0)))
             for d in entry.get("views", [])]
    return StudyFeatures(entry["key"], views, labels=entry.get("labels"))


def cited(text: str) -> list[tuple[str, str, str, str]]:
    """``[(view, "box" | "number", name, value_text)]`` for every citation in ``text``'s
    reasoning lines (lines that do not start ``view V: structures`` cite nothing).

    >>> cited("view A4C: structures LV (1,2,30,40), RV (5,6,7,8). evidence: lvedd_cm 4.78, "
    ...       "rv_basal_cm 3.5. findings: none. implication: x.")
    ... # doctest: +NORMALIZE_WHITESPACE
    [('A4C', 'box', 'LV', '(1,2,30,40)'), ('A4C', 'box', 'RV', '(5,6,7,8)'),
     ('A4C', 'number', 'lvedd_cm', '4.78'), ('A4C', 'number', 'rv_basal_cm', '3.5')]
    """
    out: list[tuple[str, str, str, str]] = []
    for line in text.splitlines():
        m = _LINE_RE.match(line.strip())
        if not m:
            continue
        view, cites, evidence = m.groups()
        out += [(view, "box", s, b) for s, b in _BOX_RE.findall(cites)]
        out += [(view, "number", k, x) for k, x in _NUM_RE.findall(evidence)]
    return out


def fidelity(text: str, shown: dict[str, dict[str, dict[str, str]]]) -> dict[str, int]:
    """Counts for one generation against what its prompt ``shown`` (:func:`prompt_citations`):
    ``boxes``/``boxes_exact``, ``numbers``/``numbers_exact``.

    >>> import numpy as np
    >>> from echosonar.schema import ViewFeatures
    >>> v = ViewFeatures("A4C", np.zeros((1, 2)), np.zeros((12, 2)), np.zeros(12),
    ...                  boxes={"LV": [0.52, 0.11, 0.77, 0.58]}, measurements={"lvedd_cm": 4.781})
    >>> sf = StudyFeatures("s", [v])
    >>> fidelity("view A4C: structures LV (52,11,77,58). evidence: lvedd_cm 4.78, "
    ...          "rv_basal_cm 3.9. findings: none. implication: x.", prompt_citations(sf))
    {'boxes': 1, 'boxes_exact': 1, 'numbers': 2, 'numbers_exact': 1}
    """
    c = {"boxes": 0, "boxes_exact": 0, "numbers": 0, "numbers_exact": 0}
    for view, kind, name, value in cited(text):
        key = "boxes" if kind == "box" else "numbers"
        c[key] += 1
        c[key + "_exact"] += int(shown.get(view, {}).get(key, {}).get(name) == value)
    return c


def fidelity_summary(texts: Sequence[str], studies: Sequence[StudyFeatures]) -> dict[str, Any]:
    """Pooled citation fidelity over generations (``texts[i]`` for ``studies[i]``):
    ``citation_exact_rate`` (boxes and numbers together), ``box_exact_rate``,
    ``number_exact_rate`` (None where nothing of that kind was cited) and the counts."""
    tot = {"boxes": 0, "boxes_exact": 0, "numbers": 0, "numbers_exact": 0}
    for t, sf in zip(texts, studies, strict=True):
        for k, n in fidelity(t, prompt_citations(sf)).items():
            tot[k] += n
    n_all = tot["boxes"] + tot["numbers"]

    def rate(a: int, b: int) -> float | None:
        return a / b if b else None

    return {**tot, "citations": n_all,
            "citation_exact_rate": rate(tot["boxes_exact"] + tot["numbers_exact"], n_all),
            "box_exact_rate": rate(tot["boxes_exact"], tot["boxes"]),
            "number_exact_rate": rate(tot["numbers_exact"], tot["numbers"])}
