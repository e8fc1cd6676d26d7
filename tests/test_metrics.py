"""emotk.metrics cross-checked against scikit-learn and hand computations."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

sk = pytest.importorskip("sklearn.metrics")

from emotk import metrics as M  # noqa: E402


# ----------------------------------------------------------------------------- CCC and regression


def test_ccc_perfect_negated_shifted():
    rng = np.random.default_rng(0)
    y = rng.normal(size=500)
    assert M.ccc(y, y) == pytest.approx(1.0)
    assert M.ccc(y, -y) == pytest.approx(-1.0, abs=0.02)  # exactly -1 only for zero-mean data
    yc = y - y.mean()
    assert M.ccc(yc, -yc) == pytest.approx(-1.0)
    shifted = M.ccc(y, y + 0.5)
    assert 0 < shifted < 1
    assert M.ccc(y, y + 1.0) < shifted
    # CCC punishes scale, Pearson does not
    assert M.pearson(y, 2 * y) == pytest.approx(1.0)
    assert M.ccc(y, 2 * y) < 0.9


def test_ccc_hand_example():
    t = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([2.0, 2.0, 3.0, 5.0])
    # means 2.5, 3.0; biased variances 1.25, 1.5; biased covariance:
    # ((-1.5)(-1) + (-0.5)(-1) + (0.5)(0) + (1.5)(2)) / 4 = 5/4
    expected = 2 * 1.25 / (1.25 + 1.5 + 0.25)
    assert M.ccc(t, p) == pytest.approx(expected)
    assert M.ccc_pooled(t, p) == pytest.approx(expected)
    assert M.mse(t, p) == pytest.approx((1 + 0 + 0 + 1) / 4)


@pytest.mark.parametrize("t,p,expected", [
    # CCC = 2·cov / (var_t + var_p + (mean_t − mean_p)²), biased (1/N) moments, worked by hand:
    ([-1.0, 0.0, 1.0], [-0.5, 0.5, 1.5], 16 / 19),  # shift 0.5: var 2/3 each, cov 2/3 → (4/3) / (4/3 + 1/4)
    ([-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], 0.8),  # scale 2: var 2/3 and 8/3, cov 4/3 → (8/3) / (10/3)
    ([0.0, 1.0, 2.0], [0.0, -1.0, -2.0], -0.25),  # negated, means 1 and −1: (−4/3) / (2/3 + 2/3 + 4)
    ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], -1.0),  # reversed, equal means: exactly −1
    ([1.0, 2.0, 3.0], [5.0, 5.0, 5.0], 0.0),  # constant prediction: no covariance
], ids=["shift", "scale", "negated", "reversed", "constant"])
def test_ccc_hand_cases(t, p, expected):
    assert M.ccc(np.array(t), np.array(p)) == pytest.approx(expected, abs=1e-12)
    assert M.ccc(torch.tensor(t), torch.tensor(p)) == pytest.approx(expected, abs=1e-6)


def test_ccc_nan_targets_by_hand():
    """NaN targets drop their frames per column: column 0 keeps 3 frames, column 1 all 4."""
    t = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [np.nan, 1.0]])
    p = np.array([[2.0, 0.0], [2.0, 1.0], [3.0, 1.0], [100.0, 0.0]])
    # col 0 on t = 1, 2, 3 / p = 2, 2, 3: var_t 2/3, var_p 2/9, cov 1/3, means 2 and 7/3 → (2/3) / (2/3 + 2/9 + 1/9)
    # col 1: t = 0, 1, 0, 1 / p = 0, 1, 1, 0: means 1/2, var 1/4 each, cov 0 → 0
    np.testing.assert_allclose(M.ccc(t, p), [2 / 3, 0.0], atol=1e-12)
    r = M.regression_report(t, p, names=("valence", "arousal"))
    assert r["ccc_valence"] == pytest.approx(2 / 3) and r["ccc_arousal"] == pytest.approx(0.0)
    assert r["ccc"] == pytest.approx(1 / 3)


def test_ccc_pooled_and_per_sequence_by_hand():
    """Sequence A predicted exactly (CCC 1), B by a constant (CCC 0): per-sequence mean 1/2; pooled over
    t = 0, 1, 0, 1 / p = 0, 1, 1/2, 1/2: var_t 1/4, var_p 1/8, cov 1/8, equal means → (1/4) / (3/8) = 2/3."""
    ts = [np.array([0.0, 1.0]), np.array([0.0, 1.0])]
    ps = [np.array([0.0, 1.0]), np.array([0.5, 0.5])]
    assert M.ccc_per_sequence(ts, ps) == pytest.approx(0.5)
    assert M.ccc_pooled(np.concatenate(ts), np.concatenate(ps)) == pytest.approx(2 / 3)


def test_ccc_columns_nan_mask_and_torch():
    rng = np.random.default_rng(1)
    t = rng.uniform(-1, 1, size=(200, 2))
    p = t + rng.normal(scale=0.3, size=t.shape)
    expected = np.array([M.ccc(t[:, 0], p[:, 0]), M.ccc(t[:, 1], p[:, 1])])
    np.testing.assert_allclose(M.ccc(t, p), expected)
    # NaN targets are dropped, per column, whatever the prediction there
    t_nan, p_garbage = t.copy(), p.copy()
    t_nan[:20, 0] = np.nan
    p_garbage[:20, 0] = 100.0
    got = M.ccc(t_nan, p_garbage)
    assert got[0] == pytest.approx(M.ccc(t[20:, 0], p[20:, 0]))
    assert got[1] == pytest.approx(expected[1])
    assert M.mse(t_nan, p_garbage)[0] == pytest.approx(np.mean((t[20:, 0] - p[20:, 0]) ** 2))
    # torch tensors in, same numbers out
    np.testing.assert_allclose(M.ccc(torch.from_numpy(t), torch.from_numpy(p).float()), expected, rtol=1e-6)
    assert math.isnan(M.ccc(np.array([np.nan, np.nan, 1.0]), np.zeros(3)))


def test_pearson_and_mse_against_numpy():
    rng = np.random.default_rng(2)
    t, p = rng.normal(size=(300, 3)), rng.normal(size=(300, 3))
    for c in range(3):
        assert M.pearson(t, p)[c] == pytest.approx(np.corrcoef(t[:, c], p[:, c])[0, 1])
    np.testing.assert_allclose(M.mse(t, p), [sk.mean_squared_error(t[:, c], p[:, c]) for c in range(3)])


def test_ccc_per_sequence_lists_and_groups():
    rng = np.random.default_rng(3)
    lengths = [50, 80, 30]
    ts = [rng.normal(size=(n, 2)) for n in lengths]
    ps = [t + rng.normal(scale=0.5, size=t.shape) + k for k, t in enumerate(ts)]
    expected = np.mean([M.ccc(t, p) for t, p in zip(ts, ps)], axis=0)
    np.testing.assert_allclose(M.ccc_per_sequence(ts, ps), expected)
    groups = np.concatenate([np.full(n, f"video{k}") for k, n in enumerate(lengths)])
    flat_t, flat_p = np.concatenate(ts), np.concatenate(ps)
    np.testing.assert_allclose(M.ccc_per_sequence(flat_t, flat_p, groups=groups), expected)
    # pooled differs from per-sequence (the per-sequence offsets k hurt the pooled CCC differently)
    assert not np.allclose(M.ccc_pooled(flat_t, flat_p), expected)
    # a sequence with no valid label is left out of the mean
    ts2 = ts + [np.full((10, 2), np.nan)]
    ps2 = ps + [np.zeros((10, 2))]
    np.testing.assert_allclose(M.ccc_per_sequence(ts2, ps2), expected)


def test_regression_report_keys():
    rng = np.random.default_rng(4)
    t = rng.uniform(-1, 1, size=(100, 2))
    p = 0.8 * t
    r = M.regression_report(t, p)
    assert r["ccc_valence"] == pytest.approx(M.ccc(t[:, 0], p[:, 0]))
    assert r["ccc_arousal"] == pytest.approx(M.ccc(t[:, 1], p[:, 1]))
    assert r["ccc"] == pytest.approx((r["ccc_valence"] + r["ccc_arousal"]) / 2)
    assert r["mse"] == pytest.approx(np.mean((t - p) ** 2))
    assert all(isinstance(v, float) for v in r.values())
    r2 = M.regression_report(t, p, groups=np.repeat([0, 1], 50))
    assert {"ccc_seq", "ccc_seq_valence", "ccc_seq_arousal"} <= set(r2)
    assert M.METRICS["ccc"].fn(t, p) == pytest.approx(r["ccc"])
    assert M.METRICS["ccc_arousal"].fn(t, p) == pytest.approx(r["ccc_arousal"])
    with pytest.raises(ValueError):
        M.regression_report(t, p, names=("valence",))


# ----------------------------------------------------------------------------- AUC-ROC


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    n, labels = 400, 5
    y = (rng.random((n, labels)) < 0.3).astype(int)
    scores = np.round(rng.random((n, labels)) + 0.3 * y, 1)  # rounding creates many ties
    per = M.roc_auc(y, scores)
    for c in range(labels):
        assert per[c] == pytest.approx(sk.roc_auc_score(y[:, c], scores[:, c]))
    assert M.roc_auc_macro(y, scores) == pytest.approx(sk.roc_auc_score(y, scores, average="macro"))
    assert M.roc_auc(y[:, 0], scores[:, 0]) == pytest.approx(sk.roc_auc_score(y[:, 0], scores[:, 0]))
    # all-tied scores give 0.5
    assert M.roc_auc(y[:, 0], np.zeros(n)) == pytest.approx(0.5)


def test_auc_single_class_label_is_nan_and_excluded():
    rng = np.random.default_rng(5)
    y = (rng.random((100, 3)) < 0.5).astype(float)
    y[:, 1] = 0.0
    s = rng.random((100, 3))
    per = M.roc_auc(y, s)
    assert math.isnan(per[1])
    with pytest.warns(UserWarning, match=r"\[1\]"):
        macro = M.roc_auc_macro(y, s)
    assert macro == pytest.approx(np.mean([per[0], per[2]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = M.multilabel_report(y, s)
    assert r["auc"] == pytest.approx(macro)
    assert r["auc_labels"] == 2.0


def test_auc_multiclass_ovr_matches_sklearn():
    rng = np.random.default_rng(6)
    y = rng.integers(0, 4, size=300)
    logits = rng.normal(size=(300, 4)) + np.eye(4)[y]
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    expected = sk.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert M.roc_auc_macro(y, probs) == pytest.approx(expected)
    assert M.roc_auc_macro(y, logits) == pytest.approx(expected)  # logits are softmaxed
    assert M.classification_report(y, logits)["auc"] == pytest.approx(expected)


def test_auc_nan_targets_ignored():
    rng = np.random.default_rng(7)
    y = (rng.random((200, 2)) < 0.4).astype(float)
    s = rng.random((200, 2)) + 0.2 * y
    y_nan = y.copy()
    y_nan[:50, 0] = np.nan
    assert M.roc_auc(y_nan, s)[0] == pytest.approx(sk.roc_auc_score(y[50:, 0], s[50:, 0]))


# ----------------------------------------------------------------------------- classification


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_classification_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = 4 + seed % 3
    y = rng.integers(0, k, size=250)
    y_hat = np.where(rng.random(250) < 0.5, y, rng.integers(0, k, size=250))
    assert M.accuracy(y, y_hat) == pytest.approx(sk.accuracy_score(y, y_hat))
    assert M.wa(y, y_hat) == pytest.approx(sk.accuracy_score(y, y_hat))
    assert M.ua(y, y_hat) == pytest.approx(sk.balanced_accuracy_score(y, y_hat))
    np.testing.assert_allclose(M.f1_per_class(y, y_hat), sk.f1_score(y, y_hat, average=None, zero_division=0))
    assert M.f1_macro(y, y_hat) == pytest.approx(sk.f1_score(y, y_hat, average="macro", zero_division=0))
    assert M.f1_weighted(y, y_hat) == pytest.approx(sk.f1_score(y, y_hat, average="weighted", zero_division=0))
    np.testing.assert_array_equal(M.confusion_matrix(y, y_hat), sk.confusion_matrix(y, y_hat))


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_classification_missing_classes_and_logits():
    # class 3 never predicted, class 4 only predicted: F1 over the union, UA over true classes
    y = np.array([0, 0, 1, 1, 2, 2, 3, 3, 3])
    y_hat = np.array([0, 1, 1, 1, 2, 4, 0, 2, 4])
    assert M.ua(y, y_hat) == pytest.approx(sk.balanced_accuracy_score(y, y_hat))
    assert M.f1_macro(y, y_hat) == pytest.approx(sk.f1_score(y, y_hat, average="macro", zero_division=0))
    assert M.f1_weighted(y, y_hat) == pytest.approx(sk.f1_score(y, y_hat, average="weighted", zero_division=0))
    np.testing.assert_array_equal(M.confusion_matrix(y, y_hat), sk.confusion_matrix(y, y_hat))
    np.testing.assert_array_equal(
        M.confusion_matrix(y, y_hat, labels=[3, 0, 1]), sk.confusion_matrix(y, y_hat, labels=[3, 0, 1])
    )
    assert M.confusion_matrix(y, y_hat, num_classes=6).shape == (6, 6)
    logits = torch.nn.functional.one_hot(torch.from_numpy(y_hat), 5).float() * 3 - 1
    r = M.classification_report(torch.from_numpy(y), logits)
    assert r["acc"] == pytest.approx(sk.accuracy_score(y, y_hat))
    assert r["wa"] == r["acc"]
    assert r["ua"] == pytest.approx(sk.balanced_accuracy_score(y, y_hat))
    assert r["f1_macro"] == pytest.approx(sk.f1_score(y, y_hat, average="macro", zero_division=0))
    assert {"acc", "wa", "ua", "f1_macro", "f1_weighted", "auc"} <= set(r)
    seen = sorted(set(y) | set(y_hat))
    per_class = sk.f1_score(y, y_hat, labels=seen, average=None, zero_division=0)
    assert [r[f"f1_{c}"] for c in seen] == pytest.approx(list(per_class))
    with pytest.raises(ValueError, match="outside"):
        M.classification_report(y, y_hat, num_classes=4)


# ----------------------------------------------------------------------------- multi-label


@pytest.mark.parametrize("seed", [0, 1])
def test_multilabel_f1_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((150, 6)) < 0.3).astype(int)
    y[:, 5] = 0  # a label never true
    probs = np.clip(0.6 * y + rng.random((150, 6)) * 0.6, 0, 1)
    pred = (probs >= 0.5).astype(int)
    for avg in ("macro", "micro", "weighted", "samples"):
        assert M.multilabel_f1(y, probs, average=avg) == pytest.approx(
            sk.f1_score(y, pred, average=avg, zero_division=0)
        ), avg
    np.testing.assert_allclose(M.multilabel_f1(y, probs, average=None), sk.f1_score(y, pred, average=None, zero_division=0))
    assert M.f1_macro(y, probs) == pytest.approx(sk.f1_score(y, pred, average="macro", zero_division=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = M.multilabel_report(y, probs, names=[f"l{i}" for i in range(6)])
    assert r["acc_subset"] == pytest.approx(sk.accuracy_score(y, pred))
    assert r["acc_label"] == pytest.approx(np.mean(y == pred))
    assert r["f1_micro"] == pytest.approx(sk.f1_score(y, pred, average="micro", zero_division=0))
    assert r["auc"] == pytest.approx(np.mean([sk.roc_auc_score(y[:, c], probs[:, c]) for c in range(5)]))
    assert math.isnan(r["auc_l5"])
    logits = np.log(np.clip(probs, 1e-6, 1 - 1e-6) / np.clip(1 - probs, 1e-6, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r_logits = M.multilabel_report(y, logits, from_logits=True)
    assert r_logits["auc"] == pytest.approx(r["auc"])
    with pytest.raises(ValueError, match="from_logits"):
        M.multilabel_report(y, logits)


def test_mesm_binary_weighted_accuracy_hand_example():
    # P = 2 positives, N = 6 negatives; TP = 1, TN = 4
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.2, 0.1, 0.3, 0.6, 0.7, 0.0, 0.4])
    expected = (1 * 6 / 2 + 4) / (2 * 6)  # = 7/12
    assert M.binary_weighted_accuracy(y, p) == pytest.approx(7 / 12)
    assert M.binary_weighted_accuracy(y, p) == pytest.approx(expected)
    # it equals binary balanced accuracy, not plain accuracy
    assert expected == pytest.approx(sk.balanced_accuracy_score(y, p >= 0.5))
    assert expected != pytest.approx(sk.accuracy_score(y, p >= 0.5))
    both = M.binary_weighted_accuracy(np.stack([y, 1 - y], 1), np.stack([p, 1 - p], 1))
    assert both.shape == (2,)
    assert both[0] == pytest.approx(7 / 12)
    assert M.METRICS["wacc"].fn(np.stack([y, 1 - y], 1), np.stack([p, 1 - p], 1)) == pytest.approx(np.mean(both))


# ----------------------------------------------------------------------------- registry


def test_registry_names_and_directions():
    for name in ("ccc", "ccc_valence", "ccc_arousal", "auc", "acc", "wa", "ua", "f1_macro", "f1_weighted", "mse"):
        spec = M.METRICS[name]
        assert spec.name == name and spec.description
    assert M.METRICS["mse"].higher_is_better is False
    assert M.higher_is_better("ccc") and M.higher_is_better("auc_AU12")
    assert M.higher_is_better("mse_valence") is False
    assert M.higher_is_better("val_ccc_seq_arousal")
    with pytest.raises(KeyError, match="known metrics"):
        M.higher_is_better("bogus")
    rng = np.random.default_rng(9)
    y = rng.integers(0, 3, 60)
    logits = rng.normal(size=(60, 3))
    report = M.classification_report(y, logits)
    for name in ("acc", "wa", "ua", "f1_macro", "f1_weighted", "auc"):
        assert M.METRICS[name].fn(y, logits) == pytest.approx(report[name]), name


def test_reported_summary_metrics_are_what_the_reports_return():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 0, 1, 2])
    assert set(M.REPORTED["classification"]) <= set(M.classification_report(y, rng.random((6, 3))))
    yl = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    assert set(M.REPORTED["multilabel"]) <= set(M.multilabel_report(yl, rng.random((4, 2)), names=("a", "b")))
    assert set(M.REPORTED["regression"]) <= set(M.regression_report(rng.random((5, 2)), rng.random((5, 2))))
