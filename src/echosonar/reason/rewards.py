"""GRPO rewards: plain callables ``(completions, **study_columns) -> list[float | None]``.

Every column is a list aligned with ``completions`` (TRL's convention), so these functions plug
into TRL, verl or OpenRLHF unchanged. Columns used here (others are ignored):

- ``labels``: ``{label_key: 0/1}`` per completion (the study's truth);
- ``report``: ``{section: text}`` reference report per completion;
- ``boxes``: ``{view: {structure: [x0, y0, x1, y1] in 0..1}}`` — the detector's boxes
  (``ViewFeatures.boxes``) of the study;
- ``completion_lengths``, ``truncated``, ``max_completion_length``: from the rollout;
- ``label_prevalence``: ``{label_key: fraction positive}`` of the training split (optional).

``None`` means "not applicable" (e.g. no truth for an unlabelled study); it is ignored in means
and counts as 0 in the combined reward (TRL's ``nansum``). Parsing is always the strict
:func:`echosonar.textformat.parse_generation`: lenient parsing is how rewards get hacked.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from echosonar.reason.rewards_report import EMBEDDER, _column, report_reward
from echosonar.taxonomy import HEALTHY, LABEL_KEYS
from echosonar.textformat import ParsedOutput, parse_generation

__all__ = ["EMBEDDER", "REWARDS", "agreement_reward", "box_grounding_reward",
           "classification_balanced_reward", "classification_iou_reward", "combine_rewards",
           "compute_rewards", "format_reward", "format_soft_reward", "grounding_reward", "label_prevalence",
           "length_penalty", "report_reward"]

RewardFn = Callable[..., list[float | None]]

# Error messages of textformat's answer-line checks: any of them voids the finding set.
_ANSWER_ERRORS = ("answer", "empty finding list", "'healthy' together")
_TAG_ERRORS = "expected exactly one"


@lru_cache(maxsize=8192)
def parse(text: str) -> ParsedOutput:
    """Cached :func:`parse_generation` (every reward parses the same completions)."""
    return parse_generation(text)


def answer_findings(text: str) -> set[str] | None:
    """The answer's finding keys, or None when the answer's finding line is invalid (missing,
    empty, unknown or duplicated names, ``healthy`` mixed with findings, broken tags)."""
    p = parse(text)
    if any(e.startswith(_ANSWER_ERRORS) or e.startswith(_TAG_ERRORS) or "tags out of order" in e
           for e in p.errors):
        return None
    return set(p.findings) or None


# ---------------------------------------------------------------------------------------------
# Format
# ---------------------------------------------------------------------------------------------

def format_reward(completions: Sequence[str], **kwargs: Any) -> list[float | None]:
    """1.0 for a completion the strict parser accepts (one think block with one line per view in
    order, valid non-repeated citations and non-empty evidence; one answer block with known
    finding names; every report section), else 0.0.

    >>> from echosonar.taxonomy import REPORT_SECTIONS, VIEWS
    >>> from echosonar.textformat import render_generation, render_view_line
    >>> good = render_generation([render_view_line(v, None) for v in VIEWS], [],
    ...                          {s: "Normal." for s in REPORT_SECTIONS})
    >>> format_reward([good, good + "</think>", good.replace("healthy", "normal heart"), ""])
    [1.0, 0.0, 0.0, 0.0]
    """
    return [1.0 if parse(c).well_formed else 0.0 for c in completions]


def format_soft_reward(completions: Sequence[str], **kwargs: Any) -> list[float | None]:
    """Partial credit for the tag skeleton, to shape a weak SFT start towards the format: 0.2
    for each of the four tags present exactly once, plus 0.2 when they are also in order with
    nothing outside the blocks and the answer lists valid findings (an empty answer never
    reaches full marks). Never grants correctness credit (those rewards stay gated by the
    strict :func:`format_reward`), so it is a bonus with a small weight, off by default.

    >>> from echosonar.taxonomy import REPORT_SECTIONS, VIEWS
    >>> from echosonar.textformat import render_generation, render_view_line
    >>> good = render_generation([render_view_line(v, None) for v in VIEWS], [],
    ...                          {s: "Normal." for s in REPORT_SECTIONS})
    >>> [round(r, 2) for r in format_soft_reward([good, "<think>\\nview A4C", "</answer>" * 2])]
    [1.0, 0.2, 0.0]
    """
    out: list[float | None] = []
    for c in completions:
        once = sum(c.count(t) == 1 for t in ("<think>", "</think>", "<answer>", "</answer>"))
        errs = parse(c).errors
        layout = once == 4 and not any(e.startswith(_TAG_ERRORS) or "tags out of order" in e
                                       or "outside the think" in e for e in errs) \
            and answer_findings(c) is not None
        out.append(0.2 * once + (0.2 if layout else 0.0))
    return out


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------

def _truth(labels: Mapping[str, int]) -> set[str]:
    pos = {k for k in LABEL_KEYS if labels.get(k)}
    return pos or {HEALTHY.key}


def classification_iou_reward(completions: Sequence[str], labels: Sequence[Any] | None = None,
                              **kwargs: Any) -> list[float | None]:
    """Set IoU of the answer's findings with the true findings (the paper's reward); ``healthy``
    counts as a finding when nothing is positive. An invalid or empty answer scores 0.

    >>> from echosonar.textformat import render_answer
    >>> ans = lambda names: "<think>\\n</think>\\n" + render_answer(names, {})
    >>> truth = {"la_enlargement": 1, "mitral_regurgitation": 1}
    >>> classification_iou_reward([ans(["LA enlargement"]), ans(["LA enlargement",
    ...     "mitral regurgitation"]), ans([]), "<think>\\n</think>\\n<answer>\\n</answer>"],
    ...     labels=[truth] * 4)
    [0.5, 1.0, 0.0, 0.0]
    """
    out: list[float | None] = []
    for c, lab in zip(completions, _column({"labels": labels}, "labels", len(completions)),
                      strict=True):
        if lab is None:
            out.append(None)
            continue
        pred, truth = answer_findings(c), _truth(lab)
        out.append(0.0 if pred is None else len(pred & truth) / len(pred | truth))
    return out


def classification_balanced_reward(completions: Sequence[str],
                                   labels: Sequence[Any] | None = None,
                                   label_prevalence: Any = None,
                                   **kwargs: Any) -> list[float | None]:
    """Class-weighted per-label accuracy over every ``taxonomy.LABEL_KEYS`` label, so a rare
    label cannot be ignored.

    Label ``l`` of a study with truth ``y`` weighs ``1 / (2 p_l)`` if ``y_l = 1`` and
    ``1 / (2 (1 - p_l))`` if ``y_l = 0``; the reward is the weighted fraction of labels predicted
    right. With ``p_l`` the training prevalence (column ``label_prevalence``) the unnormalised sum
    has expectation equal to macro balanced accuracy, and dividing by the study's total weight
    only rescales a GRPO group by a constant (which the group std removes). Without prevalences
    ``p_l`` is the study's own positive fraction: the mean of its TPR and TNR. Invalid answers
    score 0.

    >>> from echosonar.textformat import render_answer
    >>> ans = lambda names: "<think>\\n</think>\\n" + render_answer(names, {})
    >>> truth = {"rv_enlargement": 1}
    >>> [round(r, 3) for r in classification_balanced_reward(
    ...     [ans(["RV enlargement"]), ans([]), ans(["RV enlargement", "LA enlargement"])],
    ...     labels=[truth] * 3)]
    [1.0, 0.462, 0.962]
    """
    n = len(completions)
    prev_col = _column({"p": label_prevalence}, "p", n)
    out: list[float | None] = []
    for c, lab, prev in zip(completions, _column({"labels": labels}, "labels", n), prev_col,
                            strict=True):
        if lab is None:
            out.append(None)
            continue
        pred = answer_findings(c)
        if pred is None:
            out.append(0.0)
            continue
        y = {k: int(k in _truth(lab)) for k in LABEL_KEYS}
        if prev is None:
            n_pos = sum(y.values())
            prev = {k: n_pos / len(LABEL_KEYS) for k in LABEL_KEYS}
        num = den = 0.0
        for k in LABEL_KEYS:
            p = float(prev.get(k, 0.0))
            if not 0.0 < p < 1.0:
                continue  # a label never (or always) positive in training has no BAcc
            w = 1.0 / (2 * p) if y[k] else 1.0 / (2 * (1 - p))
            den += w
            num += w * float((k in pred) == bool(y[k]))
        out.append(num / den if den else None)
    return out


def label_prevalence(labels: Sequence[Mapping[str, int]]) -> dict[str, float]:
    """Fraction of studies positive for each label (``healthy`` = no finding positive).

    >>> label_prevalence([{"rv_enlargement": 1}, {}])["healthy"]
    0.5
    """
    n = max(len(labels), 1)
    return {k: sum(k in _truth(lab) for lab in labels) / n for k in LABEL_KEYS}


# ---------------------------------------------------------------------------------------------
# Grounding
# ---------------------------------------------------------------------------------------------

def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``[x0, y0, x1, y1]`` boxes.

    >>> box_iou([0, 0, 2, 2], [1, 1, 3, 3])
    0.14285714285714285
    """
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_grounding_reward(completions: Sequence[str], boxes: Sequence[Any] | None = None,
                         **kwargs: Any) -> list[float | None]:
    """Agreement of the boxes cited in the reasoning with the detector's boxes:
    ``sum IoU(cited, detected) / |cited U detected|`` over ``(view, structure)`` pairs, so
    hallucinated citations and omitted detections both cost. Unparseable reasoning scores 0;
    no detections and no citations scores 1.

    >>> c = ("<think>\\nview A4C: structures LV (10,10,50,50). evidence: x. findings: none. "
    ...      "implication: y.\\n</think>\\n<answer>\\n</answer>")
    >>> box_grounding_reward([c], boxes=[{"A4C": {"LV": [0.1, 0.1, 0.5, 0.5],
    ...                                           "LA": [0.2, 0.5, 0.5, 0.8]}}])
    [0.5]
    """
    n = len(completions)
    out: list[float | None] = []
    for c, det in zip(completions, _column({"boxes": boxes}, "boxes", n), strict=True):
        if det is None:
            out.append(None)
            continue
        p = parse(c)
        if any(e.startswith(_TAG_ERRORS) or "tags out of order" in e for e in p.errors):
            out.append(0.0)
            continue
        cited = {(v, s): b for v, s, b in p.cited_boxes}
        found = {(v, s): b for v, sb in det.items() for s, b in (sb or {}).items()}
        keys = set(cited) | set(found)
        if not keys:
            out.append(1.0)
            continue
        out.append(sum(box_iou(cited[k], found[k]) for k in set(cited) & set(found)) / len(keys))
    return out


