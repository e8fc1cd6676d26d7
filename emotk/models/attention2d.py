"""Attention modules on image feature maps ``[B, C, H, W]``: SE, ECA, CBAM (as in Miskow 2022).

Each module returns the input re-weighted by its gate(s), same shape as the input. How a network
wires them (VGG: ``x + att(x)`` once after the last pool; ResNets: inside every bottleneck, before
the addition) is in :mod:`emotk.models.cnn`.

- :class:`SqueezeExcitation` (Hu et al. 2018): GAP → Linear(C, C/r) → ReLU → Linear(C/r, C) →
  sigmoid → one gate per channel. Biases on. 2·C·C/r + C/r + C parameters.
- :class:`EfficientChannelAttention` (Wang et al. 2020):
  ``scalar_gate=False`` (default, the ECA paper): GAP → 1-D convolution of kernel k *along the
  channel axis* (no bias) → sigmoid → one gate per channel; k parameters.
  ``scalar_gate=True`` (the released Miskow code): the GAP vector is treated as a length-1 sequence
  with C input channels, Conv1D(C → 1, kernel k, 'same', no bias): C·k parameters of which only the
  centre tap ever touches data, and ONE gate per sample, shared by every channel.
- :class:`CBAM` (Woo et al. 2018): channel gate sigmoid(MLP(GAP) + MLP(GMP)) (shared MLP C → C/r →
  ReLU → C, biases on), then spatial gate sigmoid(Conv2d(2 → 1, k×k, 'same', bias)) on the
  channel-wise mean and max maps. ``spatial_from_input=False`` (default, the CBAM paper): the spatial
  maps are computed from the channel-refined features; ``True`` (the released Miskow code): from the
  block's input, the two gates then multiplied onto the input together. Same parameters either way.

ECA's adaptive kernel size: :func:`eca_kernel_size` (the ECA paper, k = |log2(C)/γ + b/γ|_odd with
γ = 2, b = 1, computed as the ECA authors' code does: t = int(|(log2 C + b)/γ|), k = t if t is odd
else t + 1) and :func:`eca_kernel_size_miskow` (the released code's operator-precedence slip:
t = int(|log2 C + b/γ|), then odd as above: C = 256, 512 → 9; 1024, 2048 → 11).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from emotk.errors import ModelError

ATTENTIONS = ("none", "se", "eca", "cbam")


def _odd(t: int) -> int:
    return t if t % 2 else t + 1


def eca_kernel_size(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """The ECA paper's adaptive kernel: t = int(|(log2 C + b)/γ|), made odd by adding 1."""
    return _odd(int(abs((math.log2(channels) + b) / gamma)))


def eca_kernel_size_miskow(channels: int, gamma: float = 2.0, b: float = 1.0) -> int:
    """The released Miskow code's kernel: t = int(|log2 C + b/γ|) (b/γ binds first), made odd."""
    return _odd(int(abs(math.log2(channels) + b / gamma)))


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * gate[:, :, None, None]


class EfficientChannelAttention(nn.Module):
    def __init__(self, channels: int, kernel_size: int, scalar_gate: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ModelError(f"ECA kernel size must be a positive odd number; got {kernel_size}")
        self.kernel_size = kernel_size
        self.scalar_gate = scalar_gate
        in_ch = channels if scalar_gate else 1
        self.conv = nn.Conv1d(in_ch, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean(dim=(2, 3))  # [B, C]
        if self.scalar_gate:  # [B, C, 1]: C input channels, sequence length 1 → [B, 1, 1]
            gate = torch.sigmoid(self.conv(s[:, :, None]))[:, :, :, None]  # [B, 1, 1, 1]
        else:  # [B, 1, C]: one channel, sequence over C → [B, 1, C]
            gate = torch.sigmoid(self.conv(s[:, None, :]))[:, 0, :, None, None]  # [B, C, 1, 1]
        return x * gate


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7, spatial_from_input: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ModelError(f"CBAM spatial kernel size must be a positive odd number; got {kernel_size}")
        hidden = _hidden(channels, reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=True)
        self.spatial_from_input = spatial_from_input

    def _mlp(self, v: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(v)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = torch.sigmoid(self._mlp(x.mean(dim=(2, 3))) + self._mlp(x.amax(dim=(2, 3))))
        refined = x * channel[:, :, None, None]
        src = x if self.spatial_from_input else refined
        maps = torch.cat([src.mean(dim=1, keepdim=True), src.amax(dim=1, keepdim=True)], dim=1)
        return refined * torch.sigmoid(self.spatial(maps))


def _hidden(channels: int, reduction: int) -> int:
    if reduction < 1 or channels // reduction < 1:
        raise ModelError(f"reduction ratio {reduction} leaves no hidden unit for {channels} channels")
    return channels // reduction


def make_attention(kind: str, channels: int, *, compat: str | None = None, reduction: int = 16,
                   eca_kernel: int | None = None, cbam_kernel: int = 7) -> nn.Module | None:
    """The attention module ``kind`` for ``channels`` (None for "none").

    ``compat="miskow"``: ECA with the released code's scalar gate and kernel rule, CBAM with its
    spatial gate computed from the input. ``eca_kernel`` None: the adaptive kernel of the mode.
    """
    if kind not in ATTENTIONS:
        raise ModelError(f"attention must be one of {', '.join(ATTENTIONS)}; got {kind!r}")
    miskow = compat == "miskow"
    if kind == "none":
        return None
    if kind == "se":
        return SqueezeExcitation(channels, reduction)
    if kind == "eca":
        k = eca_kernel if eca_kernel is not None else (eca_kernel_size_miskow if miskow else eca_kernel_size)(channels)
        return EfficientChannelAttention(channels, int(k), scalar_gate=miskow)
    return CBAM(channels, reduction, cbam_kernel, spatial_from_input=miskow)
