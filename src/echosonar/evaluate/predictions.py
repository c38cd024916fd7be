"""The predictions file: what every results-table row hands to the scorer.

One JSON file per (model, split), shared with the classifier baselines
(:mod:`echosonar.encode.baselines` writes the same format)::

    {"format": "echosonar.predictions/v1", "method": str, "split": str,
     "label_keys": [... taxonomy.LABEL_KEYS ...],
     "studies": {key: {"labels": {label: 0/1} | [label, ...],
                       "scores": {label: prob},           # optional (AUROC needs it)
                       "generation": str,                 # optional: raw VLM output
                       "report": {section: text},         # optional: parsed report sections
                       "well_formed": bool}}}             # optional: parser verdict

Extra top-level keys (``thresholds``, ``model``, ``budget``...) are kept as metadata. For a VLM
the labels are the parsed answer findings; a malformed generation predicts the empty set, which
is wrong for every study (each study is either ``healthy`` or has a finding).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from echosonar.io.atomic import atomic_write_json
from echosonar.taxonomy import LABEL_KEYS

PRED_FORMAT = "echosonar.predictions/v1"


class PredictionsError(ValueError):
    """A predictions file is missing, malformed or does not match the evaluated split."""


@dataclass
class StudyPrediction:
    """One study's prediction. ``labels`` holds positive label keys (``healthy`` included)."""

    labels: set[str]
    scores: dict[str, float] | None = None
    generation: str | None = None
    report: dict[str, str] | None = None
    well_formed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"labels": {k: int(k in self.labels) for k in LABEL_KEYS}}
        if self.scores is not None:
            d["scores"] = {k: round(float(v), 6) for k, v in self.scores.items()}
        for name in ("generation", "report", "well_formed"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        return d


def prediction_from_generation(text: str, scores: Mapping[str, float] | None = None
                               ) -> StudyPrediction:
    """Parse a VLM generation strictly (``textformat.parse_generation``); a malformed one
    predicts no label and no report.

    >>> from echosonar.textformat import render_generation, render_view_line
    >>> from echosonar.taxonomy import REPORT_SECTIONS, VIEWS
    >>> g = render_generation([render_view_line(v, None) for v in VIEWS],
    ...                       [], {s: "Normal." for s in REPORT_SECTIONS})
    >>> p = prediction_from_generation(g)
    >>> sorted(p.labels), p.well_formed, prediction_from_generation("junk").labels
    (['healthy'], True, set())
    """
    from echosonar.textformat import parse_generation

    parsed = parse_generation(text)
    labels = set(parsed.findings) if parsed.well_formed else set()
    # A malformed generation gets no report either (scored as empty), like its labels.
    report = dict(parsed.sections) if parsed.well_formed else None
    return StudyPrediction(labels=labels, scores=dict(scores) if scores is not None else None,
                           generation=text, report=report, well_formed=parsed.well_formed)


def predictions_from_scores(keys: Iterable[str], probs: Any,
                            thresholds: Mapping[str, float] | float = 0.5
                            ) -> dict[str, StudyPrediction]:
    """Scores ``[N, L]`` (``LABEL_KEYS`` order) -> predictions by per-label thresholds."""
    import numpy as np

    probs = np.asarray(probs, dtype=float)
    out = {}
    for i, key in enumerate(keys):
        thr = [thresholds if isinstance(thresholds, (int, float)) else thresholds[k]
               for k in LABEL_KEYS]
        out[key] = StudyPrediction(
            labels={k for j, k in enumerate(LABEL_KEYS) if probs[i, j] >= thr[j]},
            scores={k: float(probs[i, j]) for j, k in enumerate(LABEL_KEYS)})
    return out


def write_predictions(path: str | Path, preds: Mapping[str, StudyPrediction], method: str,
                      split: str, **meta: Any) -> Path:
    path = Path(path)
    atomic_write_json(path, {"format": PRED_FORMAT, "method": method, "split": split,
                             "label_keys": list(LABEL_KEYS), **meta,
                             "studies": {k: p.to_dict() for k, p in preds.items()}}, indent=None)
    return path


def _labels(v: Any, where: str) -> set[str]:
    if isinstance(v, dict):
        items = {k for k, x in v.items() if int(x)}
        keys = set(v)
    elif isinstance(v, list):
        items = keys = set(v)
    else:
        raise PredictionsError(f"{where}: 'labels' must be a {{label: 0/1}} object or a list")
    unknown = keys - set(LABEL_KEYS)
    if unknown:
        raise PredictionsError(f"{where}: unknown label(s) {sorted(unknown)}")
    return items


def read_predictions(path: str | Path) -> tuple[dict[str, Any], dict[str, StudyPrediction]]:
    """Return ``(metadata, {key: StudyPrediction})``; raises :class:`PredictionsError`."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"no predictions file at {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PredictionsError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or data.get("format") != PRED_FORMAT:
        raise PredictionsError(f"{path} is not an {PRED_FORMAT} predictions file")
    if list(data.get("label_keys", LABEL_KEYS)) != list(LABEL_KEYS):
        raise PredictionsError(f"{path}: label_keys differ from taxonomy.LABEL_KEYS")
    studies = data.get("studies")
    if not isinstance(studies, dict) or not studies:
        raise PredictionsError(f"{path}: 'studies' must be a non-empty object")
    out = {}
    for key, s in studies.items():
        where = f"{path}: study {key!r}"
        if not isinstance(s, dict) or "labels" not in s:
            raise PredictionsError(f"{where} has no 'labels'")
        scores = s.get("scores")
        if scores is not None:
            if not isinstance(scores, dict) or set(scores) != set(LABEL_KEYS):
                raise PredictionsError(f"{where}: 'scores' must give every label")
            scores = {k: float(v) for k, v in scores.items()}
        report = s.get("report")
        if report is not None and not isinstance(report, dict):
            raise PredictionsError(f"{where}: 'report' must be a {{section: text}} object")
        out[key] = StudyPrediction(labels=_labels(s["labels"], where), scores=scores,
                                   generation=s.get("generation"), report=report,
                                   well_formed=s.get("well_formed"))
    meta = {k: v for k, v in data.items() if k != "studies"}
    return meta, out
