"""Reasoning targets from the prompt's own evidence: the target writer for a user's studies.

The simulator writes reasoning from its ground truth (true boxes, true measurements). A user's
study has neither, only what the detector found in it and the labels from the spreadsheet, so
its reasoning target is written from exactly what the model's prompt shows
(:mod:`echosonar.reason.prompt`), which makes every number and box in the target something the
model can read off its input rather than invent:

* an acquired view cites the detector's boxes **verbatim** (``reason.guided.citations``: the
  same text guided decoding forces; with several clips of one view, the last one, as guided
  decoding takes it), gives as evidence the detector's measurements **as the prompt prints
  them** (``reason.prompt.measurement_text``, with the reference-range flags exactly when the
  prompt has them), and concludes the study's positive labels **that this view can show**
  (``taxonomy`` visibility, ``reason.guided.view_findings_text``);
* the implication is the careful reader's account of the findings against the measurements.
  The rule where they disagree: **the label decides** (it is the study's reference standard,
  and the images show more than the detector measures), the measurement is still cited as
  measured, and the implication names the disagreement -- a finding called with no
  measurement past its cut-off is "from the images", a cut-off crossed by a finding that is not
  called is a "borderline measurement". So the target never changes a number to fit the label
  nor a label to fit a number;
* a view not acquired says which findings it alone could have shown
  (``reason.guided.not_acquired_line``, the simulator's rule);
* the answer (positive labels) and the report come from the study, as for every target
  (``textformat.target_text``).

The result always parses with the strict ``textformat.parse_generation`` (tested).
"""

from __future__ import annotations

from collections.abc import Iterable

from echosonar.detect.measure import numeric_measurements
from echosonar.reason.guided import not_acquired_line, view_findings_text
from echosonar.reason.prompt import measurement_text
from echosonar.schema import StudyFeatures, ViewFeatures
from echosonar.taxonomy import FINDINGS, STRUCTURES, VIEWS, findings_past_cutoff
from echosonar.textformat import NONE, THINK_CLOSE, THINK_OPEN, render_view_line

WRITER = "echosonar.reason.evidence_targets"
NO_MEASUREMENTS = "no detector measurements"
NORMAL_VIEW = "no abnormality called in this view"


def evidence_text(v: ViewFeatures, flags: bool = False) -> str:
    """The evidence of one view: its detector measurements exactly as the prompt prints them
    (with the reference-range flags when the prompt has them, ``LMConfig.measurement_flags``).

    >>> import numpy as np
    >>> v = ViewFeatures("A4C", np.zeros((1, 2)), np.zeros((12, 2)), np.zeros(12),
    ...                  measurements={"lvedd_cm": 5.123, "ef_proxy_pct": float("nan")})
    >>> evidence_text(v)
    'lvedd_cm 5.12'
    """
    parts = [measurement_text(k, x, flags) for k, x in numeric_measurements(v.measurements)]
    return ", ".join(parts) or NO_MEASUREMENTS


def flagged_findings(v: ViewFeatures) -> list[str]:
    """Names of the findings this view can show whose guideline cut-off one of its detector
    measurements crosses (``taxonomy.findings_past_cutoff``, either sex), in taxonomy order.

    >>> import numpy as np
    >>> v = ViewFeatures("A4C_COLOR", np.zeros((1, 2)), np.zeros((12, 2)), np.zeros(12),
    ...                  measurements={"tr_jet_ratio": 0.45, "mr_jet_ratio": 0.02})
    >>> flagged_findings(v)
    ['tricuspid regurgitation']
    """
    crossed = {name for k, x in numeric_measurements(v.measurements)
               for name, _ in findings_past_cutoff(k, x)}
    return [f.name for f in FINDINGS if f.name in crossed and v.view in f.views]


def implication_text(called: Iterable[str], flagged: Iterable[str] = ()) -> str:
    """The implication of one view: the careful reader's account of its called findings
    against its measurements (the rule in the module docstring).

    >>> implication_text([])
    'no abnormality called in this view'
    >>> implication_text(["RV enlargement"], ["RV enlargement"])
    'consistent with RV enlargement'
    >>> implication_text(["aortic stenosis"], [])
    'aortic stenosis from the images, no measurement past its cut-off'
    >>> implication_text([], ["LA enlargement"])
    'LA enlargement cut-off crossed but not called: borderline measurement'
    """
    called, flagged = list(called), list(flagged)
    parts = []
    if sup := [n for n in called if n in flagged]:
        parts.append("consistent with " + " and ".join(sup))
    if img := [n for n in called if n not in flagged]:
        parts.append(" and ".join(img) + " from the images, no measurement past its cut-off")
    if disc := [n for n in flagged if n not in called]:
        parts.append(" and ".join(disc) + " cut-off crossed but not called: borderline "
                     "measurement")
    return "; ".join(parts) or NORMAL_VIEW


