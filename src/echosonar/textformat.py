"""The text contract of EchoSonar-R: how a generation looks, and the strict parser.

A well-formed generation (after the prompt) is exactly::

    <think>
    view A4C: structures LV (31,10,63,57), LA (36,58,62,86). evidence: <free text>. findings: LV enlargement, LV systolic dysfunction. implication: <free text>.
    view PSAX_AV: structures AV (40,38,60,58). evidence: <free text>. findings: none. implication: <free text>.
    view PLAX_COLOR: not acquired; not assessable: aortic regurgitation.
    </think>
    <answer>
    findings: LV enlargement; LV systolic dysfunction
    report:
    Left ventricle: <text>
    Right ventricle: <text>
    ... one line per taxonomy.REPORT_SECTIONS title, in order ...
    Conclusion: <text>
    </answer>

Box citations are ``STRUCT (x0,y0,x1,y1)`` with integers 0..99 relative to the ultrasound region
(the sector's bounding box), at end-diastole. The answer's finding names are the exact
``taxonomy`` names; ``healthy`` stands alone.

The parser is strict on purpose: lenient parsing is how GRPO gets reward-hacked
(``reason.rewards.format_reward`` gates every correctness reward on it), so anything malformed
is reported as malformed, each time with a specific reason in ``ParsedOutput.errors``:

* the reasoning has exactly one line per ``taxonomy.VIEWS`` view, in that order (a missing,
  repeated, unknown or out-of-order line is an error): an acquired view's line has structures,
  non-empty evidence, findings and a non-empty implication; any other view says "not acquired";
* a view cites each structure at most once, with a box ``x0 < x1`` and ``y0 < y1`` on the 0..99
  grid (an empty or inverted box locates nothing);
* every findings list (per view, and the answer) holds known finding names, each once, and
  ``healthy`` only alone; the answer's list is never empty or ``none``;
* the report has every ``taxonomy.REPORT_SECTIONS`` section, in order, none empty.

The renderers below only write what the parser accepts (:func:`box_to_text` turns any box into
a non-empty one), so SFT targets and guided decoding are well-formed by construction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from echosonar.taxonomy import (
    FINDING_BY_NAME,
    HEALTHY,
    REPORT_SECTION_TITLES,
    REPORT_SECTIONS,
    STRUCTURES,
    VIEWS,
)

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
BOX_GRID = 100  # citations use integer coordinates 0..BOX_GRID-1
NONE = "none"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

def _grid_span(a: float, b: float) -> tuple[int, int]:
    """Two box edges in 0..1 -> grid integers ``lo < hi`` in 0..BOX_GRID-1 (at least one cell)."""
    lo, hi = sorted(min(BOX_GRID - 1, max(0, int(round(v * BOX_GRID)))) for v in (a, b))
    if lo == hi:  # a box thinner than one grid cell, or pushed onto the border by clamping
        lo, hi = (lo, lo + 1) if lo < BOX_GRID - 1 else (lo - 1, lo)
    return lo, hi


def box_to_text(box: list[float] | tuple[float, ...]) -> str:
    """Normalised box ``[x0, y0, x1, y1]`` in 0..1 -> ``"(x0,y0,x1,y1)"`` on the 0..99 grid.

    Always a box the strict parser accepts (``x0 < x1``, ``y0 < y1``): a box thinner than a grid
    cell (or clamped onto the border) is widened to one cell, so a tiny ground-truth or detector
    box cannot make a target or a guided generation malformed.

    >>> box_to_text([0.1, 0.2, 0.555, 1.0])
    '(10,20,56,99)'
    >>> box_to_text([0.5, 1.0, 0.502, 1.2]), box_to_text([0.3, 0.3, 0.2, 0.4])
    ('(50,98,51,99)', '(20,30,30,40)')
    """
    (x0, x1), (y0, y1) = _grid_span(box[0], box[2]), _grid_span(box[1], box[3])
    return f"({x0},{y0},{x1},{y1})"


def text_to_box(text: str) -> list[float]:
    """Inverse of :func:`box_to_text` (grid centre of each integer).

    >>> text_to_box("(10,20,56,99)")
    [0.1, 0.2, 0.56, 0.99]
    """
    m = re.fullmatch(r"\((\d{1,2}),(\d{1,2}),(\d{1,2}),(\d{1,2})\)", text.strip())
    if not m:
        raise ValueError(f"not a box citation: {text!r}")
    return [int(g) / BOX_GRID for g in m.groups()]


def citations_text(structures: dict[str, list[float]]) -> str:
    """A reasoning line's structure list, in the dict's order (``none`` when empty).

    >>> citations_text({"LV": [0.1, 0.1, 0.5, 0.6]}), citations_text({})
    ('LV (10,10,50,60)', 'none')
    """
    return ", ".join(f"{s} {box_to_text(b)}" for s, b in structures.items()) or NONE


def render_view_line(view: str, structures: dict[str, list[float]] | None, evidence: str = "",
                     findings: list[str] | None = None, implication: str = "",
                     not_assessable: list[str] | None = None) -> str:
    """One reasoning line. ``structures=None`` means the view was not acquired.

    >>> render_view_line("A2C", None, not_assessable=["LV enlargement"])
    'view A2C: not acquired; not assessable: LV enlargement.'
    >>> render_view_line("A2C", {"LV": [0.1, 0.1, 0.5, 0.6]}, "normal size", [], "no concern")
    'view A2C: structures LV (10,10,50,60). evidence: normal size. findings: none. implication: no concern.'
    """
    if structures is None:
        na = ", ".join(not_assessable or []) or NONE
        return f"view {view}: not acquired; not assessable: {na}."
    cited = citations_text(structures)
    found = ", ".join(findings or []) or NONE
    return (f"view {view}: structures {cited}. evidence: {_clean(evidence)}. findings: {found}. "
            f"implication: {_clean(implication)}.")


def render_answer(findings: list[str], report: dict[str, str]) -> str:
    """The answer block. ``findings`` are taxonomy names (empty -> ``healthy``);
    ``report`` maps every ``REPORT_SECTIONS`` key to its text."""
    names = list(findings) or [HEALTHY.name]
    lines = [ANSWER_OPEN, "findings: " + "; ".join(names), "report:"]
    for sec in REPORT_SECTIONS:
        lines.append(f"{REPORT_SECTION_TITLES[sec]}: {_clean(report.get(sec, ''))}")
    lines.append(ANSWER_CLOSE)
    return "\n".join(lines)


def render_generation(view_lines: list[str], findings: list[str], report: dict[str, str]) -> str:
    """The full target: think block then answer block (no EOS; the tokenizer adds it)."""
    return "\n".join([THINK_OPEN, *view_lines, THINK_CLOSE, render_answer(findings, report)])


def _clean(text: str) -> str:
    # Free text must not contain tags or line breaks, or the parser could be fooled.
    for tag in _TAGS:
        text = text.replace(tag, "")
    return " ".join(text.split()).rstrip(".")


# ---------------------------------------------------------------------------------------------
# Strict parsing
# ---------------------------------------------------------------------------------------------

@dataclass
class ViewReasoning:
    """What one reasoning line says about one view."""

    view: str
    acquired: bool
    structures: dict[str, list[float]] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    not_assessable: list[str] = field(default_factory=list)
    evidence: str = ""


@dataclass
class ParsedOutput:
    """Result of :func:`parse_generation`.

    ``findings`` holds taxonomy *keys* (``healthy`` included when answered). ``sections`` maps
    ``REPORT_SECTIONS`` keys to text. ``well_formed`` is False whenever ``errors`` is non-empty.
    """

    well_formed: bool
    errors: list[str]
    findings: set[str] = field(default_factory=set)
    sections: dict[str, str] = field(default_factory=dict)
    views: dict[str, ViewReasoning] = field(default_factory=dict)
    reasoning: str = ""

    @property
    def reasoning_findings(self) -> set[str]:
        """Finding keys concluded anywhere in the reasoning."""
        return {FINDING_BY_NAME[n].key for v in self.views.values() for n in v.findings}

    @property
    def cited_boxes(self) -> list[tuple[str, str, list[float]]]:
        """``[(view, structure, box01)]`` for every box cited in the reasoning."""
        return [(v.view, s, b) for v in self.views.values() for s, b in v.structures.items()]


_VIEW_RE = re.compile(r"^view (\S+): (.*)$")
_ACQ_RE = re.compile(r"^structures (.*?)\. evidence: (.*?)\. findings: (.*?)\. implication: (.*)\.$")
_NA_RE = re.compile(r"^not acquired; not assessable: (.*)\.$")
_CITE_RE = re.compile(r"^(\S+) (\(\d{1,2},\d{1,2},\d{1,2},\d{1,2}\))$")


def citation_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``[a, b)`` of what the reasoning lines of ``text`` cite from the prompt:
    each acquired view line's structure boxes and its evidence (the parts a copy head may copy;
    lines that do not follow the format give none).

    >>> t = "<think>\\nview A2C: structures LV (10,10,50,60). evidence: lvedd_cm 4.5. findings: none. implication: fine.\\n"
    >>> [t[a:b] for a, b in citation_spans(t)]
    ['LV (10,10,50,60)', 'lvedd_cm 4.5']
    """
    out, pos = [], 0
    for line in text.split("\n"):
        vm = _VIEW_RE.match(line)
        acq = _ACQ_RE.match(vm.group(2)) if vm else None
        if acq:
            base = pos + vm.start(2)
            out += [(base + acq.start(g), base + acq.end(g)) for g in (1, 2)]
        pos += len(line) + 1
    return out