def citation_reward(completions: Sequence[str], citations: Sequence[Any] | None = None,
                    **kwargs: Any) -> list[float | None]:
    """Fraction of the boxes and numbers a completion cites that equal its prompt's, verbatim
    (:mod:`echosonar.reason.grounding`; column ``citations`` = ``prompt_citations`` of the
    study). A completion that cites nothing scores 0, so silence is not grounding.

    >>> shown = {"A4C": {"boxes": {"LV": "(52,11,77,58)"}, "numbers": {"lvedd_cm": "4.78"}}}
    >>> line = "view A4C: structures LV (52,11,77,58). evidence: lvedd_cm {}. findings: none."
    >>> citation_reward([line.format("4.78"), line.format("5.1"), "junk"], citations=[shown] * 3)
    [1.0, 0.5, 0.0]
    """
    from echosonar.reason.grounding import fidelity

    out: list[float | None] = []
    for c, shown in zip(completions, _column({"citations": citations}, "citations",
                                             len(completions)), strict=True):
        if shown is None:
            out.append(None)
            continue
        f = fidelity(c, shown)
        n = f["boxes"] + f["numbers"]
        out.append((f["boxes_exact"] + f["numbers_exact"]) / n if n else 0.0)
    return out


def agreement_reward(completions: Sequence[str], **kwargs: Any) -> list[float | None]:
    """Jaccard agreement between the findings the reasoning concludes and the answer's findings
    (``healthy`` agrees with a reasoning that concludes nothing). Invalid answers score 0.

    >>> from echosonar.textformat import render_answer
    >>> th = lambda f: ("<think>\\nview A4C: structures none. evidence: x. findings: " + f +
    ...                 ". implication: y.\\n</think>\\n")
    >>> agreement_reward([th("LA enlargement") + render_answer(["LA enlargement"], {}),
    ...                   th("none") + render_answer([], {}),
    ...                   th("LA enlargement") + render_answer([], {})])
    [1.0, 1.0, 0.0]
    """
    out: list[float | None] = []
    for c in completions:
        ans = answer_findings(c)
        if ans is None:
            out.append(0.0)
            continue
        said = parse(c).reasoning_findings
        ans = ans - {HEALTHY.key}
        union = said | ans
        out.append(1.0 if not union else len(said & ans) / len(union))
    return out


