"""End to end: a frame encoder (any torchvision classification model, classifier removed) in front of
a temporal model, trained as one network from face crops.

``EndToEnd(encoder, temporal)`` maps crops ``[B, T, 3, S, S]`` (floats in [0, 1]) to the temporal
model's output: the crops are ImageNet-normalised, encoded frame by frame (``[B·T, 3, S, S]`` →
``[B·T, D]``), reshaped to ``[B, T, D]`` and passed on. Module names for protocols: ``encoder``
(freeze it, or give it its own learning rate: ``groups: {encoder: {lr_scale: 0.1}}``) and
``temporal``. On CUDA the encoder runs channels-last; ``checkpointing`` recomputes the encoder's
activations in the backward pass instead of keeping them (less memory, about one more encoder
forward of time; BatchNorm running statistics are then updated twice per step).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EndToEnd(nn.Module):
    def __init__(self, encoder: nn.Module, temporal: nn.Module, checkpointing: bool = False, channels_last: bool = True):
        super().__init__()
        self.encoder, self.temporal = encoder, temporal
        self.checkpointing, self.channels_last = checkpointing, channels_last
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def encode(self, crops: torch.Tensor) -> torch.Tensor:
        b, t = crops.shape[:2]
        x = (crops.reshape(b * t, *crops.shape[2:]) - self.mean) / self.std
        if self.channels_last and x.is_cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.checkpointing and self.training and torch.is_grad_enabled():
            feats = checkpoint(self.encoder, x, use_reentrant=False)
        else:
            feats = self.encoder(x)
        return feats.reshape(b, t, -1)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.encode(crops))