def _names(text: str, sep: str, errors: list[str], where: str) -> list[str]:
    """Finding names of one list (``none`` = empty): each known, once, ``healthy`` alone."""
    text = text.strip()
    if text == NONE:
        return []
    out = []
    for n in (n.strip() for n in text.split(sep)):
        if n not in FINDING_BY_NAME:
            errors.append(f"{where}: unknown finding name {n!r}")
        elif n in out:
            errors.append(f"{where}: duplicated finding {n!r}")
        else:
            out.append(n)
    if HEALTHY.name in out and len(out) > 1:
        errors.append(f"{where}: 'healthy' together with other findings")
    return out


def _box_error(box: Sequence[float]) -> str | None:
    """Why a box ``[x0, y0, x1, y1]`` locates nothing (None when it is a box); the citation
    pattern already limits each coordinate to the 0..99 grid.

    >>> _box_error((10, 10, 50, 60)) is None, _box_error((90, 90, 10, 10))
    (True, 'empty or inverted (needs x0 < x1 and y0 < y1)')
    """
    x0, y0, x1, y1 = box
    return None if x0 < x1 and y0 < y1 else "empty or inverted (needs x0 < x1 and y0 < y1)"


def parse_generation(text: str) -> ParsedOutput:
    """Parse a generation strictly. Never raises; problems go to ``errors``.

    >>> lines = [render_view_line(v, None) for v in VIEWS]
    >>> report = {s: "Normal." for s in REPORT_SECTIONS}
    >>> g = render_generation(lines, [], report)
    >>> p = parse_generation(g)
    >>> p.well_formed, sorted(p.findings)
    (True, ['healthy'])
    >>> parse_generation(g + "</think>").errors
    ['expected exactly one </think>, found 2']
    >>> parse_generation(render_generation(lines[1:], [], report)).errors
    ["no reasoning line for view A4C (every view needs one: acquired, or 'not acquired')"]
    """
    errors: list[str] = []
    out = ParsedOutput(False, errors)
    for tag in _TAGS:
        n = text.count(tag)
        if n != 1:
            errors.append(f"expected exactly one {tag}, found {n}")
    if errors:
        return out
    t0, t1 = text.index(THINK_OPEN), text.index(THINK_CLOSE)
    a0, a1 = text.index(ANSWER_OPEN), text.index(ANSWER_CLOSE)
    if not (t0 < t1 < a0 < a1):
        errors.append("tags out of order: need <think> ... </think> <answer> ... </answer>")
        return out
    outside = text[:t0] + text[t1 + len(THINK_CLOSE):a0] + text[a1 + len(ANSWER_CLOSE):]
    if outside.strip():
        errors.append("text outside the think and answer blocks")
    out.reasoning = text[t0 + len(THINK_OPEN):t1].strip()
    _parse_reasoning(out.reasoning, out, errors)
    _parse_answer(text[a0 + len(ANSWER_OPEN):a1], out, errors)
    out.well_formed = not errors
    return out


