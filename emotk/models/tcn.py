"""Convolutional temporal models on frame features ``[B, T, D]``: NAC-TCN, Bai's TCN, TCAN.

All three are causal: output frame t depends on input frames ≤ t only (tests prove it).
Convolutions are causal by left zero padding of (k−1)·d frames, which computes exactly what the
released "pad both sides, then chomp the last (k−1)·d" code computes, without the wasted outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from emotk.errors import ModelError
from emotk.models.heads import TemporalHead
from emotk.models.na import NeighborhoodAttention1d
from emotk.models.registry import PRESETS, Preset, register_model, register_preset

NA_MODES = ("causal", "lagged")
RESIDUALS = ("auto", "always", "none")


class CausalConv1d(nn.Conv1d):
    """Conv1d over ``[B, C, T]`` with (k−1)·d zeros on the left: output t sees inputs ≤ t."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int = 1, bias: bool = True):
        super().__init__(in_ch, out_ch, kernel_size, dilation=dilation, padding=0, bias=bias)
        self.left_pad = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left_pad, 0)))


def _wn_conv(in_ch, out_ch, k, d, init: str) -> nn.Module:
    conv = CausalConv1d(in_ch, out_ch, k, d)
    if init == "bai":  # what Bai's init_weights intended: weight ~ N(0, 0.01) (g = ‖v‖ keeps it)
        nn.init.normal_(conv.weight, 0.0, 0.01)
    # init == "released": the released code writes N(0, 0.01) into .weight *after* weight_norm, which
    # the next forward overwrites, so its effective init is PyTorch's default Conv1d init.
    return weight_norm(conv)


def _downsample(in_ch: int, out_ch: int, mode: str) -> nn.Module | None:
    if mode not in RESIDUALS:
        raise ModelError(f"residual must be one of {RESIDUALS}; got {mode!r}")
    if mode == "always" or (mode == "auto" and in_ch != out_ch):
        ds = nn.Conv1d(in_ch, out_ch, 1)
        nn.init.normal_(ds.weight, 0.0, 0.01)  # released init_weights (effective: not weight-normed)
        return ds
    return None


def _conv_paper_macs(B: int, L_out: int, in_ch: int, out_ch: int, k: int) -> int:
    """ptflops' Conv1d rule: output elements × (C_in·k) + bias per output element."""
    return B * L_out * out_ch * (in_ch * k + 1)


def _linear_paper_macs(n_in_elements: int, out_features: int, bias: bool = True) -> int:
    """ptflops' Linear rule: numel(input)·out_features (+ out_features once for the bias)."""
    return n_in_elements * out_features + (out_features if bias else 0)


# --------------------------------------------------------------------------------------------------
# NAC-TCN


