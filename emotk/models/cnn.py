"""Image CNNs of Miskow (2022): VGG-16/19, ResNet-50/101/152 (v1) and ResNet-v2-50/101/152, with
ELU and optional SE / ECA / CBAM attention. They map float images ``[B, C, H, W]`` in [0, 1] (the
trainer scales uint8 by 1/255, as the released code's ``rescale=1/255``; no other normalisation)
to class logits ``[B, out_dim]``.

Architectures (reference facts: the released Keras code, ``cnn_models.py`` / ``layers.py``):

- **VGG** (``vgg16``, ``vgg19``): 3×3 convs ('same', bias) each followed by the hidden activation,
  a 2×2/2 max-pool after each of the 5 blocks ('same' padding: 48 → 24 → 12 → 6 → 3 → 2), no
  BatchNorm, no dropout; optional attention once on the last map, added residually
  (``x + att(x)``); Flatten → Linear 4096 → act → Linear 4096 → act → Linear ``out_dim``.
- **ResNet v1** (``resnet50|101|152``, blocks [3,4,6,3] / [3,4,23,3] / [3,8,36,3]): stem
  Conv 7×7/2 (pad 3, bias) → BN → ReLU → zero-pad 1 → MaxPool 3×3/2; bottlenecks
  Conv1×1(stride s, bias) → BN → act → Conv3×3 (bias) → BN → act → Conv1×1 (4·width, bias) → BN →
  [attention] → + shortcut → act; the first block of each stage has a projection shortcut
  Conv1×1(stride s, bias) → BN; s = 1 in the first stage, 2 in the others (on the first 1×1, Keras
  v1 style). Global average (or max) pooling → Linear.
- **ResNet v2** (``resnetv2_50|101|152``): stem Conv 7×7/2 (pad 3, bias) → zero-pad 1 → MaxPool
  3×3/2 (no BN, no activation); pre-activation bottlenecks: pre = act(BN(x)); shortcut = Conv1×1
  (stride s, bias) on pre in the first block of a stage, MaxPool(1, stride s) on x where strided,
  else x; main Conv1×1 (no bias) on pre → BN → act → Conv3×3 (stride s, pad 1, no bias) → BN → act →
  Conv1×1 (4·width, bias) → [attention] → + shortcut. The stride sits in the LAST block of a stage
  (2, 2, 2, 1; Keras ResNetV2 convention). Top: BN → ReLU → global pooling → Linear.

``activation`` (``elu`` default, as the dissertation; ``relu``) is every hidden activation: VGG's
convs and dense layers, the ResNet blocks' activations. The v1 stem and the v2 top keep their ReLU,
as the released code does.

``compat``:

- ``None`` (default): the method as the dissertation describes it — BatchNorm over channels, ECA
  with a gate per channel and the ECA paper's adaptive kernel, CBAM's spatial gate on the
  channel-refined features.
- ``"miskow"``: the released code's behaviour, with which the dissertation's parameter counts are
  reproduced: every ResNet BatchNorm normalises over the HEIGHT axis (Keras ``axis=1`` on NHWC, so
  4·H values per BatchNorm, H the map's height: the model is tied to its ``image_size``), ECA's scalar
  gate (C·k weights, one gate per sample) with the released kernel rule, and CBAM's spatial gate
  computed from the block's input (see :mod:`emotk.models.attention2d`).

BatchNorm keeps the released code's settings in both modes: eps 1.001e-5 (1e-3, the Keras default,
on the v1 projection shortcut), momentum 0.01 in PyTorch's convention (= Keras' 0.99).
``init="keras"`` (default) initialises conv and linear weights Glorot-uniform with zero biases, as
Keras did; ``init="torch"`` keeps PyTorch's defaults.

Counting: PyTorch's ``parameters()`` leaves out BatchNorm's running statistics, which Keras'
``count_params()`` — the dissertation's figures — includes. :func:`count_params_keras` (and each
model's ``paper_params()``) counts the Keras way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from emotk.errors import ModelError
from emotk.models.attention2d import ATTENTIONS, make_attention
from emotk.models.registry import Preset, register_model, register_preset

ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU}
COMPATS = (None, "miskow")
POOLINGS = ("avg", "max")
INITS = ("keras", "torch")
BN_EPS = 1.001e-5  # the released code's BatchNormalization(epsilon=1.001e-5)
KERAS_BN_EPS = 1e-3  # Keras' default, used by the released v1 projection shortcut's BatchNorm
BN_MOMENTUM = 0.01  # Keras momentum 0.99 (moving = 0.99·moving + 0.01·batch)

VGG_CONFIGS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
VGG_WIDTHS = (64, 128, 256, 512, 512)
RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
RESNET_WIDTHS = (64, 128, 256, 512)
EXPANSION = 4


# --------------------------------------------------------------------------------------------------
# shared pieces


class HeightBatchNorm2d(nn.Module):
    """BatchNorm over the HEIGHT axis of ``[B, C, H, W]``: one mean/variance/γ/β per row h, over
    (batch, channels, width) — what Keras ``BatchNormalization(axis=1)`` does on NHWC maps.

    A wrapper around an ordinary ``nn.BatchNorm2d(H)`` (``.bn``) run on ``[B, H, C, W]``, so that
    ``SyncBatchNorm.convert_sync_batchnorm`` (multi-GPU runs) converts the inner layer and keeps the
    height semantics."""

    def __init__(self, height: int, eps: float = BN_EPS, momentum: float = BN_MOMENTUM):
        super().__init__()
        self.height = height
        self.bn = nn.BatchNorm2d(height, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != self.height:
            raise ModelError(
                f"this model (compat='miskow') normalises over the height axis and was built for maps of "
                f"height {self.height}; it got height {x.shape[2]}. Build it with the image_size of "
                "the images it reads.")
        return self.bn(x.transpose(1, 2)).transpose(1, 2)


def _norm(channels: int, height: int, compat: str | None, eps: float = BN_EPS) -> nn.Module:
    if compat == "miskow":
        return HeightBatchNorm2d(height, eps=eps)
    return nn.BatchNorm2d(channels, eps=eps, momentum=BN_MOMENTUM)


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _check_options(head: str, activation: str, attention: str, compat, init: str, pooling: str = "avg") -> None:
    if head != "logits":
        raise ModelError(f"image models end in class logits (head 'logits'); got head {head!r}")
    if activation not in ACTIVATIONS:
        raise ModelError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
    if attention not in ATTENTIONS:
        raise ModelError(f"attention must be one of {', '.join(ATTENTIONS)}; got {attention!r}")
    if compat not in COMPATS:
        raise ModelError(f"compat must be null (the dissertation's method) or 'miskow' (the released code); got {compat!r}")
    if init not in INITS:
        raise ModelError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    if pooling not in POOLINGS:
        raise ModelError(f"pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")


def _keras_init(model: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every conv and linear layer (Keras' defaults)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def count_params_keras(model: nn.Module) -> int:
    """Parameters as Keras counts them: ``parameters()`` plus BatchNorm's running mean and variance."""
    stats = sum(m.running_mean.numel() + m.running_var.numel() for m in model.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None)
    return sum(p.numel() for p in model.parameters()) + stats


