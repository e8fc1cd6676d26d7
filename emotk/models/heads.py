"""Output heads shared by the temporal models: ``[B, T, C]`` features → predictions.

- ``frame_tanh``: per-frame ReLU → Linear → Tanh (valence/arousal regression in [-1, 1]).
- ``frame_linear``: per-frame Linear (regression without squashing, or per-frame logits).
- ``last``: last time step → ReLU → Dropout(0.5) → Linear (EmoReact's multi-label logits).
- ``none``: the backbone output unchanged (to count a temporal network alone, as the NAC-TCN paper did).
"""

from __future__ import annotations

import torch
from torch import nn

from emotk.errors import ModelError

HEADS = ("frame_tanh", "frame_linear", "last", "none")


class TemporalHead(nn.Module):
    def __init__(self, in_ch: int, out_dim: int, kind: str = "frame_tanh", dropout: float = 0.5, pre_relu: bool = True):
        super().__init__()
        if kind not in HEADS:
            raise ModelError(f"unknown head {kind!r}; choose one of {HEADS}")
        self.kind = kind
        if kind == "none":
            self.net = nn.Identity()
        elif kind == "last":
            self.net = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(in_ch, out_dim))
        else:
            layers: list[nn.Module] = [nn.ReLU()] if pre_relu else []
            layers.append(nn.Linear(in_ch, out_dim))
            if kind == "frame_tanh":
                layers.append(nn.Tanh())
            self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "last":
            x = x[:, -1]
        return self.net(x)
