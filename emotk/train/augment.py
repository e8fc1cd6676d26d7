"""Augmentation on the device, batched and seeded; test-time augmentation (TTA) as named view sets.

Pixel streams (``crops``, ``image``) reach the device as uint8 and become float images in [0, 1]
``[B, …, 3, H, W]``; every leading axis after the batch (the frames of a window) shares the sample's
random parameters, so a clip is flipped or jittered as a whole. Parameters are drawn on the CPU from
a generator seeded by (run seed, stage, epoch, step) — never from the global RNG — so a resumed run
draws exactly what an uninterrupted one drew, and the same parameters whatever the device.

Augmentations (``augment:`` entries of a protocol stage):

- ``hflip`` (``p`` 0.5): mirror left–right.
- ``color_jitter`` (``brightness``, ``contrast``, ``saturation``: factors drawn uniformly in
  [max(0, 1 − x), 1 + x], applied in this fixed order; ``p`` 1.0) — as torchvision's ColorJitter
  without hue, and without its random order.
- ``random_crop`` (``padding`` 4, ``mode`` zeros | reflect): pad, then crop back to the input size at
  a random offset.
- ``random_resized_crop`` (``scale`` [0.8, 1.0], ``ratio`` [3/4, 4/3]): a random box resampled to
  the input size (bilinear, via ``torchvision.ops.roi_align``).
- ``rotation`` (``degrees`` 10): a random rotation about the centre (bilinear, zeros outside).
- ``zoom`` (``range`` 0.3): Keras' ``zoom_range``: the sampling grid is scaled by factors drawn
  independently for x and y in [1 − range, 1 + range] (below 1 zooms in), edges repeated
  ('nearest' fill).

TTA sets (``emotk evaluate RUN --tta NAME``): ``none`` (the image as is) and ``hflip`` (as is +
mirrored); the model's outputs over the views are averaged (class probabilities for classification
tasks, raw outputs otherwise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from emotk.registry import Registry

# name → (function(x, generator, **options), default options)
AUGMENTATIONS = Registry("augmentation", "See docs/protocols.md.")
TTA_SETS = Registry("TTA set", "Use `emotk evaluate RUN --tta NAME`.")


def _flat(x: torch.Tensor) -> tuple[torch.Tensor, tuple]:
    """[B, …, C, H, W] → [B, N, C, H, W] (N frames sharing one sample's parameters)."""
    shape = x.shape
    return x.reshape(shape[0], -1, *shape[-3:]), shape


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))