def _parse_reasoning(body: str, out: ParsedOutput, errors: list[str]) -> None:
    lines = [ln.strip() for ln in body.splitlines() if ln.strip()]
    if not lines:
        errors.append("empty reasoning")
        return
    order: list[str] = []
    for ln in lines:
        m = _VIEW_RE.match(ln)
        if not m or m.group(1) not in VIEWS:
            errors.append(f"reasoning line is not 'view <VIEW>: ...': {ln[:60]!r}")
            continue
        view, rest = m.groups()
        if view in order:
            errors.append(f"view {view} reasoned about twice")
            continue
        order.append(view)
        vr = _parse_view_line(view, rest, errors)
        if vr is not None:
            out.views[view] = vr
    missing = [v for v in VIEWS if v not in order]
    if missing:
        errors.append("no reasoning line for view " + ", ".join(missing)
                      + " (every view needs one: acquired, or 'not acquired')")
    if order != [v for v in VIEWS if v in order]:
        errors.append(f"view lines out of order: {', '.join(order)} "
                      f"(the order is {', '.join(VIEWS)})")


def _parse_view_line(view: str, rest: str, errors: list[str]) -> ViewReasoning | None:
    """One view line after ``view V: `` (None when it follows neither form)."""
    where = f"view {view}"
    if na := _NA_RE.match(rest):
        vr = ViewReasoning(view, False)
        vr.not_assessable = _names(na.group(1), ",", errors, where)
        return vr
    acq = _ACQ_RE.match(rest)
    if not acq:
        errors.append(f"{where}: line does not follow the reasoning format")
        return None
    cites, evidence, findings, implication = acq.groups()
    vr = ViewReasoning(view, True, evidence=evidence.strip())
    for cite in ([] if cites == NONE else cites.split(", ")):
        cm = _CITE_RE.match(cite.strip())
        if not cm or cm.group(1) not in STRUCTURES:
            errors.append(f"{where}: bad structure citation {cite!r}")
            continue
        struct = cm.group(1)
        if struct in vr.structures:
            errors.append(f"{where}: structure {struct} cited twice")
            continue
        box = text_to_box(cm.group(2))
        if why := _box_error(box):
            errors.append(f"{where}: box of {struct} {cm.group(2)} is {why}")
            continue
        vr.structures[struct] = box
    if not vr.evidence:
        errors.append(f"{where}: empty evidence")
    if not implication.strip():
        errors.append(f"{where}: empty implication")
    vr.findings = _names(findings, ",", errors, where)
    return vr


