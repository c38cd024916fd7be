"""Classification metrics against hand-computed values and scikit-learn."""

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
    # c has no positives: BAcc = specificity (scikit-learn drops the empty class) = 5/6,
    # sensitivity undefined, F1 0 (zero_division=0), AUROC undefined and excluded.
    assert c["one_class"] and c["n_pos"] == 0
    assert np.isnan(c["sensitivity"]) and c["specificity"] == pytest.approx(5 / 6)
    assert c["balanced_accuracy"] == pytest.approx(5 / 6) and c["f1"] == 0.0
    assert np.isnan(c["auroc"])
    assert m["one_class_labels"] == ["c"] and m["auroc_undefined"] == ["c"]
    assert m["macro_balanced_accuracy"] == pytest.approx((2 / 3 + 5 / 6 + 5 / 6) / 3)
    assert m["macro_balanced_accuracy_two_class"] == pytest.approx((2 / 3 + 5 / 6) / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert m["macro_auroc"] == pytest.approx((8 / 9 + 1.0) / 2)  # c excluded
    assert m["exact_match"] == pytest.approx(3 / 6)  # rows 1, 3 and 6 fully right


def test_no_positive_label_predicted_all_negative_is_perfect_bacc():
    y = np.zeros((4, 1))
    assert balanced_accuracy(y, y)[0] == 1.0  # as sklearn: a single class, all right
    assert f1(y, y)[0] == 0.0


def test_matches_sklearn_on_random_data():
    rng = np.random.default_rng(3)
    y = (rng.random((60, 5)) < 0.3).astype(float)
    y[:, 4] = 1  # a label with no negatives
    p = (rng.random((60, 5)) < 0.4).astype(float)
    s = np.round(rng.random((60, 5)), 1)  # ties on purpose
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for j in range(5):
            assert balanced_accuracy(y, p)[j] == pytest.approx(
                balanced_accuracy_score(y[:, j], p[:, j]))
            assert f1(y, p)[j] == pytest.approx(f1_score(y[:, j], p[:, j], zero_division=0))
        for j in range(4):
            assert auroc(y, s)[j] == pytest.approx(roc_auc_score(y[:, j], s[:, j]))
    assert np.isnan(auroc(y, s)[4])


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
