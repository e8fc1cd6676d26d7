"""Temporal models on cached frame features ``[B, T, D]``: recurrent baselines.

All models here map ``[B, T, in_dim]`` to ``[B, T, out_dim]`` (per-frame heads) or ``[B, out_dim]``
(``head="last"``).
"""

from __future__ import annotations

import torch
from torch import nn

from emotk.models.heads import TemporalHead
from emotk.models.registry import Preset, register_model, register_preset


class RecurrentModel(nn.Module):
    def __init__(self, cell: str, in_dim: int, hidden: int, layers: int, out_dim: int, head: str, dropout: float, head_relu: bool):
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(in_dim, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.head = TemporalHead(hidden, out_dim, head, pre_relu=head_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y)


@register_model("gru", family="temporal", causal=True, description="GRU over frame features (NAC-TCN's GRU baseline)")
def gru(*, in_dim: int = 440, out_dim: int = 2, head: str = "frame_tanh", hidden: int = 440, layers: int = 4,
        dropout: float = 0.0, head_relu: bool = False) -> nn.Module:
    return RecurrentModel("gru", in_dim, hidden, layers, out_dim, head, dropout, head_relu)


@register_model("lstm", family="temporal", causal=True, description="LSTM over frame features (NAC-TCN's LSTM baseline)")
def lstm(*, in_dim: int = 440, out_dim: int = 2, head: str = "frame_tanh", hidden: int = 440, layers: int = 4,
         dropout: float = 0.0, head_relu: bool = False) -> nn.Module:
    return RecurrentModel("lstm", in_dim, hidden, layers, out_dim, head, dropout, head_relu)


register_preset(Preset(
    "gru", "sm", "affwild2", dict(in_dim=440, out_dim=2, head="frame_tanh", hidden=440, layers=4),
    seq_len=128, params_paper=4_657_842, macs_paper=597.0,
    note="GRU(440→440, 4 layers) + Linear(440, 2); the paper's 4.66M / 597 MMac at T=128",
))
