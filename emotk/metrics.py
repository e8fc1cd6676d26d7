"""Evaluation metrics for emotion recognition, in NumPy.

Every function accepts NumPy arrays, Python sequences or torch tensors (moved to the CPU and
detached). Conventions:

- Regression (valence/arousal): ``y_true``/``y_pred`` are ``[N]`` or ``[N, C]``; NaN in ``y_true``
  marks a frame without a valid label (AffWild2's −5) and is ignored column by column.
  Per-column functions return a float for ``[N]`` input and an array of ``C`` floats for ``[N, C]``.
- Single-label classification: ``y_true`` is ``[N]`` class indices; ``y_pred`` is ``[N]`` predicted
  indices or ``[N, K]`` logits/probabilities (argmax is taken).
- Multi-label: ``y_true`` is ``[N, L]`` in {0, 1} (NaN = label not annotated, ignored per column);
  ``y_pred`` is ``[N, L]`` probabilities (thresholded at 0.5 where a decision is needed).

Naming traps this module spells out rather than hides:

- CCC *pooled* over all frames (ABAW challenge papers) vs CCC *per sequence* then averaged (some
  AFEW-VA / SEWA papers) are different numbers: :func:`ccc_pooled` and :func:`ccc_per_sequence`.
- "WA" and "UA": here WA = overall accuracy and UA = mean per-class recall (the usual speech-emotion
  convention), but some papers (e.g. several IEMOCAP multimodal papers) call the class-balanced accuracy
  "weighted accuracy". MESM's binary "weighted accuracy" is yet another formula:
  :func:`binary_weighted_accuracy`.

:data:`METRICS` maps metric names to :class:`MetricSpec`; :func:`regression_report`,
:func:`classification_report` and :func:`multilabel_report` return dicts of floats whose keys are
registered names (or a registered name plus ``_<column>``); :func:`higher_is_better` resolves both.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "MetricSpec",
    "METRICS",
    "get_metric",
    "higher_is_better",
    "ccc",
    "ccc_pooled",
    "ccc_per_sequence",
    "mse",
    "pearson",
    "roc_auc",
    "roc_auc_macro",
    "accuracy",
    "weighted_accuracy",
    "unweighted_accuracy",
    "wa",
    "ua",
    "confusion_matrix",
    "f1_per_class",
    "f1_macro",
    "f1_weighted",
    "multilabel_f1",
    "binary_weighted_accuracy",
    "regression_report",
    "classification_report",
    "multilabel_report",
]


# --------------------------------------------------------------------------------------- helpers


def _np(x) -> np.ndarray:
    """Convert a tensor / array / sequence to a NumPy array without copying when possible."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(getattr(x, "dtype", "")) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _pair_2d(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, bool]:
    """Float arrays of shape [N, C]; the flag says whether the input was 1-D."""
    t = _np(y_true).astype(np.float64)
    p = _np(y_pred).astype(np.float64)
    if t.shape != p.shape:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has shape {p.shape}")
    if t.ndim == 1:
        return t[:, None], p[:, None], True
    if t.ndim != 2:
        raise ValueError(f"expected [N] or [N, C] arrays, got shape {t.shape}")
    return t, p, False


def _out(values: np.ndarray, one_d: bool):
    return float(values[0]) if one_d else values


def _ccc_1d(t: np.ndarray, p: np.ndarray) -> float:
    valid = ~np.isnan(t)
    t, p = t[valid], p[valid]
    if t.size < 2:
        return math.nan
    mt, mp = t.mean(), p.mean()
    vt, vp = t.var(), p.var()  # biased (ddof=0), as in the ABAW evaluation code
    cov = ((t - mt) * (p - mp)).mean()
    den = vt + vp + (mt - mp) ** 2
    if den == 0.0:
        return math.nan
    return float(2.0 * cov / den)


# --------------------------------------------------------------------------------------- regression


def ccc_pooled(y_true, y_pred):
    """Concordance correlation coefficient per column, pooled over all valid frames.

    ``CCC = 2·cov(t, p) / (var(t) + var(p) + (mean(t) − mean(p))²)`` with biased (ddof=0) moments,
    the ABAW definition. Frames whose target is NaN are ignored. ABAW challenge papers pool every
    frame of the validation set into one CCC, as here; some papers instead average a per-video CCC
    (:func:`ccc_per_sequence`), which gives different, usually lower, numbers. Returns NaN for a
    column with fewer than 2 valid frames or with both target and prediction constant and equal.
    """
    t, p, one_d = _pair_2d(y_true, y_pred)
    return _out(np.array([_ccc_1d(t[:, c], p[:, c]) for c in range(t.shape[1])]), one_d)


