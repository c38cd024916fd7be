"""Reasoning targets from the prompt's own evidence: the target writer for a user's studies.

The simulator writes reasoning from its ground truth (true boxes, true measurements). A user's
study has neither, only what the detector found in it and the labels from the spreadsheet, so
its reasoning target is written from exactly what the model's prompt shows
(:mod:`echosonar.reason.prompt`), which makes every number and box in the target something the
model can read off its input rather than invent:

* an acquired view cites the detector's boxes **verbatim** (``reason.guided.citations``: the
  same text guided decoding forces; with several clips of one view, the last one, as guided
  decoding takes it), gives as evidence the detector's measurements **as the prompt prints
  them** (``reason.prompt.measurement_text`` without flags), and concludes the study's
  positive labels **that this view can show** (``taxonomy`` visibility,
  ``reason.guided.view_findings_text``);
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
from echosonar.taxonomy import FINDINGS, STRUCTURES, VIEWS
from echosonar.textformat import NONE, render_view_line

WRITER = "echosonar.reason.evidence_targets"
NO_MEASUREMENTS = "no detector measurements"
NORMAL_VIEW = "no abnormality called in this view"


def evidence_text(v: ViewFeatures) -> str:
    """The evidence of one view: its detector measurements as the prompt prints them.

    >>> import numpy as np
    >>> v = ViewFeatures("A4C", np.zeros((1, 2)), np.zeros((12, 2)), np.zeros(12),
    ...                  measurements={"lvedd_cm": 5.123, "ef_proxy_pct": float("nan")})
    >>> evidence_text(v)
    'lvedd_cm 5.12'
    """
    parts = [measurement_text(k, x, flags=False) for k, x in numeric_measurements(v.measurements)]
    return ", ".join(parts) or NO_MEASUREMENTS


def implication_text(positives: Iterable[str]) -> str:
    """The implication of one view: what its called findings are, or that it looks normal."""
    names = list(positives)
    return ("consistent with " + " and ".join(names)) if names else NORMAL_VIEW


def view_line(v: ViewFeatures, positives: list[str]) -> str:
    """One acquired view's reasoning line (``positives``: the study's positive finding keys)."""
    boxes = {s: list(v.boxes[s]) for s in STRUCTURES if s in (v.boxes or {})}
    called = view_findings_text(v.view, positives)
    names = [] if called == NONE else called.split(", ")
    return render_view_line(v.view, boxes, evidence_text(v), names, implication_text(names))


def evidence_reasoning(sf: StudyFeatures) -> str:
    """The reasoning target (lines, no tags) of a study from its features and labels.

    Raises ``ValueError`` naming the study when it has no labels or no view the prompt shows.
    """
    if sf.labels is None:
        raise ValueError(f"study {sf.key} has no labels to write a reasoning target from")
    last = {v.view: v for v in sf.views if v.view in VIEWS}  # as guided decoding cites them
    if not last:
        raise ValueError(f"study {sf.key}: no view of {', '.join(VIEWS)} to reason about")
    positives = [f.key for f in FINDINGS if sf.labels.get(f.key)]
    acquired = tuple(last)
    return "\n".join(view_line(last[v], positives) if v in last else
                     not_acquired_line(v, acquired) for v in VIEWS)


# ---------------------------------------------------------------------------------------------
# ``echosonar dataset targets FEATURES``: fill a feature cache's reasoning targets
# ---------------------------------------------------------------------------------------------

def _light_view(d: dict) -> ViewFeatures:
    """A view as the writer needs it (view, boxes, measurements) from a feature-index entry,
    without loading its tensors."""
    import numpy as np

    z = np.zeros((0, 0), np.float32)
    return ViewFeatures(d["view"], z, z, np.zeros(0, np.float32), boxes=d.get("boxes") or {},
                        measurements=d.get("measurements") or {},
                        view_conf=float(d.get("view_conf", 1.0)))


def fill_targets(features: str, overwrite: bool = False) -> dict[str, int]:
    """Write the reasoning target of every study of a feature cache that has none (all with
    ``overwrite``) into its index, atomically. Returns counts; raises ``FeatureCacheError`` /
    ``ValueError`` naming the study that cannot get one."""
    from echosonar.io.features import read_index, write_index

    index = read_index(features)
    entries = index.pop("studies")
    n = 0
    for e in entries:
        if e.get("reasoning") and not overwrite:
            continue
        sf = StudyFeatures(e["key"], [_light_view(v) for v in e.get("views", [])],
                           labels=e.get("labels"))
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