def _parse_answer(body: str, out: ParsedOutput, errors: list[str]) -> None:
    lines = [ln.strip() for ln in body.strip().splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("findings:"):
        errors.append("answer must start with 'findings:'")
        return
    raw = lines[0][len("findings:"):].strip()
    if not raw:
        errors.append("empty finding list")
    else:
        names = _names(raw, ";", errors, "answer")
        if raw == NONE:
            errors.append("answer findings must be names or 'healthy', not 'none'")
        out.findings = {FINDING_BY_NAME[n].key for n in names}
    if len(lines) < 2 or lines[1] != "report:":
        errors.append("missing 'report:' line after findings")
        return
    body_lines = lines[2:]
    titles = [REPORT_SECTION_TITLES[s] for s in REPORT_SECTIONS]
    if len(body_lines) != len(titles):
        errors.append(f"report needs {len(titles)} section lines, found {len(body_lines)}")
    for sec, title, ln in zip(REPORT_SECTIONS, titles, body_lines, strict=False):
        if not ln.startswith(title + ":"):
            errors.append(f"report section {title!r} missing or out of order")
            continue
        content = ln[len(title) + 1:].strip()
        if not content:
            errors.append(f"report section {title!r} is empty")
        out.sections[sec] = content


def target_text(reasoning: str, labels: dict[str, int], report: dict[str, str],
                answer_order: str = "taxonomy") -> str:
    r"""The SFT target for a study: its reasoning lines (``StudyRecord.reasoning``, one view per
    line, no tags), the positive findings from ``labels`` and the report sections.

    ``answer_order``: ``taxonomy`` lists the answer's findings in taxonomy order; ``reasoning``
    in the order the reasoning lines first name them, then the rest in taxonomy order (the
    order ``lm.copy_answer_slots=first`` reads them back).

    >>> r = ("view A4C: structures none. evidence: e. findings: RA enlargement. implication: i."
    ...      "\nview A2C: structures none. evidence: e. findings: LV enlargement, RA enlargement."
    ...      " implication: i.")
    >>> lab = {"lv_enlargement": 1, "ra_enlargement": 1, "aortic_stenosis": 1}
    >>> [ln for ln in target_text(r, lab, {}, "reasoning").splitlines() if ln.startswith("fi")]
    ['findings: RA enlargement; LV enlargement; aortic stenosis']
    """
    from echosonar.taxonomy import FINDINGS

    lines = [ln for ln in reasoning.splitlines() if ln.strip()]
    names = [f.name for f in FINDINGS if labels.get(f.key)]
    if answer_order == "reasoning":
        said = []
        for ln in lines:
            m = _VIEW_RE.match(ln.strip())
            a = _ACQ_RE.match(m.group(2)) if m else None
            if a and a.group(3) != NONE:
                said += [n for n in a.group(3).split(", ") if n in names and n not in said]
        names = said + [n for n in names if n not in said]
    elif answer_order != "taxonomy":
        raise ValueError(f"answer_order must be 'taxonomy' or 'reasoning', got {answer_order!r}")
    return render_generation(lines, names, report)