def hflip(x, g, p=0.5):
    x5, shape = _flat(x)
    do = torch.rand(x5.shape[0], generator=g) < p
    flipped = torch.where(_per_sample(do, x5).bool(), x5.flip(-1), x5)
    return flipped.reshape(shape)


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(-3)
    return (0.299 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def color_jitter(x, g, brightness=0.0, contrast=0.0, saturation=0.0, p=1.0):
    x5, shape = _flat(x)
    n = x5.shape[0]
    apply = _per_sample(torch.rand(n, generator=g) < p, x5)
    b = _per_sample(_uniform(g, n, max(0.0, 1 - brightness), 1 + brightness), x5)
    c = _per_sample(_uniform(g, n, max(0.0, 1 - contrast), 1 + contrast), x5)
    s = _per_sample(_uniform(g, n, max(0.0, 1 - saturation), 1 + saturation), x5)
    y = (x5 * b).clamp(0, 1)
    mean = _grey(y).mean(dim=(-3, -2, -1), keepdim=True)
    y = ((y - mean) * c + mean).clamp(0, 1)
    if x5.shape[-3] == 3:
        grey = _grey(y)
        y = ((y - grey) * s + grey).clamp(0, 1)
    return torch.where(apply.bool(), y, x5).reshape(shape)


def random_crop(x, g, padding=4, mode="zeros"):
    x5, shape = _flat(x)
    n, f, ch, h, w = x5.shape
    pad_mode = {"zeros": "constant", "reflect": "reflect"}[mode]
    padded = F.pad(x5.reshape(n * f, ch, h, w), (padding,) * 4, mode=pad_mode).reshape(n, f, ch, h + 2 * padding, w + 2 * padding)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=g).tolist()
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=g).tolist()
    out = torch.stack([padded[i, :, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    return out.reshape(shape)


def random_resized_crop(x, g, scale=(0.8, 1.0), ratio=(3 / 4, 4 / 3)):
    from torchvision.ops import roi_align

    x5, shape = _flat(x)
    n, f, ch, h, w = x5.shape
    area = _uniform(g, n, scale[0], scale[1]) * h * w
    log_r = _uniform(g, n, math.log(ratio[0]), math.log(ratio[1]))
    bw = torch.sqrt(area * torch.exp(log_r)).clamp(1, w)
    bh = torch.sqrt(area / torch.exp(log_r)).clamp(1, h)
    x0 = torch.rand(n, generator=g) * (w - bw)
    y0 = torch.rand(n, generator=g) * (h - bh)
    boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], 1).repeat_interleave(f, 0)
    idx = torch.arange(n * f, dtype=boxes.dtype).unsqueeze(1)
    rois = torch.cat([idx, boxes], 1).to(x5.device, x5.dtype)
    out = roi_align(x5.reshape(n * f, ch, h, w), rois, output_size=(h, w), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    return out.reshape(shape)


def rotation(x, g, degrees=10.0):
    x5, shape = _flat(x)
    n, f, ch, h, w = x5.shape
    angle = _uniform(g, n, -degrees, degrees) * math.pi / 180
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    theta = theta.repeat_interleave(f, 0).to(x5.device, x5.dtype)
    grid = F.affine_grid(theta, [n * f, ch, h, w], align_corners=False)
    out = F.grid_sample(x5.reshape(n * f, ch, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.reshape(shape)


def zoom(x, g, range=0.3):  # noqa: A002 - the protocol's option name
    x5, shape = _flat(x)
    n, f, ch, h, w = x5.shape
    zx, zy = _uniform(g, n, 1 - range, 1 + range), _uniform(g, n, 1 - range, 1 + range)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([zx, zero, zero], 1), torch.stack([zero, zy, zero], 1)], 1)
    theta = theta.repeat_interleave(f, 0).to(x5.device, x5.dtype)
    grid = F.affine_grid(theta, [n * f, ch, h, w], align_corners=False)
    out = F.grid_sample(x5.reshape(n * f, ch, h, w), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.reshape(shape)


AUGMENTATIONS.register("hflip", (hflip, {"p": 0.5}))
AUGMENTATIONS.register("zoom", (zoom, {"range": 0.3}))
AUGMENTATIONS.register("color_jitter", (color_jitter, {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0, "p": 1.0}))
AUGMENTATIONS.register("random_crop", (random_crop, {"padding": 4, "mode": "zeros"}))
AUGMENTATIONS.register("random_resized_crop", (random_resized_crop, {"scale": [0.8, 1.0], "ratio": [3 / 4, 4 / 3]}))
AUGMENTATIONS.register("rotation", (rotation, {"degrees": 10.0}))


def check_augment(entry, where: str) -> dict:
    """A protocol's augmentation entry with its defaults filled; ProtocolError on an unknown name or option."""
    from emotk.errors import EmotkError
    from emotk.train.protocol import ProtocolError

    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ProtocolError(f"{where}: an augmentation is a mapping with a name, e.g. {{name: hflip, p: 0.5}}; "
                            f"known: {', '.join(AUGMENTATIONS.names())}.")
    try:
        _, defaults = AUGMENTATIONS.get(entry["name"])
    except EmotkError as exc:
        raise ProtocolError(f"{where}: {exc}") from None
    unknown = sorted(set(entry) - {"name"} - set(defaults))
    if unknown:
        raise ProtocolError(f"{where}: {entry['name']} has no option {unknown[0]!r}; its options: {', '.join(defaults)}.")
    return {"name": entry["name"], **defaults, **{k: v for k, v in entry.items() if k != "name"}}


def augment(x: torch.Tensor, pipeline: list[dict], seed: int) -> torch.Tensor:
    """Apply a stage's pipeline to a float image batch with parameters from ``seed`` only."""
    if not pipeline:
        return x
    g = torch.Generator().manual_seed(seed)
    for entry in pipeline:
        fn, _ = AUGMENTATIONS.get(entry["name"])
        x = fn(x, g, **{k: v for k, v in entry.items() if k != "name"})
    return x


def step_seed(seed: int, stage: int, epoch: int, step: int) -> int:
    """The augmentation seed of one training step (a pure function of the run's position)."""
    return (seed * 1_000_003 + stage * 10_007 + epoch) * 1_000_033 + step


@dataclass(frozen=True)
class TTASet:
    name: str
    views: tuple[Callable[[torch.Tensor], torch.Tensor], ...]
    description: str


TTA_SETS.register("none", TTASet("none", (lambda x: x,), "the image as is"))
TTA_SETS.register("hflip", TTASet("hflip", (lambda x: x, lambda x: x.flip(-1)), "as is + mirrored left–right"))
