"""Attention baselines of the NAC-TCN paper on frame features ``[B, T, D]``.

- ``attn``: one multi-head self-attention layer over time (non-causal by default, as the paper's
  "Attn."; ``causal=True`` masks the future; ``batch_axis_bug=True`` reproduces the released code,
  which omitted ``batch_first`` and so attended across the clips of a batch at each time step).
- ``gru_attn`` / ``lstm_attn``: RNN, then the upstream ABAW3 "local attention" twice
  (a = LA(h); m = (h + a)/2; out = LA(m)), causal, parameter-free, window configurable.
- ``transformer``: causal Transformer encoder (pre-norm, sinusoidal positions).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from emotk.errors import ModelError
from emotk.models.heads import TemporalHead
from emotk.models.na import na1d_torch
from emotk.models.registry import Preset, register_model, register_preset

# --------------------------------------------------------------------------------------------------
# attn


class SelfAttentionModel(nn.Module):
    def __init__(self, in_dim: int, heads: int, dropout: float, causal: bool, batch_axis_bug: bool,
                 out_dim: int, head: str, head_relu: bool):
        super().__init__()
        if in_dim % heads:
            raise ModelError(f"attn: in_dim {in_dim} is not divisible by heads {heads}; pass -o heads=N")
        self.causal, self.batch_axis_bug = causal, batch_axis_bug
        self.attn = nn.MultiheadAttention(in_dim, heads, dropout=dropout, batch_first=not batch_axis_bug)
        self.head = TemporalHead(in_dim, out_dim, head, pre_relu=head_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # batch_axis_bug: x [B, T, D] goes to a batch_first=False layer, which reads it as [L=B, N=T, E]
        L = x.shape[0] if self.batch_axis_bug else x.shape[1]
        mask = None
        if self.causal:
            mask = torch.ones(L, L, dtype=torch.bool, device=x.device).triu(1)  # True = not allowed
        y, _ = self.attn(x, x, x, attn_mask=mask, need_weights=False)
        return self.head(y)


@register_model("attn", family="temporal", causal=False,
                description="one multi-head self-attention layer over time (NAC-TCN's Attn. baseline)")
def attn(*, in_dim: int = 440, out_dim: int = 2, head: str = "frame_tanh", heads: int = 8, dropout: float = 0.5,
         causal: bool = False, batch_axis_bug: bool = False, head_relu: bool = True) -> nn.Module:
    return SelfAttentionModel(in_dim, heads, dropout, causal, batch_axis_bug, out_dim, head, head_relu)


# --------------------------------------------------------------------------------------------------
# causal local attention + RNN


class CausalLocalAttention(nn.Module):
    """Parameter-free causal sliding-window attention: frame t attends to frames t−W+1 … t, with
    q = k = v = the input and scale 1/√C (upstream ABAW3 uses lucidrains' ``LocalAttention(window,
    causal=True)``, whose blockwise windows reach back between W and 2W−1 frames; emotk uses the
    exact sliding window of W frames)."""

    GATHER_MAX = 64  # windows up to this use the gather NA; larger ones a banded dense mask

    def __init__(self, window: int):
        super().__init__()
        if window < 1:
            raise ModelError(f"attention window must be ≥ 1; got {window}")
        self.window = window
        self._gathered = False

    def extra_repr(self) -> str:
        return f"window={self.window}"

    def core_macs(self, inputs, output) -> int:
        """MACs of the gather path (dense paths are counted by the FLOP counter through SDPA)."""
        B, T, C = inputs[0].shape
        return 2 * B * T * self.window * C if self._gathered else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        W = self.window
        self._gathered = False
        if W >= T:
            h = x.unsqueeze(1)
            return F.scaled_dot_product_attention(h, h, h, is_causal=True).squeeze(1)
        if W <= self.GATHER_MAX:
            self._gathered = True
            h = x.unsqueeze(2)
            return na1d_torch(h, h, h, W, 1, causal=True).squeeze(2)
        i = torch.arange(T, device=x.device)
        off = i[:, None] - i[None, :]
        band = (off >= 0) & (off < W)
        h = x.unsqueeze(1)
        return F.scaled_dot_product_attention(h, h, h, attn_mask=band).squeeze(1)


class RecurrentAttentionModel(nn.Module):
    def __init__(self, cell: str, in_dim: int, hidden: int, layers: int, window: int, dropout: float,
                 out_dim: int, head: str, head_relu: bool):
        super().__init__()
        rnn = {"gru": nn.GRU, "lstm": nn.LSTM}[cell]
        self.rnn = rnn(in_dim, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.local_attn = CausalLocalAttention(window)
        self.head = TemporalHead(hidden, out_dim, head, pre_relu=head_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)
        a = self.local_attn(h)
        return self.head(self.local_attn((h + a) / 2))


def _rnn_attn(cell, in_dim, out_dim, head, hidden, layers, window, dropout, head_relu):
    return RecurrentAttentionModel(cell, in_dim, hidden, layers, hidden if window is None else window, dropout,
                                   out_dim, head, head_relu)


@register_model("gru_attn", family="temporal", causal=True,
                description="GRU + causal local self-attention (upstream ABAW3 'GRU/Attn.')")
def gru_attn(*, in_dim: int = 440, out_dim: int = 2, head: str = "frame_tanh", hidden: int = 440, layers: int = 4,
             window: int | None = None, dropout: float = 0.0, head_relu: bool = False) -> nn.Module:
    """``window`` None ties the window (in frames) to ``hidden`` as the upstream code does."""
    return _rnn_attn("gru", in_dim, out_dim, head, hidden, layers, window, dropout, head_relu)


@register_model("lstm_attn", family="temporal", causal=True,
                description="LSTM + causal local self-attention ('LSTM/Attn.')")
def lstm_attn(*, in_dim: int = 440, out_dim: int = 2, head: str = "frame_tanh", hidden: int = 440, layers: int = 4,
              window: int | None = None, dropout: float = 0.0, head_relu: bool = False) -> nn.Module:
    return _rnn_attn("lstm", in_dim, out_dim, head, hidden, layers, window, dropout, head_relu)


# --------------------------------------------------------------------------------------------------
# transformer


def sinusoidal_positions(T: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    pos = torch.arange(T, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(T, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe.to(dtype)


class TransformerModel(nn.Module):
    def __init__(self, in_dim: int, d_model: int | None, heads: int, layers: int, ff: int, dropout: float,
                 causal: bool, positions: bool, out_dim: int, head: str, head_relu: bool):
        super().__init__()
        d = d_model or in_dim
        if d % heads:
            raise ModelError(f"transformer: d_model {d} is not divisible by heads {heads}")
        self.causal, self.positions = causal, positions
        self.proj = nn.Identity() if d == in_dim else nn.Linear(in_dim, d)
        layer = nn.TransformerEncoderLayer(d, heads, ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d), enable_nested_tensor=False)
        self.head = TemporalHead(d, out_dim, head, pre_relu=head_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x)
        T = h.shape[1]
        if self.positions:
            h = h + sinusoidal_positions(T, h.shape[-1], h.device, h.dtype)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=h.device, dtype=h.dtype) if self.causal else None
        return self.head(self.encoder(h, mask=mask, is_causal=self.causal))


@register_model("transformer", family="temporal", causal=True,
                description="causal Transformer encoder over frames (pre-norm, sinusoidal positions)")
def transformer(*, in_dim: int = 440, out_dim: int = 2, head: str = "frame_tanh", d_model: int | None = None,
                heads: int = 8, layers: int = 3, ff: int = 1024, dropout: float = 0.3, causal: bool = True,
                positions: bool = True, head_relu: bool = False) -> nn.Module:
    return TransformerModel(in_dim, d_model, heads, layers, ff, dropout, causal, positions, out_dim, head, head_relu)


# --------------------------------------------------------------------------------------------------
# presets (paper Tables 1–3; docs/models.md, "Baselines")

_LIN2 = {"head": "frame_linear", "out_dim": 2}
_LAST8 = {"head": "last", "out_dim": 8}

register_preset(Preset(
    "attn", "sm", "affwild2", dict(in_dim=440, heads=20, dropout=0.5), seq_len=128,
    params_published=0.97e6, macs_published=124.0, paper_count=_LIN2,
    note="MultiheadAttention(440, 20 heads, dropout 0.5) of the compiled super_tcn (777,042 params with "
         "Linear(440, 2)); the paper's 0.97M / 124 MMac are not reproduced",
))
register_preset(Preset(
    "attn", "sm", "emoreact", dict(in_dim=784, heads=16, dropout=0.5), seq_len=128,
    params_published=2.5e6, macs_published=360.0, paper_count=_LAST8,
    note="MultiheadAttention(784, 16 heads, dropout 0.5), emoreact/model.py (2,468,040 params ≈ the paper's 2.5M)",
))
register_preset(Preset(
    "attn", "sm", None, dict(in_dim=440, heads=8, dropout=0.5), seq_len=128,
    note="any dataset: 8 heads (divides 440, 512, 784)",
))

for _cell, _aff, _emo in (("gru", (5.63e6, 721.0), (4.4e6, 567.0)), ("lstm", (6.79e6, 911.0), (4.9e6, 636.0))):
    register_preset(Preset(
        f"{_cell}_attn", "sm", "affwild2", dict(in_dim=440, hidden=440, layers=4), seq_len=128,
        params_published=_aff[0], macs_published=_aff[1], paper_count=_LIN2,
        note=f"the paper's {_cell.upper()} baseline + parameter-free causal local attention (window = hidden, "
             "upstream ABAW3); the paper's figures ≈ RNN + its Attn. model, not reproduced",
    ))
    register_preset(Preset(
        f"{_cell}_attn", "sm", "emoreact", dict(in_dim=784, hidden=440, layers=1), seq_len=128,
        params_published=_emo[0], macs_published=_emo[1], paper_count=_LAST8,
        note=f"the paper's EmoReact {_cell.upper()} + causal local attention; figures not reproduced",
    ))
    register_preset(Preset(
        f"{_cell}_attn", "sm", None, dict(in_dim=440, hidden=440, layers=4), seq_len=128,
        note="any dataset: the AffWild2 configuration",
    ))

register_preset(Preset(
    "transformer", "sm", "affwild2", dict(in_dim=440, heads=8, layers=12, ff=2048, dropout=0.1), seq_len=128,
    params_published=31.04e6, macs_published=3970.0, paper_count=_LIN2,
    note="documented fit: 12 pre-norm layers, d 440, ff 2048 (30,993,538 params vs the paper's 31.04M); "
         "the paper's configuration is not in the released code",
))
register_preset(Preset(
    "transformer", "sm", None, dict(in_dim=440, heads=8, layers=3, ff=1024, dropout=0.3), seq_len=128,
    note="any dataset: the upstream ABAW3 encoder settings (3 layers, ff 1024, dropout 0.3)",
))