def grounding_reward(completions: Sequence[str], **kwargs: Any) -> list[float | None]:
    """Mean of :func:`box_grounding_reward` and :func:`agreement_reward` (None parts skipped).

    >>> grounding_reward(["junk"], boxes=[{}])
    [0.0]
    """
    a = box_grounding_reward(completions, **kwargs)
    b = agreement_reward(completions, **kwargs)
    out: list[float | None] = []
    for x, y in zip(a, b, strict=True):
        vals = [v for v in (x, y) if v is not None]
        out.append(float(np.mean(vals)) if vals else None)
    return out


# ---------------------------------------------------------------------------------------------
# Length / degeneration penalty
# ---------------------------------------------------------------------------------------------

def length_penalty(completions: Sequence[str], completion_lengths: Sequence[int] | None = None,
                   truncated: Sequence[bool] | None = None, max_completion_length: Any = None,
                   report: Sequence[Any] | None = None, length_buffer: Any = 64,
                   short_fraction: Any = 0.5, **kwargs: Any) -> list[float | None]:
    """Soft penalty in ``[-1, 0]``: the most severe of

    - truncation (no EOS within the budget): -1;
    - DAPO's soft overlong ramp: ``-(L - (L_max - buffer)) / buffer`` over the last ``buffer``
      tokens;
    - degeneration: minus the fraction of non-empty lines repeating an earlier line;
    - the paper's short-answer penalty: a parsed report (all sections) shorter than
      ``short_fraction`` of the reference costs ``-(1 - len / (short_fraction * ref_len))``
      (an unparseable output is left to the format rewards, so malformed outputs still differ
      here by truncation and repetition).

    >>> length_penalty(["a\\nb", "a\\na\\na\\na"], completion_lengths=[10, 10],
    ...                truncated=[True, False], max_completion_length=100)
    [-1.0, -0.75]
    """
    n = len(completions)
    lens = _column({"x": completion_lengths}, "x", n)
    trunc = _column({"x": truncated}, "x", n)
    lmax = _column({"x": max_completion_length}, "x", n)
    refs = _column({"report": report}, "report", n)
    buf = _column({"x": length_buffer}, "x", n)
    frac = _column({"x": short_fraction}, "x", n)
    out: list[float | None] = []
    for i, c in enumerate(completions):
        pens = [0.0]
        if trunc[i]:
            pens.append(-1.0)
        if lens[i] is not None and lmax[i] and buf[i]:
            start = int(lmax[i]) - int(buf[i])
            if lens[i] > start:
                pens.append(-min(1.0, (lens[i] - start) / int(buf[i])))
        lines = [ln.strip() for ln in c.splitlines() if ln.strip()]
        if lines:
            pens.append(-(len(lines) - len(set(lines))) / len(lines))
        if refs[i]:
            ref_len = sum(len(str(t)) for t in refs[i].values())
            got = parse(c).sections
            gen_len = sum(len(t) for t in got.values())
            want = float(frac[i]) * ref_len
            if got and want > 0 and gen_len < want:
                pens.append(-(1.0 - gen_len / want))
        out.append(float(min(pens)))
    return out


