"""A no-learning reference row: the detector's measurements judged against guideline cut-offs.

A study is called positive for a finding when any of its views has a detector measurement past
that finding's cut-off (the flag the prompt prints, ``taxonomy.findings_past_cutoff``; cut-offs
that depend on sex count only when they hold for both sexes), and ``healthy`` when no finding is
called. Findings no measurement reads (LV hypertrophy, aortic stenosis, bicuspid valve, mitral
calcification) are never called, so they sit at 50 % BAcc. The row says how much of a model's
classification the detector's measurements alone explain; a reasoning model that reads the
images as well should beat it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from echosonar.detect.measure import numeric_measurements
from echosonar.schema import StudyFeatures
from echosonar.taxonomy import FINDING_BY_NAME, HEALTHY, LABEL_KEYS, findings_past_cutoff


def cutoff_rule_findings(sf: StudyFeatures) -> set[str]:
    """Finding keys the rule calls for one study (``{"healthy"}`` when none).

    >>> from types import SimpleNamespace as S
    >>> v = S(measurements={"tr_jet_ratio": 0.36, "lvedd_cm": 5.5, "lv_fs_pct": 12.0})
    >>> sorted(cutoff_rule_findings(S(views=[v])))
    ['tricuspid_regurgitation']
    >>> sorted(cutoff_rule_findings(S(views=[])))
    ['healthy']
    """
    called = set()
    for v in sf.views:
        for key, x in numeric_measurements(v.measurements):
            called |= {FINDING_BY_NAME[name].key for name, q in findings_past_cutoff(key, x)
                       if not q}
    return called or {HEALTHY.key}


def cutoff_rule_metrics(studies: Sequence[StudyFeatures], n_boot: int = 1000) -> dict[str, Any]:
    """``classification_metrics`` of the rule on labelled ``studies`` (no AUROC: no scores)."""
    from echosonar.evaluate.classification import classification_metrics, labels_to_array

    if not studies or any(sf.labels is None for sf in studies):
        raise ValueError("cutoff_rule_metrics needs labelled studies")
    y_true = labels_to_array([sf.labels for sf in studies])  # type: ignore[misc]
    y_pred = labels_to_array([cutoff_rule_findings(sf) for sf in studies])
    return classification_metrics(y_true, y_pred, None, LABEL_KEYS, n_boot=n_boot)
