"""SFT data: studies from the feature cache, targets from textformat, a resumable batch order.

The order is a pure function of ``(seed, step)``: the global sample stream is the concatenation
of per-epoch permutations (epoch e uses ``seed + e``), step ``s`` takes items
``[s*B, (s+1)*B)`` of it, and DDP rank ``r`` of ``W`` takes the ``r``-th of ``W`` equal slices of
that global batch. So resuming at step ``s`` needs no sampler state, and 1 or ``W`` processes
see the same global batches. With class-balanced sampling (``weights``), epoch ``e`` is instead
``n`` draws with replacement from ``weights`` under seed ``seed + e`` — still a pure function
of ``(seed, step)``.

Class imbalance: greedy decoding of a model trained on the natural label mix calls a finding
only when it is more likely than not, so rare findings are under-called and balanced accuracy
suffers (docs/notes/reason.md). Two SFT levers act on that: :func:`study_weights` (sample
studies with rare findings more often) and :func:`decision_spans` (weight the loss of the
target text that states a finding).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from echosonar.io.features import FeatureCacheError, iter_features
from echosonar.schema import StudyFeatures
from echosonar.taxonomy import FINDINGS, HEALTHY, LABEL_KEYS
from echosonar.textformat import target_text

#: ``sft.target`` choices: who writes the reasoning lines of an SFT target.
TARGET_WRITERS: tuple[str, ...] = ("evidence", "reference", "copy")


#: ``sft.report`` choices: who writes the report sections of an evidence target.
REPORT_WRITERS: tuple[str, ...] = ("labels", "reference")


def sft_target(sf: StudyFeatures, writer: str = "reference", flags: bool = False,
               report: str = "reference", answer_order: str = "taxonomy") -> str:
    """The SFT target text of a study (EOS is appended by the model's target encoder).

    ``writer``: ``evidence`` -- reasoning lines citing the prompt's own detector evidence
    (:func:`echosonar.reason.evidence_targets.evidence_reasoning`; ``flags`` when the prompt
    prints reference-range flags); ``reference`` -- the reasoning stored in the cache (the
    simulator's, written from its ground truth; also the reference text of report metrics);
    ``copy`` -- the copy probe (:func:`~echosonar.reason.evidence_targets.copy_probe_target`).
    The answer comes from the study's labels (for ``evidence``: those an acquired view can
    show, :func:`assessable_labels`). ``report`` (``evidence`` only): ``labels`` -- every
    section templated from those labels (``dataset.reports.report_from_labels``: one sentence
    per finding, so the report follows from the answer and cannot contradict it);
    ``reference`` -- the study's stored report (the simulator's or the user's text; the
    reference of the report metrics in every case). ``answer_order``: see
    :func:`echosonar.textformat.target_text`.
    """
    from echosonar.reason.evidence_targets import copy_probe_target, evidence_reasoning

    if writer not in TARGET_WRITERS:
        raise ValueError(f"unknown SFT target writer {writer!r}; choose from "
                         f"{', '.join(TARGET_WRITERS)}")
    if report not in REPORT_WRITERS:
        raise ValueError(f"unknown SFT report writer {report!r}; choose from "
                         f"{', '.join(REPORT_WRITERS)}")
    if writer == "copy":
        return copy_probe_target(sf, flags)
    if sf.labels is None or sf.report is None or (writer == "reference" and not sf.reasoning):
        raise ValueError(f"study {sf.key} has no reasoning/labels/report target")
    if writer == "reference":
        return target_text(sf.reasoning, sf.labels, sf.report, answer_order)
    labels = assessable_labels(sf)
    if report == "labels":
        from echosonar.dataset.reports import report_from_labels

        return target_text(evidence_reasoning(sf, flags), labels, report_from_labels(labels),
                           answer_order)
    return target_text(evidence_reasoning(sf, flags), labels, sf.report, answer_order)


def assessable_labels(sf: StudyFeatures) -> dict[str, int]:
    """The study's labels as a reader of its acquired views can state them: a positive finding
    that no acquired view can show (``Finding.views``) is dropped, and ``healthy`` is set when
    nothing remains, so the answer lists exactly the findings its reasoning lines conclude."""
    acquired = {v.view for v in sf.views}
    out = {f.key: int(bool(sf.labels.get(f.key)) and any(v in acquired for v in f.views))
           for f in FINDINGS}
    out[HEALTHY.key] = int(not any(out.values()))
    return out


def load_split(features: str | Path, split: str, require_targets: bool = True,
               limit: int = 0) -> list[StudyFeatures]:
    """All studies of ``split`` in the cache at ``features`` (the first ``limit`` if > 0)."""
    out = []
    for sf in iter_features(features, split):
        if require_targets and (not sf.reasoning or sf.labels is None or not sf.report):
            raise FeatureCacheError(f"{features}: study {sf.key} ({split}) has no reasoning/"
                                    "labels/report, which SFT needs")
        out.append(sf)
        if limit and len(out) >= limit:
            break
    return out


def study_weights(studies: list[StudyFeatures], power: float) -> np.ndarray:
    """Sampling probabilities ``[N]`` for class-balanced SFT: a study weighs
    ``(1 / prevalence) ** power`` of its rarest positive label (``healthy`` counts as a label;
    prevalences from these studies, unknown labels as negative). ``power=0`` is uniform.

    >>> from types import SimpleNamespace as S
    >>> lab = lambda **kw: S(labels={k: kw.get(k, 0) for k in LABEL_KEYS})
    >>> studies = [lab(healthy=1)] * 3 + [lab(pericardial_effusion=1)]
    >>> study_weights(studies, 1.0).round(3).tolist()
    [0.167, 0.167, 0.167, 0.5]
    """
    y = np.array([[1.0 if (sf.labels or {}).get(k, 0) == 1 else 0.0 for k in LABEL_KEYS]
                  for sf in studies])
    if y.size == 0:
        raise ValueError("study_weights: no studies")
    prev = np.maximum(y.mean(0), 1.0 / len(y))
    w = np.array([max((1.0 / prev[j]) ** power for j in np.flatnonzero(row)) if row.any()
                  else 1.0 for row in y])
    return w / w.sum()


def decision_spans(target: str) -> list[tuple[int, int]]:
    r"""Character spans ``[start, end)`` of the target text that states a finding: each
    reasoning line's ``evidence: ...`` onwards when its findings are not ``none``, and the
    answer's ``findings:`` line unless it is ``healthy``. SFT weights these tokens by
    ``sft.finding_weight``.

    >>> t = ("view A4C: structures LV (1,2,3,4). evidence: big. findings: LV enlargement. "
    ...      "implication: x.\nview A2C: structures LV (1,2,3,4). evidence: ok. findings: none."
    ...      " implication: y.\nfindings: LV enlargement\nfindings: healthy\n")
    >>> [t[a:b].split(":")[0] for a, b in decision_spans(t)]
    ['evidence', 'findings']
    """
    spans, pos = [], 0
    for line in target.splitlines(keepends=True):
        body = line.strip()
        if body.startswith("view ") and "findings: " in body and "findings: none" not in body:
            start = line.find("evidence: ")
            if start >= 0:
                spans.append((pos + start, pos + len(line)))
        elif body.startswith("findings: ") and body != f"findings: {HEALTHY.name}":
            spans.append((pos, pos + len(line)))
        pos += len(line)
    return spans


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0,
                  world: int = 1, weights: np.ndarray | None = None) -> list[int]:
    """Dataset indices of this rank's share of global batch ``step`` (see module docstring).

    >>> batch_indices(5, 4, 0, 0) + batch_indices(5, 4, 1, 0)[:1] == \
        np.random.default_rng(0).permutation(5).tolist()
    True
    """
    if batch_size % world:
        raise ValueError(f"global batch {batch_size} is not divisible by {world} processes")
    start = step * batch_size
    items = []
    for g in range(start, start + batch_size):
        epoch, i = divmod(g, n)
        items.append(int(_perm(n, seed + epoch, weights)[i]))
    per = batch_size // world
    return items[rank * per:(rank + 1) * per]


_PERMS: dict[tuple, np.ndarray] = {}


def _perm(n: int, seed: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Epoch order: a permutation, or ``n`` weighted draws with replacement."""
    key = (n, seed) if weights is None else (n, seed, np.asarray(weights).tobytes())
    if key not in _PERMS:
        if len(_PERMS) > 8:
            _PERMS.clear()
        rng = np.random.default_rng(seed)
        if weights is None:
            _PERMS[key] = rng.permutation(n)
        else:
            w = np.asarray(weights, np.float64)
            if w.shape != (n,) or (w < 0).any() or w.sum() <= 0:
                raise ValueError(f"sampling weights must be {n} non-negative numbers, not all 0")
            _PERMS[key] = rng.choice(n, size=n, replace=True, p=w / w.sum())
    return _PERMS[key]