# ---------------------------------------------------------------------------------------------
# Registry and combination
# ---------------------------------------------------------------------------------------------

#: Every reward by name. Roles for ``mode="paper"``: the ``gate`` (format) multiplies the sum of
#: the ``gated`` rewards (classification and report correctness, and box grounding, so broken
#: outputs cannot farm box points); ``bonus`` rewards are added ungated.
REWARDS: dict[str, RewardFn] = {
    "format": format_reward,
    "format_soft": format_soft_reward,
    "classification_iou": classification_iou_reward,
    "classification_balanced": classification_balanced_reward,
    "report": report_reward,
    "box_grounding": box_grounding_reward,
    "citation": citation_reward,
    "agreement": agreement_reward,
    "grounding": grounding_reward,
    "length": length_penalty,
}
ROLES: dict[str, str] = {
    "format": "gate", "format_soft": "bonus", "classification_iou": "gated", "classification_balanced": "gated",
    "report": "gated", "box_grounding": "gated", "citation": "gated", "grounding": "gated", "agreement": "bonus",
    "length": "bonus",
}


def combine_rewards(per_reward: Mapping[str, Sequence[float | None]],
                    weights: Mapping[str, float], mode: str = "paper") -> list[float]:
    """Total reward per completion.

    ``mode="sum"``: ``sum_i w_i r_i`` (TRL). ``mode="paper"`` (EchoSonar-R): ``format x
    (sum of weighted gated rewards: classification, report, box grounding) + sum of weighted
    bonuses`` (reasoning/answer agreement, length penalty, any custom reward); the format
    weight scales the gate. ``None`` counts as 0 (TRL's ``nansum``).

    >>> combine_rewards({"format": [1.0, 0.0], "report": [0.5, 0.9], "length": [0.0, -1.0]},
    ...                 {"format": 1, "report": 2, "length": 1})
    [1.0, -1.0]
    """
    if mode not in ("paper", "sum"):
        raise ValueError(f"reward_mode must be 'paper' or 'sum', got {mode!r}")
    active = {k: w for k, w in weights.items() if w}
    missing = set(active) - set(per_reward)
    if missing:
        raise ValueError(f"no values for weighted reward(s) {sorted(missing)}")
    n = len(next(iter(per_reward.values()))) if per_reward else 0

    def val(name: str, i: int) -> float:
        v = per_reward[name][i]
        return 0.0 if v is None or v != v else float(v)

    out = []
    for i in range(n):
        if mode == "sum":
            out.append(float(sum(w * val(k, i) for k, w in active.items())))
            continue
        role = {k: ROLES.get(k, "bonus") for k in active}
        corr = sum(w * val(k, i) for k, w in active.items() if role[k] == "gated")
        bonus = sum(w * val(k, i) for k, w in active.items() if role[k] == "bonus")
        gate = val("format", i) * active["format"] if "format" in active else 1.0
        out.append(float(gate * corr + bonus))
    return out


def compute_rewards(completions: Sequence[str], weights: Mapping[str, float],
                    mode: str = "paper", funcs: Mapping[str, RewardFn] | None = None,
                    **columns: Any) -> tuple[list[float], dict[str, list[float | None]]]:
    """Run every reward with a non-zero weight (``funcs`` adds or overrides entries of
    :data:`REWARDS`); returns ``(total [N], {name: values [N]})``."""
    table = dict(REWARDS, **(funcs or {}))
    missing = [k for k, w in weights.items() if w and k not in table]
    if missing:
        raise ValueError(f"unknown reward name(s) {missing}; known: {sorted(table)}")
    per = {k: list(table[k](list(completions), **columns)) for k, w in weights.items() if w}
    for k, v in per.items():
        if len(v) != len(completions):
            raise ValueError(f"reward {k!r} returned {len(v)} values for {len(completions)}")
    if not per:
        return [0.0] * len(completions), per
    return combine_rewards(per, weights, mode), per