class NACBlock(nn.Module):
    """NAC-TCN temporal block (paper Sec. 3.2; layer order of the released ``TemporalBlock``).

    x → weight-normed causal dilated Conv1d(k, d) → ReLU → Dropout1d → causal dilated NA(k, d) →
    ReLU → Dropout1d; out = ReLU(branch + residual(x)).

    ``na_mode="causal"`` (default, the paper's Sec. 3.3): NA frame t attends to t, t−d, …, t−(k−1)d.
    ``na_mode="lagged"`` (released code): left-pad (k−1)·d zeros, ordinary centred NA (NATTEN window
    shifting at the edges), drop the last (k−1)·d outputs — causal, but the NA query of output t is
    the feature of frame t−(k−1)d and its keys end (k−1)d/2 frames before t.
    ``residual``: "auto" 1×1 conv only when channels change (EmoReact/AFEW-VA code, the paper's
    counts), "always" 1×1 conv (AffWild2 code), "none" no residual (ablation, paper Table 4).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int, dropout: float = 0.0,
                 heads: int = 1, na_mode: str = "causal", residual: str = "auto", pos_bias: bool = True,
                 na_backend: str = "auto", init: str = "released"):
        super().__init__()
        if na_mode not in NA_MODES:
            raise ModelError(f"na_mode must be one of {NA_MODES}; got {na_mode!r}")
        self.in_ch, self.out_ch, self.kernel_size, self.dilation = in_ch, out_ch, kernel_size, dilation
        self.pad = (kernel_size - 1) * dilation
        self.na_mode = na_mode
        self.conv1 = _wn_conv(in_ch, out_ch, kernel_size, dilation, init)
        self.relu1 = nn.ReLU()
        self.dropout1 = nn.Dropout1d(dropout)
        self.na = NeighborhoodAttention1d(out_ch, heads, kernel_size, dilation, causal=(na_mode == "causal"),
                                          pos_bias=pos_bias, backend=na_backend)
        self.relu2 = nn.ReLU()
        self.dropout2 = nn.Dropout1d(dropout)
        self.use_residual = residual != "none"
        self.downsample = _downsample(in_ch, out_ch, residual)
        self.relu = nn.ReLU()

    def attend(self, y: torch.Tensor) -> torch.Tensor:
        """The NA step on ``[B, C, T]`` conv features, in the configured mode."""
        T = y.shape[-1]
        z = y.transpose(1, 2)
        if self.na_mode == "lagged":
            z = F.pad(z, (0, 0, self.pad, 0))
            z = self.na(z)[:, :T]
        else:
            z = self.na(z)
        return z.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C_in, T]
        y = self.dropout1(self.relu1(self.conv1(x)))
        y = self.dropout2(self.relu2(self.attend(y)))
        if not self.use_residual:
            return self.relu(y)
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(y + res)

    def paper_macs(self, inputs, output) -> int:
        """This block's MACs the way the NAC-TCN paper counted them (ptflops on the released code).

        Released code: conv padded (k−1)d on both sides (output T+p before the chomp), NA linears on the
        (T+p)-long padded sequence, NA core not counted; conv1, relu1, the NA linears and relu2 are
        registered both as attributes and inside ``net_*`` Sequentials, so ptflops sums them twice.
        The residual 1×1 conv and the final ReLU count once.
        """
        B, _, T = inputs[0].shape
        C, p = self.out_ch, self.pad
        L = T + p
        conv = _conv_paper_macs(B, L, self.in_ch, C, self.kernel_size)
        na = _linear_paper_macs(B * L * C, 3 * C) + _linear_paper_macs(B * L * C, C)
        relu = B * T * C
        total = 2 * (conv + na + relu + relu) + relu
        if self.downsample is not None:
            total += _conv_paper_macs(B, T, self.in_ch, C, 1)
        return total


class _SeqModel(nn.Module):
    """``[B, T, D]`` → channels-first stack of blocks → ``[B, T, C]`` → head."""

    def __init__(self, blocks: list[nn.Module], out_ch: int, out_dim: int, head: str, head_relu: bool):
        super().__init__()
        self.network = nn.Sequential(*blocks)
        self.head = TemporalHead(out_ch, out_dim, head, pre_relu=head_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.network(x.transpose(1, 2)).transpose(1, 2)
        return self.head(y)


def _dilations(levels: int, base: int, bug: bool = False) -> list[int]:
    if bug:  # released tcn.pyc: `dilation_size = dilation_size ** i` overwrites the base → 1, 1, 1, …
        out, dil = [], base
        for i in range(levels):
            dil = dil ** i
            out.append(dil)
        return out
    return [base ** i for i in range(levels)]


def _channels(channels) -> list[int]:
    chans = [int(c) for c in channels]
    if not chans:
        raise ModelError("channels must list at least one level, e.g. [128, 128, 128]")
    return chans




@register_model("nactcn", family="temporal", causal=True,
                description="NAC-TCN: causal dilated conv + causal dilated neighborhood attention (Mehta & Yang 2023)")
def nactcn(*, in_dim: int = 440, out_dim: int = 2, head: str = "frame_tanh", channels=(128,) * 5, kernel_size: int = 7,
           dilation_base: int = 2, dropout: float = 0.2, heads: int = 1, na_mode: str = "causal",
           residual: str = "auto", pos_bias: bool = True, na_backend: str = "auto", init: str = "released",
           head_relu: bool = True) -> nn.Module:
    chans = _channels(channels)
    blocks = []
    for i, c in enumerate(chans):
        blocks.append(NACBlock(in_dim if i == 0 else chans[i - 1], c, kernel_size, dilation_base ** i, dropout, heads,
                               na_mode, residual, pos_bias, na_backend, init))
    return _SeqModel(blocks, chans[-1], out_dim, head, head_relu)


# --------------------------------------------------------------------------------------------------
# Bai et al. TCN


class TCNBlock(nn.Module):
    """Bai et al. (2018) temporal block: two weight-normed causal dilated convs, ReLU, Dropout each;
    residual 1×1 conv when channels change; out = ReLU(branch + residual)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int, dropout: float = 0.0,
                 init: str = "released"):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size, self.dilation = in_ch, out_ch, kernel_size, dilation
        self.pad = (kernel_size - 1) * dilation
        self.conv1 = _wn_conv(in_ch, out_ch, kernel_size, dilation, init)
        self.relu1, self.dropout1 = nn.ReLU(), nn.Dropout(dropout)
        self.conv2 = _wn_conv(out_ch, out_ch, kernel_size, dilation, init)
        self.relu2, self.dropout2 = nn.ReLU(), nn.Dropout(dropout)
        self.downsample = _downsample(in_ch, out_ch, "auto")
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor, branch_input: torch.Tensor | None = None) -> torch.Tensor:
        y = x if branch_input is None else branch_input
        y = self.dropout1(self.relu1(self.conv1(y)))
        y = self.dropout2(self.relu2(self.conv2(y)))
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(y + res)

    def paper_macs(self, inputs, output) -> int:
        """ptflops on Bai's block: convs (T+p outputs) and ReLUs registered twice (attribute + ``net``)."""
        B, _, T = inputs[0].shape
        C, L = self.out_ch, T + self.pad
        conv = _conv_paper_macs(B, L, self.in_ch, C, self.kernel_size) + _conv_paper_macs(B, L, C, C, self.kernel_size)
        total = 2 * (conv + 2 * B * T * C) + B * T * C
        if self.downsample is not None:
            total += _conv_paper_macs(B, T, self.in_ch, C, 1)
        return total