def ccc(y_true, y_pred):
    """CCC per column, pooled over all valid frames; same as :func:`ccc_pooled`."""
    return ccc_pooled(y_true, y_pred)


def _split_sequences(y_true, y_pred, groups) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
    if groups is None:
        if not isinstance(y_true, (list, tuple)) or not isinstance(y_pred, (list, tuple)):
            raise ValueError("ccc_per_sequence needs lists of per-sequence arrays, or a groups array")
        if len(y_true) != len(y_pred):
            raise ValueError(f"{len(y_true)} target sequences but {len(y_pred)} prediction sequences")
        pairs = [_pair_2d(t, p) for t, p in zip(y_true, y_pred)]
        if not pairs:
            raise ValueError("no sequences given")
        return [a for a, _, _ in pairs], [b for _, b, _ in pairs], pairs[0][2]
    t, p, one_d = _pair_2d(y_true, y_pred)
    g = _np(groups)
    if g.shape != (t.shape[0],):
        raise ValueError(f"groups has shape {g.shape}, expected ({t.shape[0]},)")
    _, inverse = np.unique(g, return_inverse=True)
    idx = [np.flatnonzero(inverse == k) for k in range(inverse.max() + 1)] if g.size else []
    return [t[i] for i in idx], [p[i] for i in idx], one_d


def ccc_per_sequence(y_true, y_pred, groups=None):
    """CCC per column, computed per sequence (video) then averaged over sequences.

    Either pass lists of per-sequence arrays (``[T_i]`` or ``[T_i, C]``), or flat arrays with a
    ``groups`` array of sequence ids. NaN targets are ignored; a sequence whose CCC is undefined for
    a column (fewer than 2 valid frames, or constant target and prediction that agree) is left out of
    that column's mean. Some papers report this; ABAW papers pool (:func:`ccc_pooled`).
    """
    ts, ps, one_d = _split_sequences(y_true, y_pred, groups)
    n_cols = ts[0].shape[1]
    per_seq = np.array([[_ccc_1d(t[:, c], p[:, c]) for c in range(n_cols)] for t, p in zip(ts, ps)])
    out = np.full(n_cols, math.nan)
    for c in range(n_cols):
        col = per_seq[:, c]
        col = col[~np.isnan(col)]
        if col.size:
            out[c] = col.mean()
    return _out(out, one_d)


def mse(y_true, y_pred):
    """Mean squared error per column over frames with a valid (non-NaN) target."""
    t, p, one_d = _pair_2d(y_true, y_pred)
    out = np.full(t.shape[1], math.nan)
    for c in range(t.shape[1]):
        valid = ~np.isnan(t[:, c])
        if valid.any():
            out[c] = np.mean((t[valid, c] - p[valid, c]) ** 2)
    return _out(out, one_d)


def pearson(y_true, y_pred):
    """Pearson correlation per column over frames with a valid target; NaN when either is constant."""
    t, p, one_d = _pair_2d(y_true, y_pred)
    out = np.full(t.shape[1], math.nan)
    for c in range(t.shape[1]):
        valid = ~np.isnan(t[:, c])
        a, b = t[valid, c], p[valid, c]
        if a.size < 2:
            continue
        a, b = a - a.mean(), b - b.mean()
        den = math.sqrt(float((a * a).sum() * (b * b).sum()))
        if den > 0:
            out[c] = float((a * b).sum() / den)
    return _out(out, one_d)


# --------------------------------------------------------------------------------------- AUC-ROC


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    new_group = np.empty(xs.size, dtype=bool)
    new_group[:1] = True
    new_group[1:] = xs[1:] != xs[:-1]
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], xs.size)
    avg = (starts + 1 + ends) / 2.0
    ranks = np.empty(xs.size)
    ranks[order] = avg[np.cumsum(new_group) - 1]
    return ranks