class _ImageNet(nn.Module):
    """Base of the image CNNs: the Keras-convention count the dissertation's table uses."""

    def paper_params(self) -> int:
        return count_params_keras(self)


# --------------------------------------------------------------------------------------------------
# VGG


class VGG(_ImageNet):
    def __init__(self, convs_per_block, in_channels: int, image_size: int, out_dim: int, activation: str,
                 attention: str, compat, reduction: int, eca_kernel, cbam_kernel: int):
        super().__init__()
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        ch, size = in_channels, image_size
        for n, width in zip(convs_per_block, VGG_WIDTHS):
            for _ in range(n):
                layers += [nn.Conv2d(ch, width, 3, padding=1), act()]
                ch = width
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))  # Keras 'same' pooling: ceil(size / 2)
            size = math.ceil(size / 2)
        self.image_size = image_size
        self.features = nn.Sequential(*layers)
        self.attention = make_attention(attention, ch, compat=compat, reduction=reduction, eca_kernel=eca_kernel,
                                        cbam_kernel=cbam_kernel)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(ch * size * size, 4096), act(), nn.Linear(4096, 4096), act(), nn.Linear(4096, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise ModelError(f"this VGG was built for {self.image_size}×{self.image_size} images (its dense layers "
                             f"fix the size); it got {tuple(x.shape[-2:])}. Build it with image_size={x.shape[-1]}.")
        y = self.features(x)
        if self.attention is not None:
            y = y + self.attention(y)
        return self.classifier(y)


# --------------------------------------------------------------------------------------------------
# ResNet v1


class BottleneckV1(nn.Module):
    def __init__(self, in_ch: int, width: int, stride: int, project: bool, height: int, activation: str,
                 attention_kw: dict, compat):
        super().__init__()
        out_ch = width * EXPANSION
        h = _conv_out(height, 1, stride, 0)
        self.conv1, self.bn1 = nn.Conv2d(in_ch, width, 1, stride), _norm(width, h, compat)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1), _norm(width, h, compat)
        self.conv3, self.bn3 = nn.Conv2d(width, out_ch, 1), _norm(out_ch, h, compat)
        self.attention = make_attention(channels=out_ch, compat=compat, **attention_kw)
        self.shortcut = (nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride), _norm(out_ch, h, compat, KERAS_BN_EPS))
                         if project else None)
        self.act = ACTIVATIONS[activation]()
        self.out_height = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.act(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        if self.attention is not None:
            y = self.attention(y)
        return self.act(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNetV1(_ImageNet):
    def __init__(self, depth: int, in_channels: int, image_size: int, out_dim: int, activation: str,
                 attention_kw: dict, compat, pooling: str):
        super().__init__()
        h = _conv_out(image_size, 7, 2, 3)
        self.conv1, self.bn1 = nn.Conv2d(in_channels, 64, 7, 2, padding=3), _norm(64, h, compat)
        self.pool = nn.MaxPool2d(3, 2)  # after an explicit zero pad of 1 (Keras ZeroPadding2D)
        h = _conv_out(h, 3, 2, 1)
        blocks, ch = [], 64
        for stage, (n, width) in enumerate(zip(RESNET_BLOCKS[depth], RESNET_WIDTHS)):
            for i in range(n):
                stride = (1 if stage == 0 else 2) if i == 0 else 1
                block = BottleneckV1(ch, width, stride, i == 0, h, activation, attention_kw, compat)
                blocks.append(block)
                ch, h = width * EXPANSION, block.out_height
        self.blocks = nn.Sequential(*blocks)
        self.pooling = pooling
        self.fc = nn.Linear(ch, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.blocks(self.pool(F.pad(y, (1, 1, 1, 1))))
        return self.fc(_global_pool(y, self.pooling))


def _global_pool(y: torch.Tensor, pooling: str) -> torch.Tensor:
    return y.mean(dim=(2, 3)) if pooling == "avg" else y.amax(dim=(2, 3))


# --------------------------------------------------------------------------------------------------
# ResNet v2 (pre-activation)


class BottleneckV2(nn.Module):
    def __init__(self, in_ch: int, width: int, stride: int, project: bool, height: int, activation: str,
                 attention_kw: dict, compat):
        super().__init__()
        out_ch = width * EXPANSION
        h = _conv_out(height, 3, stride, 1)
        self.pre_bn = _norm(in_ch, height, compat)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride) if project else None
        self.pool_shortcut = nn.MaxPool2d(1, stride) if (stride > 1 and not project) else None
        self.conv1, self.bn1 = nn.Conv2d(in_ch, width, 1, bias=False), _norm(width, height, compat)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, padding=1, bias=False), _norm(width, h, compat)
        self.conv3 = nn.Conv2d(width, out_ch, 1)
        self.attention = make_attention(channels=out_ch, compat=compat, **attention_kw)
        self.act = ACTIVATIONS[activation]()
        self.out_height = h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act(self.pre_bn(x))
        if self.shortcut is not None:
            short = self.shortcut(pre)
        elif self.pool_shortcut is not None:
            short = self.pool_shortcut(x)
        else:
            short = x
        y = self.act(self.bn1(self.conv1(pre)))
        y = self.act(self.bn2(self.conv2(y)))
        y = self.conv3(y)
        if self.attention is not None:
            y = self.attention(y)
        return y + short


class ResNetV2(_ImageNet):
    def __init__(self, depth: int, in_channels: int, image_size: int, out_dim: int, activation: str,
                 attention_kw: dict, compat, pooling: str):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, padding=3)
        self.pool = nn.MaxPool2d(3, 2)  # after an explicit zero pad of 1 (Keras ZeroPadding2D)
        h = _conv_out(_conv_out(image_size, 7, 2, 3), 3, 2, 1)
        blocks, ch = [], 64
        stage_strides = (2, 2, 2, 1)
        for n, width, s in zip(RESNET_BLOCKS[depth], RESNET_WIDTHS, stage_strides):
            for i in range(n):
                block = BottleneckV2(ch, width, s if i == n - 1 else 1, i == 0, h, activation, attention_kw, compat)
                blocks.append(block)
                ch, h = width * EXPANSION, block.out_height
        self.blocks = nn.Sequential(*blocks)
        self.post_bn = _norm(ch, h, compat)
        self.pooling = pooling
        self.fc = nn.Linear(ch, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(F.pad(self.conv1(x), (1, 1, 1, 1)))
        y = F.relu(self.post_bn(self.blocks(y)))
        return self.fc(_global_pool(y, self.pooling))


# --------------------------------------------------------------------------------------------------
# builders


def _finish(model: nn.Module, init: str) -> nn.Module:
    if init == "keras":
        _keras_init(model)
    return model


def _vgg(name: str, in_channels, image_size, out_dim, head, activation, attention, compat, reduction, eca_kernel,
         cbam_kernel, init):
    _check_options(head, activation, attention, compat, init)
    return _finish(VGG(VGG_CONFIGS[name], in_channels, image_size, out_dim, activation, attention, compat, reduction,
                       eca_kernel, cbam_kernel), init)


def _resnet(cls, depth, in_channels, image_size, out_dim, head, activation, attention, compat, reduction, eca_kernel,
            cbam_kernel, pooling, init):
    _check_options(head, activation, attention, compat, init, pooling)
    kw = dict(kind=attention, reduction=reduction, eca_kernel=eca_kernel, cbam_kernel=cbam_kernel)
    return _finish(cls(depth, in_channels, image_size, out_dim, activation, kw, compat, pooling), init)


def _register_vgg(name: str, depth: int) -> None:
    @register_model(name, family="image", streams=("image",),
                    description=f"VGG-{depth} on faces, no BN/dropout, ELU, optional SE/ECA/CBAM after the last pool (Miskow 2022)")
    def builder(*, in_channels: int = 1, image_size: int = 48, out_dim: int = 7, head: str = "logits",
                activation: str = "elu", attention: str = "none", compat: str | None = None, reduction: int = 16,
                eca_kernel: int | None = None, cbam_kernel: int = 7, init: str = "keras") -> nn.Module:
        return _vgg(name, in_channels, image_size, out_dim, head, activation, attention, compat, reduction, eca_kernel,
                    cbam_kernel, init)


def _register_resnet(name: str, cls, depth: int, what: str) -> None:
    @register_model(name, family="image", streams=("image",),
                    description=f"{what}-{depth} bottleneck net on faces, ELU, optional SE/ECA/CBAM in every block (Miskow 2022)")
    def builder(*, in_channels: int = 1, image_size: int = 48, out_dim: int = 7, head: str = "logits",
                activation: str = "elu", attention: str = "none", compat: str | None = None, reduction: int = 16,
                eca_kernel: int | None = None, cbam_kernel: int = 7, pooling: str = "avg",
                init: str = "keras") -> nn.Module:
        return _resnet(cls, depth, in_channels, image_size, out_dim, head, activation, attention, compat, reduction,
                       eca_kernel, cbam_kernel, pooling, init)


_register_vgg("vgg16", 16)
_register_vgg("vgg19", 19)
for _depth in (50, 101, 152):
    _register_resnet(f"resnet{_depth}", ResNetV1, _depth, "ResNet v1")
    _register_resnet(f"resnetv2_{_depth}", ResNetV2, _depth, "ResNet v2 (pre-activation)")


# --------------------------------------------------------------------------------------------------
# presets: the dissertation's table (README / Table 3.3: parameters, accuracy % on CK+, JAFFE, FER2013)
#
# Sizes name the attention: "base" (none), "se", "eca", "cbam". ``params_published`` is the printed
# figure (millions, 2 decimals); ``params_paper`` the exact count in the paper's convention (Keras:
# BatchNorm running statistics included), built with compat="miskow" (``paper_count``) — given only
# where it rounds to the printed figure.

SIZES = {"none": "base", "se": "se", "eca": "eca", "cbam": "cbam"}

# model → attention → (printed params in M, exact Keras count with compat="miskow", (CK+, JAFFE, FER2013) %)
PUBLISHED = {
    "vgg16": {"none": (39.92, 39_916_231, (87.91, 64.44, 60.66)), "se": (39.95, 39_949_543, (88.46, 68.89, 63.05)),
              "eca": (39.92, 39_920_839, (89.01, 73.33, 62.72)), "cbam": (39.95, 39_949_642, (89.56, 75.56, 63.46))},
    "vgg19": {"none": (42.87, 45_225_927, (90.66, 68.89, 60.92)), "se": (45.26, 45_259_239, (91.21, 73.33, 63.23)),
              "eca": (45.23, 45_230_535, (91.76, 75.56, 63.49)), "cbam": (45.26, 45_259_338, (92.31, 77.78, 64.07))},
    "resnet50": {"none": (23.49, 23_490_739, (87.91, 73.33, 58.61)), "se": (26.02, 26_021_731, (89.01, 75.56, 58.84)),
                 "eca": (23.65, 23_651_251, (90.11, 77.78, 59.73)), "cbam": (26.02, 26_023_315, (91.21, 82.22, 59.90))},
    "resnet101": {"none": (42.46, 42_457_367, (88.46, 60.00, 58.67)), "se": (47.24, 47_235_079, (89.01, 68.89, 58.92)),
                  "eca": (42.81, 42_809_367, (89.56, 73.33, 60.15)), "cbam": (47.24, 47_238_346, (90.11, 75.56, 60.92))},
    "resnet152": {"none": (58.08, 58_078_731, (85.71, 15.66, 59.36)), "se": (64.71, 64_707_771, (88.46, 15.66, 59.73)),
                  "eca": (58.60, 58_595_595, (89.56, 15.66, 60.92)), "cbam": (64.71, 64_712_721, (90.11, 15.66, 61.54))},
    "resnetv2_50": {"none": (23.48, 23_482_967, (88.46, 77.78, 58.72)), "se": (26.01, 26_013_959, (88.66, 82.22, 59.36)),
                    "eca": (23.64, 23_643_479, (88.91, 82.22, 59.73)), "cbam": (26.01, 26_015_543, (89.01, 84.44, 60.15))},
    "resnetv2_101": {"none": (42.44, 42_440_891, (88.62, 62.22, 59.07)), "se": (47.22, 47_218_603, (89.01, 68.89, 59.73)),
                     "eca": (42.79, 42_792_891, (89.56, 70.83, 60.15)), "cbam": (47.22, 47_221_870, (90.66, 73.33, 60.92))},
    "resnetv2_152": {"none": (58.05, 58_054_575, (89.01, 66.67, 59.40)), "se": (64.68, 64_683_615, (89.56, 68.89, 60.72)),
                     "eca": (58.57, 58_571_439, (89.82, 73.33, 61.54)), "cbam": (64.69, 64_688_565, (90.11, 77.78, 62.05))},
}

# how the dissertation measured its accuracies (the report prints this beside them)
PUBLISHED_PROTOCOL = {
    "ckplus": "Miskow 2022: per-image 80/20 split (leaks subjects), best of 3 runs",
    "jaffe": "Miskow 2022: per-image 80/20 split (leaks subjects), best of 3 runs",
    "fer2013": "Miskow 2022: 70/30 of Kaggle train, tested on PublicTest + PrivateTest, one run",
}

# printed figures the released code does not give (the exact count is kept in ``extra``)
NOT_REPRODUCED = {
    ("vgg19", "none"): "the printed 42.87M is not the released VGG-19 (45,225,927 = 45.23M, the author's notebook too)",
    ("resnetv2_50", "cbam"): "the printed 26.01M is a slip: the released code gives 26,015,543 = 26.02M",
}


def _presets() -> None:
    for model, rows in PUBLISHED.items():
        for attention, (printed_m, exact, (ck, jaffe, fer)) in rows.items():
            slip = NOT_REPRODUCED.get((model, attention))
            note = (f"{model} + {attention}" if attention != "none" else model) + ", 48×48×1, 7 classes; "
            note += slip or "params reproduced with compat='miskow' (Keras count: BatchNorm statistics included)"
            register_preset(Preset(
                model, SIZES[attention], None,
                dict(in_channels=1, image_size=48, attention=attention),
                params_paper=None if slip else exact, params_published=printed_m * 1e6,
                paper_count={"compat": "miskow"}, note=note,
                extra={"params_keras_miskow": exact, "count_convention": "keras",
                       "accuracy_published": {"ckplus": ck, "jaffe": jaffe, "fer2013": fer},
                       # the report prints these beside ours (fractions, as emotk's metrics)
                       "published": {"ckplus": {"acc": ck / 100}, "jaffe": {"acc": jaffe / 100},
                                     "fer2013": {"acc": fer / 100}},
                       "published_protocol": PUBLISHED_PROTOCOL},
            ))


_presets()
