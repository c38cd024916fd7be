"""Negative controls: what a metric gives to answers and reports that know nothing of the study.

Every ``echosonar evaluate`` output carries these rows, computed on the same studies as the
model it scores, so a reader can see at once whether a metric can tell a model from a
constant:

* ``constant_answer`` -- the most common label set of the training split (the mode answer,
  usually ``healthy``) for every study (a classification control: no report);
* ``constant_report`` -- the most common reference report of the training split for every study
  (with the constant answer as its findings): one fixed, plausible text;
* ``shuffled_reports`` -- each study gets another study's reference report *and* labels
  (a seeded derangement): the right distribution, the wrong patient;
* ``empty_report`` -- no findings and empty report sections.

A metric on which ``constant_report`` or ``shuffled_reports`` scores close to (or above) the
model is not a headline metric: :func:`headline_check` says which ones pass.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from echosonar.evaluate.predictions import StudyPrediction
from echosonar.taxonomy import HEALTHY, LABEL_KEYS, REPORT_SECTIONS

CONTROLS = ("constant_answer", "constant_report", "shuffled_reports", "empty_report")

#: (metric path in :func:`evaluate.run.evaluate_predictions` output, short name) of the metrics
#: the controls are compared on
CONTROL_METRICS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("classification", "macro_balanced_accuracy"), "macro_bacc"),
    (("green_rule", "green_rule"), "green_rule"),
    (("green_rule", "abnormal_f1"), "abnormal_f1"),
    (("text", "bleu4"), "bleu4"),
    (("text", "rougeL"), "rougeL"),
    (("text", "meteor"), "meteor"),
    (("text", "embed_cosine"), "embed_cosine"),
)


def _positives(labels: Mapping[str, int]) -> frozenset[str]:
    return frozenset(k for k in LABEL_KEYS if int(labels.get(k, 0)))


def mode_answer(train: Sequence[Mapping[str, Any]]) -> set[str]:
    """The most common positive-label set of ``train`` entries (ties: the first seen).

    >>> mode_answer([{"labels": {"healthy": 1}}, {"labels": {"healthy": 1}},
    ...              {"labels": {"tricuspid_regurgitation": 1}}])
    {'healthy'}
    """
    if not train:
        return {HEALTHY}
    counts = Counter(_positives(e["labels"]) for e in train)
    return set(counts.most_common(1)[0][0])


def mode_report(train: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The most common reference report (all sections equal) of ``train`` entries; when every
    report is unique, the report of the most common answer's first study."""
    reps = [e.get("report") or {} for e in train if e.get("report")]
    if not reps:
        return {s: "" for s in REPORT_SECTIONS}
    counts = Counter(json.dumps(r, sort_keys=True) for r in reps)
    text, n = counts.most_common(1)[0]
    if n > 1:
        return json.loads(text)
    mode = mode_answer(train)
    for e in train:
        if e.get("report") and _positives(e["labels"]) == mode:
            return dict(e["report"])
    return dict(reps[0])


def derangement(n: int, seed: int = 0) -> np.ndarray:
    """A seeded permutation of ``range(n)`` with no fixed point (n >= 2).

    >>> p = derangement(5, seed=3)
    >>> sorted(p.tolist()), bool((p != np.arange(5)).all())
    ([0, 1, 2, 3, 4], True)
    """
    if n < 2:
        raise ValueError("a shuffled-report control needs at least two studies")
    rng = np.random.default_rng(seed)
    # a random cyclic shift of a random order never maps a study to itself
    order = rng.permutation(n)
    perm = np.empty(n, np.int64)
    perm[order] = order[(np.arange(n) + 1 + rng.integers(n - 1)) % n]
    return perm


def control_predictions(truth: Sequence[Mapping[str, Any]], train: Sequence[Mapping[str, Any]],
                        seed: int = 0) -> dict[str, dict[str, StudyPrediction]]:
    """``{control: {key: StudyPrediction}}`` for the ``truth`` studies (see module docstring).

    ``train``: entries of the training split (``labels``, ``report``), for the mode answer and
    report. ``seed`` fixes the shuffle.
    """
    keys = [e["key"] for e in truth]
    answer, report = mode_answer(train), mode_report(train)
    out: dict[str, dict[str, StudyPrediction]] = {
        "constant_answer": {k: StudyPrediction(set(answer)) for k in keys},
        "constant_report": {k: StudyPrediction(set(answer), report=dict(report)) for k in keys},
        "empty_report": {k: StudyPrediction(set(), report={s: "" for s in REPORT_SECTIONS})
                         for k in keys},
    }
    if len(truth) >= 2:
        perm = derangement(len(truth), seed)
        out["shuffled_reports"] = {
            k: StudyPrediction(set(_positives(truth[j]["labels"])),
                               report=dict(truth[j].get("report") or {}))
            for k, j in zip(keys, perm.tolist(), strict=True)}
    return out


def _get(m: Mapping[str, Any], path: tuple[str, ...]) -> float | None:
    for p in path:
        if not isinstance(m, Mapping) or p not in m:
            return None
        m = m[p]
    return None if m is None else float(m)


def control_summary(metrics: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """``{control: {short metric: value}}`` from each control's full metrics."""
    return {name: {short: _get(m, path) for path, short in CONTROL_METRICS}
            for name, m in metrics.items()}


def headline_check(model: Mapping[str, Any], controls: Mapping[str, Mapping[str, float | None]],
                   margin: float = 0.05) -> dict[str, dict[str, Any]]:
    """Per metric: the model's value, the best control's value and name, and ``passes`` --
    whether the model beats every control by at least ``margin`` (absolute, on the metric's
    0..1 scale). A metric that fails is not a headline metric for this row.

    >>> headline_check({"green_rule": {"green_rule": 0.8}},
    ...                {"constant_report": {"green_rule": 0.86}})["green_rule"]["passes"]
    False
    """
    out: dict[str, dict[str, Any]] = {}
    for path, short in CONTROL_METRICS:
        v = _get(model, path)
        vals = [(c[short], n) for n, c in controls.items() if c.get(short) is not None]
        if v is None or not vals:
            continue
        best, who = max(vals)
        out[short] = {"model": v, "best_control": best, "control": who,
                      "passes": bool(v >= best + margin)}
    return out
