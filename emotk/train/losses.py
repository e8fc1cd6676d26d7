"""Losses per task kind; every loss takes (prediction, target, valid-frame mask, **options).

Options come from a protocol stage's ``loss:`` section (e.g. ``{label_smoothing: 0.1}`` for the
classification losses); :func:`check_loss_options` rejects an option a loss does not have.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from emotk.errors import RunError


def ccc_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 − mean over target columns of the CCC pooled over the batch's valid frames.

    Covariance and variances are the biased (population) ones; the released code's ``torch.var``
    (unbiased) differs by a factor n/(n−1), negligible for the thousands of frames in a batch.
    """
    p = pred[valid].float()
    t = target[valid].float()
    pm, tm = p.mean(0), t.mean(0)
    cov = ((p - pm) * (t - tm)).mean(0)
    ccc = 2 * cov / (p.var(0, unbiased=False) + t.var(0, unbiased=False) + (pm - tm) ** 2 + 1e-8)
    return 1 - ccc.mean()


def bce_loss(pred, target, valid, *, pos_weight: list[float] | None = None):
    weight = None if pos_weight is None else torch.tensor(pos_weight, device=pred.device, dtype=torch.float32)
    return F.binary_cross_entropy_with_logits(pred.float(), target.float(), pos_weight=weight)


def clip_ce_loss(pred, target, valid, *, label_smoothing: float = 0.0):
    if pred.dim() == 3:  # per-frame logits: average over the real frames
        w = valid.float().unsqueeze(-1)
        pred = (pred * w).sum(1) / w.sum(1).clamp(min=1)
    return F.cross_entropy(pred.float(), target.view(-1).long(), label_smoothing=label_smoothing)


def frame_ce_loss(pred, target, valid, *, label_smoothing: float = 0.0):
    return F.cross_entropy(pred[valid].float(), target[valid][..., 0].long(), label_smoothing=label_smoothing)


LOSSES = {
    "frame_regression": ccc_loss,
    "clip_multilabel": bce_loss,
    "clip_classification": clip_ce_loss,
    "frame_classification": frame_ce_loss,
}


def check_loss_options(fn, options: dict, where: str) -> dict:
    known = [n for n, p in inspect.signature(fn).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise RunError(f"{where}: the loss {fn.__name__} has no option {unknown[0]!r}; "
                       f"its options: {', '.join(known) or '(none)'}.")
    return dict(options)
