"""Classification metrics against hand-computed values and scikit-learn; the one macro BAcc
(one-class labels excluded) shared by every caller."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from echosonar.evaluate.classification import (
    auroc,
    balanced_accuracy,
    bootstrap_indices,
    classification_metrics,
    f1,
    labels_to_array,
    rarest_labels,
)

# Three labels, six studies. Label "c" has no positives at all.
LABELS = ["a", "b", "c"]
Y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0]])
P = np.array([[1, 0, 0], [0, 1, 1], [0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]])
S = np.array([[.9, .2, .1], [.4, .8, .7], [.3, .7, .2], [.6, .1, .1], [.2, .3, .1],
              [.8, .2, .3]])


def test_hand_computed_values():
    m = classification_metrics(Y, P, S, labels=LABELS, n_boot=0)
    a, b, c = (m["per_label"][k] for k in LABELS)
    # a: TP=2 FN=1 TN=2 FP=1 -> sens 2/3, spec 2/3, F1 = 4/6.
    assert a["sensitivity"] == pytest.approx(2 / 3) and a["specificity"] == pytest.approx(2 / 3)
    assert a["balanced_accuracy"] == pytest.approx(2 / 3) and a["f1"] == pytest.approx(2 / 3)
    # a's scores: positives .9 .4 .8, negatives .3 .6 .2 -> 8 of 9 pairs ordered right.
    assert a["auroc"] == pytest.approx(8 / 9)
    # b: TP=2 FN=1 TN=3 FP=0 -> BAcc (2/3 + 1)/2, F1 = 4/5; AUROC: .8 .7 .3 vs .2 .1 .2 -> 1.
    assert b["balanced_accuracy"] == pytest.approx(5 / 6) and b["f1"] == pytest.approx(0.8)
    assert b["auroc"] == pytest.approx(1.0)
    # c has no positives: sensitivity undefined, so BAcc undefined (NaN) and c is excluded
    # from the macro mean (scikit-learn would give its specificity, 5/6); F1 0
    # (zero_division=0), AUROC undefined and excluded.
    assert c["one_class"] and c["n_pos"] == 0
    assert np.isnan(c["sensitivity"]) and c["specificity"] == pytest.approx(5 / 6)
    assert np.isnan(c["balanced_accuracy"]) and c["f1"] == 0.0
    assert np.isnan(c["auroc"])
    assert m["one_class_labels"] == ["c"] and m["auroc_undefined"] == ["c"]
    assert m["macro_balanced_accuracy"] == pytest.approx((2 / 3 + 5 / 6) / 2)
    assert m["macro_balanced_accuracy_two_class"] == m["macro_balanced_accuracy"]
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert m["macro_auroc"] == pytest.approx((8 / 9 + 1.0) / 2)  # c excluded
    assert m["exact_match"] == pytest.approx(3 / 6)  # rows 1, 3 and 6 fully right


def test_one_class_label_is_excluded_not_rewarded():
    # An all-negative predictor on a split where a label has no positive study: scikit-learn
    # would give that label 100 % (its specificity); the paper's macro BAcc leaves it out.
    y = np.zeros((4, 1))
    assert np.isnan(balanced_accuracy(y, y)[0]) and f1(y, y)[0] == 0.0
    y = np.array([[1, 0, 0], [0, 0, 0], [1, 0, 1], [0, 0, 1]])  # "b" has no positives
    all_neg = np.zeros_like(y)
    m = classification_metrics(y, all_neg, labels=LABELS, n_boot=50)
    assert m["macro_balanced_accuracy"] == 0.5 and m["one_class_labels"] == ["b"]
    assert m["macro_balanced_accuracy_ci"] == (0.5, 0.5)
    none = classification_metrics(y[:, 1:2], all_neg[:, 1:2], labels=["b"], n_boot=0)
    assert np.isnan(none["macro_balanced_accuracy"])  # nothing left to average


def test_every_caller_computes_the_same_macro_bacc():
    """The baselines (encode.metrics), the results tables (classification), the SFT quick
    metrics (reason.generate) and GRPO monitoring (reason.grpo_eval) on the same arrays."""
    from echosonar.encode.metrics import evaluate_scores
    from echosonar.reason.generate import score_predictions
    from echosonar.reason.grpo_eval import answer_macro_bacc
    from echosonar.schema import StudyFeatures
    from echosonar.taxonomy import LABEL_KEYS

    rng = np.random.default_rng(11)
    n = 40
    y = (rng.random((n, len(LABEL_KEYS))) < 0.3).astype(int)
    y[:, LABEL_KEYS.index("pericardial_effusion")] = 0  # a label with one class in the split
    y[:, -1] = (y[:, :-1].sum(1) == 0)  # healthy = no finding
    p = (rng.random(y.shape) < 0.35).astype(int)
    p[:, -1] = (p[:, :-1].sum(1) == 0)
    ref = classification_metrics(y, p, n_boot=0)
    want, one_class = ref["macro_balanced_accuracy"], ref["one_class_labels"]
    assert "pericardial_effusion" in one_class

    thr = {k: 0.5 for k in LABEL_KEYS}
    assert evaluate_scores(y, p.astype(float), thr, LABEL_KEYS)["macro_bacc"] == \
        pytest.approx(want)
    truth = [{k: int(v) for k, v in zip(LABEL_KEYS, row, strict=True)} for row in y]
    answers = [{k for k, v in zip(LABEL_KEYS, row, strict=True) if v} for row in p]
    assert answer_macro_bacc(answers, truth)[0] == pytest.approx(want)
    studies = [StudyFeatures(key=str(i), views=[], labels=t, report={})
               for i, t in enumerate(truth)]
    preds = [{"key": str(i), "well_formed": True, "findings": sorted(a), "sections": {},
              "scores": {k: float(k in a) for k in LABEL_KEYS}} for i, a in enumerate(answers)]
    m = score_predictions(preds, studies)
    assert m["macro_bacc_generated"] == pytest.approx(want)
    assert m["macro_bacc_head@0.5"] == pytest.approx(want)
    assert m["one_class_labels"] == one_class
    assert m["n_labels_scored"] == len(LABEL_KEYS) - len(one_class)


def test_matches_sklearn_on_random_data():
    rng = np.random.default_rng(3)
    y = (rng.random((60, 5)) < 0.3).astype(float)
    y[:, 4] = 1  # a label with no negatives
    p = (rng.random((60, 5)) < 0.4).astype(float)
    s = np.round(rng.random((60, 5)), 1)  # ties on purpose
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(5):
            assert f1(y, p)[j] == pytest.approx(f1_score(y[:, j], p[:, j], zero_division=0))
        for j in range(4):  # two-class labels: scikit-learn's BAcc and AUROC
            assert balanced_accuracy(y, p)[j] == pytest.approx(
                balanced_accuracy_score(y[:, j], p[:, j]))
            assert auroc(y, s)[j] == pytest.approx(roc_auc_score(y[:, j], s[:, j]))
    assert np.isnan(auroc(y, s)[4]) and np.isnan(balanced_accuracy(y, p)[4])


def test_bootstrap_is_deterministic_and_sane():
    m1 = classification_metrics(Y, P, S, labels=LABELS, n_boot=200, seed=7)
    m2 = classification_metrics(Y, P, S, labels=LABELS, n_boot=200, seed=7)
    m3 = classification_metrics(Y, P, S, labels=LABELS, n_boot=200, seed=8)
    assert m1["macro_balanced_accuracy_ci"] == m2["macro_balanced_accuracy_ci"]
    assert m1["macro_f1_ci"] == m2["macro_f1_ci"]
    assert m1["macro_balanced_accuracy_ci"] != m3["macro_balanced_accuracy_ci"]
    lo, hi = m1["macro_balanced_accuracy_ci"]
    assert 0 <= lo <= m1["macro_balanced_accuracy"] <= hi <= 1
    assert np.array_equal(bootstrap_indices(6, 5, 1), bootstrap_indices(6, 5, 1))
    # A perfect predictor has a degenerate interval at 1.
    perfect = classification_metrics(Y[:, :2], Y[:, :2], labels=LABELS[:2], n_boot=100)
    assert perfect["macro_balanced_accuracy_ci"] == (1.0, 1.0)


def test_input_validation():
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        classification_metrics(Y[:, :2], P, labels=LABELS)
    with pytest.raises(ValueError, match="0/1"):
        classification_metrics(Y * 2, P, labels=LABELS)
    with pytest.raises(ValueError, match="unknown label"):
        labels_to_array([{"zz": 1}], LABELS)


def test_rarest_labels_uses_counts_and_skips_healthy():
    y = labels_to_array([{"a", "b"}, {"a"}, {"a", "c"}], LABELS)
    assert rarest_labels(y, LABELS, k=2, exclude=()) == ["b", "c"]
    assert rarest_labels(y, LABELS, k=1, exclude=("b",)) == ["c"]