@register_model("tcn", family="temporal", causal=True, description="Bai et al. TCN (NAC-TCN's TCN baseline)")
def tcn(*, in_dim: int = 440, out_dim: int = 2, head: str = "frame_tanh", channels=(440,) * 4, kernel_size: int = 9,
        dilation_base: int = 2, dropout: float = 0.2, dilation_bug: bool = False, init: str = "released",
        head_relu: bool = True) -> nn.Module:
    chans = _channels(channels)
    dils = _dilations(len(chans), dilation_base, dilation_bug)
    blocks = [TCNBlock(in_dim if i == 0 else chans[i - 1], c, kernel_size, dils[i], dropout, init)
              for i, c in enumerate(chans)]
    return _SeqModel(blocks, chans[-1], out_dim, head, head_relu)


# --------------------------------------------------------------------------------------------------
# TCAN (Hao et al. 2020), causal variant


class CausalSelfAttention(nn.Module):
    """TCAN's temporal attention: q, k = Linear(C, key_dim), v = Linear(C, C); single head, lower-
    triangular (causal) mask, softmax over the keys. On ``[B, T, C]``."""

    def __init__(self, dim: int, key_dim: int, causal: bool = True):
        super().__init__()
        self.q = nn.Linear(dim, key_dim)
        self.k = nn.Linear(dim, key_dim)
        self.v = nn.Linear(dim, dim)
        self.causal = causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (m(x).unsqueeze(1) for m in (self.q, self.k, self.v))
        return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal).squeeze(1)


