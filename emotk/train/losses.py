"""Losses per task kind; every loss takes (prediction, target, valid-frame mask)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def bce_loss(pred, target, valid):
    return F.binary_cross_entropy_with_logits(pred.float(), target.float())


def clip_ce_loss(pred, target, valid):
    if pred.dim() == 3:  # per-frame logits: average over the real frames
        w = valid.float().unsqueeze(-1)
        pred = (pred * w).sum(1) / w.sum(1).clamp(min=1)
    return F.cross_entropy(pred.float(), target.view(-1).long())


def frame_ce_loss(pred, target, valid):
    return F.cross_entropy(pred[valid].float(), target[valid][..., 0].long())


LOSSES = {
    "frame_regression": ccc_loss,
    "clip_multilabel": bce_loss,
    "clip_classification": clip_ce_loss,
    "frame_classification": frame_ce_loss,
}