def view_line(v: ViewFeatures, positives: list[str], flags: bool = False) -> str:
    """One acquired view's reasoning line (``positives``: the study's positive finding keys)."""
    boxes = {s: list(v.boxes[s]) for s in STRUCTURES if s in (v.boxes or {})}
    called = view_findings_text(v.view, positives)
    names = [] if called == NONE else called.split(", ")
    return render_view_line(v.view, boxes, evidence_text(v, flags), names,
                            implication_text(names, flagged_findings(v)))


def _prompt_views(sf: StudyFeatures) -> dict[str, ViewFeatures]:
    last = {v.view: v for v in sf.views if v.view in VIEWS}  # as guided decoding cites them
    if not last:
        raise ValueError(f"study {sf.key}: no view of {', '.join(VIEWS)} to reason about")
    return last


def evidence_reasoning(sf: StudyFeatures, flags: bool = False) -> str:
    """The reasoning target (lines, no tags) of a study from its features and labels.

    Raises ``ValueError`` naming the study when it has no labels or no view the prompt shows.
    """
    if sf.labels is None:
        raise ValueError(f"study {sf.key} has no labels to write a reasoning target from")
    last = _prompt_views(sf)
    positives = [f.key for f in FINDINGS if sf.labels.get(f.key)]
    acquired = tuple(last)
    return "\n".join(view_line(last[v], positives, flags) if v in last else
                     not_acquired_line(v, acquired) for v in VIEWS)


def copy_probe_target(sf: StudyFeatures, flags: bool = False) -> str:
    """The copy probe's target: a think block whose acquired-view lines only repeat the
    prompt's boxes and measurements (findings ``none``, a fixed implication), nothing to
    decide. Training on it measures whether the LM can read its prompt at all
    (:mod:`echosonar.reason.grounding` scores the copies)."""
    last = _prompt_views(sf)
    acquired = tuple(last)
    lines = []
    for v in VIEWS:
        if v not in last:
            lines.append(not_acquired_line(v, acquired))
            continue
        w = last[v]
        boxes = {s: list(w.boxes[s]) for s in STRUCTURES if s in (w.boxes or {})}
        lines.append(render_view_line(v, boxes, evidence_text(w, flags), [], "copied"))
    return "\n".join([THINK_OPEN, *lines, THINK_CLOSE])


# ---------------------------------------------------------------------------------------------
# ``echosonar dataset targets FEATURES``: fill a feature cache's reasoning targets
# ---------------------------------------------------------------------------------------------

def fill_targets(features: str, overwrite: bool = False) -> dict[str, int]:
    """Write the reasoning target of every study of a feature cache that has none (all with
    ``overwrite``) into its index, atomically. Returns counts; raises ``FeatureCacheError`` /
    ``ValueError`` naming the study that cannot get one."""
    from echosonar.io.features import read_index, write_index
    from echosonar.reason.grounding import light_study

    index = read_index(features)
    entries = index.pop("studies")
    n = 0
    for e in entries:
        if e.get("reasoning") and not overwrite:
            continue
        sf = light_study(e)
        e["reasoning"] = evidence_reasoning(sf)
        n += 1
    if n:
        index["targets"] = {**(index.get("targets") or {}), "reasoning": WRITER}
    write_index(features, entries, **index)
    return {"written": n, "kept": len(entries) - n}


def add_arguments(parser) -> None:  # noqa: ANN001 - argparse parser
    parser.add_argument("features", metavar="FEATURES",
                        help="feature cache (from `echosonar encode` of a dataset)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rewrite every study's reasoning, not only missing ones")


def run(args) -> int:  # noqa: ANN001 - argparse namespace
    import sys

    from echosonar.io.features import FeatureCacheError

    try:
        got = fill_targets(args.features, args.overwrite)
    except (FeatureCacheError, ValueError, KeyError) as e:
        print(f"echosonar dataset targets: {e}", file=sys.stderr)
        return 2
    print(f"reasoning targets written from the detector's evidence for {got['written']} "
          f"studies ({got['kept']} already had one) -> {args.features}")
    return 0