class TCANBlock(nn.Module):
    """Temporal attention over the block input, then Bai's two causal dilated convs on its output;
    residual from the block input; out = ReLU(branch + residual)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, dilation: int, dropout: float = 0.0,
                 key_dim: int | None = None, init: str = "released"):
        super().__init__()
        self.attn = CausalSelfAttention(in_ch, key_dim or in_ch)
        self.tcn = TCNBlock(in_ch, out_ch, kernel_size, dilation, dropout, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        return self.tcn(x, self.attn(x.transpose(1, 2)).transpose(1, 2))


@register_model("tcan", family="temporal", causal=True,
                description="TCAN-style TCN with causal temporal self-attention in every block (Hao et al. 2020)")
def tcan(*, in_dim: int = 440, out_dim: int = 2, head: str = "frame_tanh", channels=(440,) * 4, kernel_size: int = 9,
         dilation_base: int = 2, dropout: float = 0.2, key_dim: int | None = None, init: str = "released",
         head_relu: bool = True) -> nn.Module:
    chans = _channels(channels)
    blocks = [TCANBlock(in_dim if i == 0 else chans[i - 1], c, kernel_size, dilation_base ** i, dropout, key_dim, init)
              for i, c in enumerate(chans)]
    return _SeqModel(blocks, chans[-1], out_dim, head, head_relu)


# --------------------------------------------------------------------------------------------------
# presets (paper: Mehta & Yang 2023, Tables 1–3; configurations in docs/models.md, "NAC-TCN")

_NO_HEAD = {"head": "none"}


def _nac(size, dataset, in_dim, chans, k, base, dropout, seq_len, params_paper, params_pub, macs_pub, reproduced, note):
    register_preset(Preset(
        "nactcn", size, dataset,
        dict(in_dim=in_dim, channels=chans, kernel_size=k, dilation_base=base, dropout=dropout, heads=1,
             residual="auto"),
        seq_len=seq_len, params_paper=params_paper, params_published=params_pub, macs_published=macs_pub,
        paper_count=_NO_HEAD, macs_reproduced=reproduced, note=note,
    ))


_nac("sm", "affwild2", 440, [128] * 5, 7, 2, 0.2, 128, 1_241_025, 1.24e6, 381.0, True,
     "440→[128]×5, k 7, base 2, 1 head, 1×1 residual only in block 1; paper Table 1")
_nac("lg", "affwild2", 440, [440] * 4, 9, 2, 0.2, 128, None, 10.12e6, 3230.0, False,
     "nearest clean fit 440→[440]×4, k 9, base 2 (10,077,828 vs the paper's 10.12M); paper's config unresolved")
_nac("sm", "emoreact", 784, [128] * 3, 9, 4, 0.4, 128, 1_497_523, 1.5e6, 453.0, True,
     "784→[128]×3, k 9, base 4 — the released emoreact/nt_tcn.py __main__; paper Table 2")
_nac("lg", "emoreact", 784, [440] * 3, 7, 4, 0.5, 128, 7_801_679, 7.8e6, 2500.0, True,
     "784→[440]×3, k 7, base 4; paper Table 2")
_nac("sm", "afewva", 440, [32] * 3, 11, 2, 0.2, 32, 204_447, 204e3, 17.0, False,
     "440→[32]×3, k 11, base 2 — the commented config in few/model.py; paper Table 3 (its 17 MMac vs our "
     "paper-convention 17.6: 3.5 %, outside the 2 % bar)")
_nac("lg", "afewva", 440, [128] * 2, 11, 2, 0.2, 32, 988_842, 988e3, 84.0, True,
     "440→[128]×2, k 11, base 2; paper Table 3")
for _size in ("sm", "lg"):
    register_preset(Preset("nactcn", _size, None, dict(PRESETS[("nactcn", _size, "affwild2")].config), seq_len=128,
                           note=f"any dataset: the AffWild2 {_size} architecture"))

_LIN2 = {"head": "frame_linear", "out_dim": 2, "head_relu": False}

register_preset(Preset(
    "tcn", "sm", "affwild2", dict(in_dim=440, channels=[440] * 4, kernel_size=9, dilation_base=2, dropout=0.2),
    seq_len=128, params_paper=13_947_122, params_published=13.95e6, macs_published=3079.0, paper_count=_LIN2,
    macs_reproduced=False,
    note="Bai TCN 440→[440]×4, k 9, base 2 + Linear(440, 2) (13,947,122); the paper's 3079 MMac is not reproduced",
))
register_preset(Preset(
    "tcn", "sm", "emoreact", dict(in_dim=784, channels=[128] * 3, kernel_size=9, dilation_base=4, dropout=0.4),
    seq_len=128, params_published=1.8e6, macs_published=459.0,
    paper_count={"head": "last", "out_dim": 8, "dilation_bug": True}, macs_reproduced=True,
    note="NAC-TCN sm EmoReact hyper-parameters; the paper's 459 MMac is what the released TCN (all dilations 1, "
         "dilation_bug=True) counts: 459.5. Params 1,743,496 vs the printed 1.8M",
))
register_preset(Preset(
    "tcn", "sm", "afewva", dict(in_dim=440, channels=[128] * 2, kernel_size=11, dilation_base=2, dropout=0.2),
    seq_len=32, params_published=1220e3, macs_published=99.0, paper_count={"head": "none", "dilation_bug": True},
    macs_reproduced=True,
    note="NAC-TCN lg AFEW-VA hyper-parameters (the paper: TCN used the large NAC-TCN's): 1,217,664 params without "
         "head; the paper's 99 MMac = the released TCN's all-1 dilations (dilation_bug=True): 99.3",
))
register_preset(Preset(
    "tcn", "sm", None, dict(in_dim=440, channels=[440] * 4, kernel_size=9, dilation_base=2, dropout=0.2),
    seq_len=128, note="any dataset: the AffWild2 TCN",
))

register_preset(Preset(
    "tcan", "sm", "affwild2", dict(in_dim=440, channels=[440] * 4, kernel_size=9, dilation_base=2, dropout=0.2),
    seq_len=128, params_published=17.12e6, macs_published=3700.0, paper_count=_LIN2,
    note="documented choice: NAC-TCN lg hyper-parameters (as the paper says) + causal attention per block",
))
register_preset(Preset(
    "tcan", "sm", "emoreact", dict(in_dim=784, channels=[128] * 3, kernel_size=9, dilation_base=4, dropout=0.5),
    seq_len=128, params_published=1.94e6, macs_published=488.0, paper_count={"head": "last", "out_dim": 8},
    note="the commented ATempConv(784, [128]*3, k=9, 0.5, base 4) of emoreact/model.py; attention design ours",
))
register_preset(Preset(
    "tcan", "sm", "afewva", dict(in_dim=440, channels=[128] * 2, kernel_size=11, dilation_base=2, dropout=0.2),
    seq_len=32, params_published=1253e3, macs_published=120.0, paper_count=_NO_HEAD,
    note="documented choice: NAC-TCN lg AFEW-VA hyper-parameters + causal attention per block",
))
register_preset(Preset(
    "tcan", "sm", None, dict(in_dim=440, channels=[440] * 4, kernel_size=9, dilation_base=2, dropout=0.2),
    seq_len=128, note="any dataset: the AffWild2 TCAN",
))
