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


def _rnn_presets(cell: str, published: dict) -> None:
    """Presets of the NAC-TCN paper's recurrent baselines (docs/models.md, "Baselines")."""
    aff, emo = published["affwild2"], published["emoreact"]
    register_preset(Preset(
        cell, "sm", "affwild2", dict(in_dim=440, hidden=440, layers=4),
        seq_len=128, params_paper=aff[0], params_published=aff[1], macs_published=aff[2],
        paper_count={"head": "frame_linear", "out_dim": 2}, macs_reproduced=True,
        note=f"{cell.upper()}(440→440, 4 layers) + Linear(440, 2); paper Table 1 (ptflops RNN rule at T=128)",
    ))
    register_preset(Preset(
        cell, "sm", "emoreact", dict(in_dim=784, hidden=440, layers=1),
        seq_len=128, params_paper=emo[0], params_published=emo[1], macs_published=emo[2],
        paper_count={"head": "last", "out_dim": 8}, macs_reproduced=True,
        note=f"{cell.upper()}(784→440, 1 layer) + last-step Linear(440, 8) — commented in emoreact/model.py; Table 2",
    ))
    register_preset(Preset(
        cell, "sm", None, dict(in_dim=440, hidden=440, layers=4), seq_len=128,
        note=f"any dataset: the AffWild2 {cell.upper()} (the paper's AFEW-VA configuration is not recoverable)",
    ))


_rnn_presets("gru", {"affwild2": (4_657_842, 4.66e6, 597.0), "emoreact": (1_621_848, 1.62e6, 208.0)})
_rnn_presets("lstm", {"affwild2": (6_210_162, 6.21e6, 797.0), "emoreact": (2_161_288, 2.16e6, 277.0)})