def _auc_1d(t: np.ndarray, s: np.ndarray) -> float:
    valid = ~np.isnan(t)
    t, s = t[valid], s[valid]
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    pos = t > 0.5
    n_pos = int(pos.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(s)
    # Mann-Whitney U: ties count one half, which equals the trapezoidal ROC area (sklearn).
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _softmax_if_needed(scores: np.ndarray) -> np.ndarray:
    """Rows that are already probabilities stay; otherwise softmax (logits)."""
    if scores.min() >= 0 and scores.max() <= 1 and np.allclose(scores.sum(axis=1), 1.0, atol=1e-4):
        return scores
    z = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _auc_inputs(y_true, y_score) -> tuple[np.ndarray, np.ndarray, bool]:
    t = _np(y_true)
    s = _np(y_score).astype(np.float64)
    if t.ndim == 1 and s.ndim == 2:  # multiclass: one-vs-rest on class probabilities
        if s.shape[0] != t.shape[0]:
            raise ValueError(f"y_true has {t.shape[0]} rows but y_score has {s.shape[0]}")
        s = _softmax_if_needed(s)
        t = (t.astype(np.int64)[:, None] == np.arange(s.shape[1])[None, :]).astype(np.float64)
        return t, s, False
    t2, s2, one_d = _pair_2d(t, s)
    return t2, s2, one_d


def roc_auc(y_true, y_score):
    """Area under the ROC curve per label, from ranks (ties count one half, as in scikit-learn).

    ``y_true`` ``[N]`` or ``[N, L]`` binary (NaN = not annotated, ignored), ``y_score`` the same shape
    (any monotonic score: probabilities or logits). With ``y_true`` ``[N]`` class indices and
    ``y_score`` ``[N, K]`` it is one-vs-rest per class (logits are softmaxed first). A label whose
    valid targets are all one class has no ROC curve: its AUC is NaN.
    """
    t, s, one_d = _auc_inputs(y_true, y_score)
    return _out(np.array([_auc_1d(t[:, c], s[:, c]) for c in range(t.shape[1])]), one_d)


def roc_auc_macro(y_true, y_score) -> float:
    """Mean AUC-ROC over labels (multi-label, or one-vs-rest for class indices + class scores).

    Labels whose valid targets contain a single class have undefined AUC; they are excluded from
    the mean with a warning naming them (scikit-learn raises instead). NaN if no label is defined.
    """
    per = np.atleast_1d(roc_auc(y_true, y_score))
    undefined = np.flatnonzero(np.isnan(per))
    if undefined.size:
        warnings.warn(
            f"AUC-ROC undefined for label column(s) {undefined.tolist()} (only one class present); "
            f"macro AUC averages the other {per.size - undefined.size} label(s)",
            stacklevel=2,
        )
    if undefined.size == per.size:
        return math.nan
    return float(np.nanmean(per))


# --------------------------------------------------------------------------------------- classification


def _labels(y) -> np.ndarray:
    a = _np(y)
    if a.ndim == 2:
        return a.argmax(axis=1)
    if a.ndim != 1:
        raise ValueError(f"expected [N] labels or [N, K] scores, got shape {a.shape}")
    return a


def _class_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    t = _labels(y_true)
    p = _labels(y_pred)
    if t.shape != p.shape:
        raise ValueError(f"{t.shape[0]} targets but {p.shape[0]} predictions")
    if t.size == 0:
        raise ValueError("no samples")
    return t, p


def accuracy(y_true, y_pred) -> float:
    """Fraction of samples whose predicted class (labels, or argmax of logits) equals the target."""
    t, p = _class_pair(y_true, y_pred)
    return float(np.mean(t == p))


def weighted_accuracy(y_true, y_pred) -> float:
    """WA: overall accuracy, each sample weighted equally (so classes weigh by their frequency).

    Naming warning: some papers (e.g. several IEMOCAP multimodal ones) swap WA and UA and call the
    class-balanced accuracy "weighted accuracy"; check which formula a paper used before comparing.
    """
    return accuracy(y_true, y_pred)


def unweighted_accuracy(y_true, y_pred) -> float:
    """UA: mean per-class recall over the classes present in ``y_true`` (balanced accuracy).

    Naming warning: some papers call this "weighted accuracy" (WA) — check the formula, not the name.
    """
    t, p = _class_pair(y_true, y_pred)
    classes = np.unique(t)
    return float(np.mean([np.mean(p[t == c] == c) for c in classes]))


def recall_per_class(y_true, y_pred) -> dict[int, float]:
    """Recall of every class present in ``y_true``: the share of its samples predicted as it."""
    t, p = _class_pair(y_true, y_pred)
    return {int(c): float(np.mean(p[t == c] == c)) for c in np.unique(t)}


wa = weighted_accuracy
ua = unweighted_accuracy


def confusion_matrix(y_true, y_pred, labels=None, num_classes: int | None = None) -> np.ndarray:
    """Counts ``[K, K]``: row = true class, column = predicted class.

    Class order: ``labels`` if given, else ``range(num_classes)``, else the sorted union of the
    values in ``y_true`` and ``y_pred`` (as scikit-learn). Pairs outside ``labels`` are not counted.
    """
    t, p = _class_pair(y_true, y_pred)
    if labels is None:
        labels = np.arange(num_classes) if num_classes is not None else np.union1d(t, p)
    labels = np.asarray(labels)
    k = labels.size
    order = np.argsort(labels, kind="mergesort")
    sorted_labels = labels[order]

    def index(v):
        pos = np.clip(np.searchsorted(sorted_labels, v), 0, k - 1)
        found = sorted_labels[pos] == v
        return order[pos], found

    ti, tf = index(t)
    pi, pf = index(p)
    keep = tf & pf
    return np.bincount(ti[keep] * k + pi[keep], minlength=k * k).reshape(k, k).astype(np.int64)


def _f1_from_counts(tp, fp, fn) -> np.ndarray:
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


def f1_per_class(y_true, y_pred, labels=None, num_classes: int | None = None) -> np.ndarray:
    """F1 of each class (order as in :func:`confusion_matrix`); 0 where a class is never true nor predicted.

    With a 2-D ``y_true`` this is the multi-label per-label F1 at threshold 0.5.
    """
    if _np(y_true).ndim == 2:
        return multilabel_f1(y_true, y_pred, average=None)
    cm = confusion_matrix(y_true, y_pred, labels=labels, num_classes=num_classes)
    tp = np.diag(cm)
    return _f1_from_counts(tp, cm.sum(axis=0) - tp, cm.sum(axis=1) - tp)


def f1_macro(y_true, y_pred, labels=None, num_classes: int | None = None) -> float:
    """Unweighted mean of per-class F1 (classes: sorted union of true and predicted, as scikit-learn).

    With a 2-D ``y_true`` this is the multi-label macro F1 at threshold 0.5.
    """
    if _np(y_true).ndim == 2:
        return multilabel_f1(y_true, y_pred, average="macro")
    return float(np.mean(f1_per_class(y_true, y_pred, labels=labels, num_classes=num_classes)))


def f1_weighted(y_true, y_pred, labels=None, num_classes: int | None = None) -> float:
    """Mean of per-class F1 weighted by each class's support in ``y_true``.

    With a 2-D ``y_true`` this is the multi-label support-weighted F1 at threshold 0.5.
    """
    if _np(y_true).ndim == 2:
        return multilabel_f1(y_true, y_pred, average="weighted")
    cm = confusion_matrix(y_true, y_pred, labels=labels, num_classes=num_classes)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    f1 = _f1_from_counts(tp, cm.sum(axis=0) - tp, support - tp)
    if support.sum() == 0:
        return 0.0
    return float(np.sum(f1 * support) / support.sum())


# --------------------------------------------------------------------------------------- multi-label


def _multilabel_pair(y_true, y_prob, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Targets (float, NaN = missing), hard predictions (bool) and the valid mask, all [N, L]."""
    t = _np(y_true).astype(np.float64)
    s = _np(y_prob).astype(np.float64)
    if t.ndim == 1:
        t, s = t[:, None], s[:, None]
    if t.shape != s.shape or t.ndim != 2:
        raise ValueError(f"y_true has shape {t.shape} but y_pred has shape {s.shape}")
    return t, s >= threshold, ~np.isnan(t)


def multilabel_f1(y_true, y_prob, threshold: float = 0.5, average: str | None = "macro"):
    """Multi-label F1 with predictions ``prob >= threshold``.

    ``average``: None (per label, array), "macro" (mean over labels), "micro" (pooled counts),
    "weighted" (by label support), "samples" (mean over samples; rows with a NaN target are
    dropped). Ill-defined F1 (nothing true and nothing predicted) counts as 0, as scikit-learn's
    ``zero_division=0``. NaN targets are ignored per label.
    """
    t, pred, valid = _multilabel_pair(y_true, y_prob, threshold)
    pos = (t > 0.5) & valid
    pred_v = pred & valid
    if average == "samples":
        rows = valid.all(axis=1)
        tp = (pos & pred_v)[rows].sum(axis=1)
        fp = (~pos & pred_v)[rows].sum(axis=1)
        fn = (pos & ~pred_v)[rows].sum(axis=1)
        return float(np.mean(_f1_from_counts(tp, fp, fn))) if rows.any() else math.nan
    tp = (pos & pred_v).sum(axis=0)
    fp = (~pos & pred_v & valid).sum(axis=0)
    fn = (pos & ~pred_v).sum(axis=0)
    if average == "micro":
        return float(_f1_from_counts(tp.sum(), fp.sum(), fn.sum()))
    per = _f1_from_counts(tp, fp, fn)
    if average is None:
        return per
    if average == "macro":
        return float(per.mean())
    if average == "weighted":
        support = pos.sum(axis=0)
        return float(np.sum(per * support) / support.sum()) if support.sum() else 0.0
    raise ValueError(f"unknown average {average!r}: use None, 'macro', 'micro', 'weighted' or 'samples'")


def binary_weighted_accuracy(y_true, y_pred, threshold: float = 0.5):
    """MESM's weighted accuracy for a binary (per-emotion) decision: ``(TP·N/P + TN) / (2N)``.

    P = positives, N = negatives in ``y_true``; ``y_pred`` holds probabilities (or 0/1 decisions),
    positive when ``>= threshold``. Algebraically this is (TPR + TNR) / 2, the binary balanced
    accuracy — not the "WA" (overall accuracy) of :func:`weighted_accuracy`. ``[N]`` → float,
    ``[N, L]`` → one value per label (NaN targets ignored; NaN where P or N is 0).
    """
    t, pred, valid = _multilabel_pair(y_true, y_pred, threshold)
    out = np.full(t.shape[1], math.nan)
    for c in range(t.shape[1]):
        tc, pc = t[valid[:, c], c] > 0.5, pred[valid[:, c], c]
        n_pos, n_neg = int(tc.sum()), int((~tc).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        tp = int((tc & pc).sum())
        tn = int((~tc & ~pc).sum())
        out[c] = (tp * n_neg / n_pos + tn) / (2 * n_neg)
    return float(out[0]) if _np(y_true).ndim == 1 else out


# --------------------------------------------------------------------------------------- reports


def _check_names(names: Sequence[str], n_cols: int) -> list[str]:
    names = list(names)
    if len(names) != n_cols:
        raise ValueError(f"{n_cols} columns but {len(names)} names {names}")
    return names


def _nanmean(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


def regression_report(y_true, y_pred, names: Sequence[str] = ("valence", "arousal"), groups=None) -> dict[str, float]:
    """Regression metrics on ``[N, C]`` (or ``[N]``) predictions, as a dict of floats.

    Keys: ``ccc`` (mean over columns of the pooled CCC — the ABAW VA score), ``ccc_<name>``,
    ``mse``, ``mse_<name>``, ``pearson``, ``pearson_<name>``; with ``groups`` (sequence ids per frame)
    also ``ccc_seq`` and ``ccc_seq_<name>`` (per-sequence CCC averaged over sequences).
    """
    t, p, one_d = _pair_2d(y_true, y_pred)
    # A single unnamed column (``[N]`` input with the default names) gets only the top-level keys.
    names = [] if one_d and len(names) != 1 else _check_names(names, t.shape[1])
    out: dict[str, float] = {}
    for key, values in (("ccc", ccc_pooled(t, p)), ("mse", mse(t, p)), ("pearson", pearson(t, p))):
        out[key] = _nanmean(values)
        for name, v in zip(names, values):
            out[f"{key}_{name}"] = float(v)
    if groups is not None:
        seq = ccc_per_sequence(t, p, groups=groups)
        out["ccc_seq"] = _nanmean(seq)
        for name, v in zip(names, seq):
            out[f"ccc_seq_{name}"] = float(v)
    return out


def classification_report(y_true, y_pred, num_classes: int | None = None) -> dict[str, float]:
    """Single-label metrics: ``acc``, ``wa`` (= acc), ``ua`` (mean per-class recall), ``f1_macro``,
    ``f1_weighted``, ``recall_<k>`` for every class k present in the targets, ``f1_<k>`` for every class
    in the targets or predictions; plus ``auc``
    (one-vs-rest macro AUC-ROC) when ``y_pred`` is ``[N, K]`` scores.

    ``y_pred`` is ``[N]`` predicted labels or ``[N, K]`` logits/probabilities. ``num_classes``, if
    given, is checked against the labels; F1 averages over the classes seen in targets or predictions
    (scikit-learn's default), UA over the classes seen in targets.
    """
    t, p = _class_pair(y_true, y_pred)
    if num_classes is not None:
        bad = (t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"label outside 0..{num_classes - 1} at sample {i}: true {t[i]}, predicted {p[i]}")
    out = {
        "acc": accuracy(t, p),
        "wa": weighted_accuracy(t, p),
        "ua": unweighted_accuracy(t, p),
        "f1_macro": f1_macro(t, p),
        "f1_weighted": f1_weighted(t, p),
        **{f"recall_{c}": r for c, r in recall_per_class(t, p).items()},
    }
    seen = np.union1d(t, p)  # per-class F1 over the classes seen in targets or predictions (as f1_macro)
    out.update({f"f1_{int(c)}": float(f) for c, f in zip(seen, f1_per_class(t, p, labels=list(seen)))})
    scores = _np(y_pred)
    if scores.ndim == 2 and scores.shape[1] > 1 and t.min() >= 0 and t.max() < scores.shape[1]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["auc"] = roc_auc_macro(t, scores)
    return out


def multilabel_report(
    y_true,
    probs,
    names: Sequence[str] | None = None,
    threshold: float = 0.5,
    from_logits: bool = False,
) -> dict[str, float]:
    """Multi-label metrics from ``[N, L]`` targets and probabilities, as a dict of floats.

    Keys: ``auc`` (macro AUC-ROC over labels with both classes present; ``auc_labels`` says how many
    entered the mean), ``f1_macro``, ``f1_micro``, ``f1_weighted``, ``f1_samples`` (threshold 0.5),
    ``wacc`` (MESM's binary weighted accuracy, mean over labels), ``acc_label`` (mean per-label binary
    accuracy), ``acc_subset`` (all labels of a sample right); with ``names`` also ``auc_<name>``,
    ``f1_<name>``, ``wacc_<name>``. ``from_logits=True`` applies a sigmoid first.
    """
    s = _np(probs).astype(np.float64)
    if from_logits:
        s = 1.0 / (1.0 + np.exp(-s))
    elif s.size and (s.min() < 0 or s.max() > 1):
        raise ValueError("multilabel_report expects probabilities in [0, 1]; pass from_logits=True for logits")
    t, pred, valid = _multilabel_pair(y_true, s, threshold)
    if t.shape[1] < 1:
        raise ValueError("no label columns")
    auc_per = np.atleast_1d(roc_auc(t, s))
    wacc_per = np.atleast_1d(binary_weighted_accuracy(t, s, threshold))
    f1_per = multilabel_f1(t, s, threshold, average=None)
    correct = (pred == (t > 0.5)) & valid
    rows = valid.all(axis=1)
    out = {
        "auc": _nanmean(auc_per),
        "auc_labels": float(np.sum(~np.isnan(auc_per))),
        "f1_macro": float(f1_per.mean()),
        "f1_micro": multilabel_f1(t, s, threshold, "micro"),
        "f1_weighted": multilabel_f1(t, s, threshold, "weighted"),
        "f1_samples": multilabel_f1(t, s, threshold, "samples"),
        "wacc": _nanmean(wacc_per),
        "acc_label": float(correct.sum() / valid.sum()) if valid.any() else math.nan,
        "acc_subset": float(correct[rows].all(axis=1).mean()) if rows.any() else math.nan,
    }
    if names is not None:
        for i, name in enumerate(_check_names(names, t.shape[1])):
            out[f"auc_{name}"] = float(auc_per[i])
            out[f"f1_{name}"] = float(f1_per[i])
            out[f"wacc_{name}"] = float(wacc_per[i])
    return out


# --------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class MetricSpec:
    """A named scalar metric: ``fn(y_true, y_pred) -> float`` and the direction of "better"."""

    name: str
    fn: Callable[..., float]
    higher_is_better: bool
    description: str


def _column(fn, c: int):
    def f(y_true, y_pred) -> float:
        t, p, one_d = _pair_2d(y_true, y_pred)
        if t.shape[1] <= c:
            raise ValueError(f"metric needs column {c}, predictions have {t.shape[1]} column(s)")
        return float(np.atleast_1d(fn(t[:, c], p[:, c]))[0])

    return f


def _mean_of(fn):
    return lambda y_true, y_pred: _nanmean(np.atleast_1d(fn(y_true, y_pred)))


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in [
        MetricSpec("ccc", _mean_of(ccc_pooled), True,
                   "Mean over columns (e.g. valence, arousal) of the CCC pooled over all valid frames (ABAW)"),
        MetricSpec("ccc_valence", _column(ccc_pooled, 0), True, "Pooled CCC of column 0 (valence)"),
        MetricSpec("ccc_arousal", _column(ccc_pooled, 1), True, "Pooled CCC of column 1 (arousal)"),
        MetricSpec("ccc_seq", lambda t, p: _nanmean(np.atleast_1d(ccc_per_sequence(t, p))), True,
                   "CCC per sequence averaged over sequences (lists of per-sequence arrays), mean over columns"),
        MetricSpec("mse", _mean_of(mse), False, "Mean squared error over valid frames, mean over columns"),
        MetricSpec("pearson", _mean_of(pearson), True, "Pearson correlation over valid frames, mean over columns"),
        MetricSpec("auc", roc_auc_macro, True,
                   "Macro AUC-ROC over labels from probabilities (multi-label; one-vs-rest for classes); "
                   "single-class labels excluded"),
        MetricSpec("auc_labels", lambda t, p: float(np.sum(~np.isnan(np.atleast_1d(roc_auc(t, p))))), True,
                   "Number of labels with both classes present (entering the macro AUC)"),
        MetricSpec("acc", accuracy, True, "Accuracy: fraction of samples classified correctly"),
        MetricSpec("wa", weighted_accuracy, True,
                   "WA = overall accuracy (some papers use 'WA' for class-balanced accuracy)"),
        MetricSpec("ua", unweighted_accuracy, True, "UA = mean per-class recall (balanced accuracy)"),
        MetricSpec("recall", unweighted_accuracy, True, "Per-class recall (recall_<k>: class k); mean = UA"),
        MetricSpec("f1", f1_macro, True, "Per-class F1 (f1_<k>: class k); their mean = f1_macro"),
        MetricSpec("f1_macro", f1_macro, True, "Macro F1 over classes (multi-label: over labels, threshold 0.5)"),
        MetricSpec("f1_weighted", f1_weighted, True, "Support-weighted F1 (multi-label: threshold 0.5)"),
        MetricSpec("f1_micro", lambda t, p: multilabel_f1(t, p, average="micro"), True,
                   "Multi-label micro F1 (pooled counts), threshold 0.5"),
        MetricSpec("f1_samples", lambda t, p: multilabel_f1(t, p, average="samples"), True,
                   "Multi-label F1 per sample averaged over samples, threshold 0.5"),
        MetricSpec("wacc", _mean_of(binary_weighted_accuracy), True,
                   "MESM's binary weighted accuracy (TP·N/P + TN)/(2N), mean over labels"),
        MetricSpec("acc_label", lambda t, p: multilabel_report(t, p)["acc_label"], True,
                   "Multi-label: mean per-label binary accuracy, threshold 0.5"),
        MetricSpec("acc_subset", lambda t, p: multilabel_report(t, p)["acc_subset"], True,
                   "Multi-label: fraction of samples with every label right (exact match), threshold 0.5"),
    ]
}


#: The summary metrics (one number each, no ``_<column>`` suffix) of each report function's dict.
REPORTED = {
    "classification": ("acc", "wa", "ua", "f1_macro", "f1_weighted", "auc"),
    "multilabel": ("auc", "wacc", "f1_macro", "f1_micro", "f1_samples", "f1_weighted", "acc_label", "acc_subset"),
    "regression": ("ccc", "mse", "pearson"),
}


def get_metric(name: str) -> MetricSpec:
    """The registered metric ``name``; a ``KeyError`` lists the known names."""
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}") from None


def higher_is_better(name: str) -> bool:
    """Direction of a metric name from a report: a registered name, or one plus ``_<column>``
    (e.g. ``mse_valence``, ``auc_AU12``, ``val_ccc``'s stem ``ccc``); the longest registered prefix wins.
    """
    if name.startswith("val_") and name[4:]:
        name = name[4:]
    if name in METRICS:
        return METRICS[name].higher_is_better
    best = None
    for key in METRICS:
        if name.startswith(key + "_") and (best is None or len(key) > len(best)):
            best = key
    if best is None:
        raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(sorted(METRICS))}")
    return METRICS[best].higher_is_better
