"""Frame encoders: any torchvision classification model, cut before its classifier.

``load_encoder("regnet_y_400mf", weights="imagenet")`` gives a module mapping ``[N, 3, H, W]`` images
(ImageNet-normalised) to penultimate features (regnet_y_400mf: 440-d, regnet_y_800mf: 784-d).
``weights`` is ``imagenet`` (torchvision's default weights, from the torch hub cache), ``none``
(random, seeded: for tests and offline demos) or a path to a state dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from emotk.atomic import file_sha256
from emotk.errors import EmotkError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class EncoderError(EmotkError):
    """Unknown encoder or unusable weights."""


@dataclass
class Encoder:
    name: str
    weights: str  # "imagenet", "none" or "file:<sha256>"
    module: nn.Module
    dim: int


def available_encoders() -> list[str]:
    return sorted(torchvision.models.list_models(module=torchvision.models))


def _strip_classifier(model: nn.Module) -> nn.Module:
    """Replace the last ``nn.Linear`` (the classifier) by Identity: the output becomes the penultimate features."""
    last_name = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last_name = name
    if last_name is None:
        raise EncoderError(f"{type(model).__name__} has no Linear classifier to remove; choose a classification model.")
    parent = model
    *path, leaf = last_name.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, leaf, nn.Identity())
    return model


def load_encoder(name: str, weights: str = "imagenet", image_size: int = 224) -> Encoder:
    if name not in available_encoders():
        raise EncoderError(
            f"unknown encoder {name!r}: use a torchvision classification model name, e.g. regnet_y_400mf, "
            f"regnet_y_800mf, resnet18, efficientnet_b0 ({len(available_encoders())} available)."
        )
    if weights == "imagenet":
        w = torchvision.models.get_model_weights(name).DEFAULT
        try:
            model = torchvision.models.get_model(name, weights=w)
        except Exception as exc:  # no network, or a broken download
            raise EncoderError(
                f"could not load ImageNet weights for {name} ({type(exc).__name__}: {str(exc)[:120]}). "
                f"Download {w.url} on a machine with internet, place it in {torch.hub.get_dir()}/checkpoints/, "
                "or pass --weights PATH (a state-dict file) or --weights none."
            ) from None
        tag = "imagenet"
    elif weights == "none":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # 'none' means the same random encoder every time
            model = torchvision.models.get_model(name, weights=None)
        tag = "none"
    else:
        path = Path(weights)
        if not path.is_file():
            raise EncoderError(f"--weights {weights!r} is neither 'imagenet', 'none' nor an existing file.")
        model = torchvision.models.get_model(name, weights=None)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state:
                state = state["state_dict"]
            model.load_state_dict(state)
        except Exception as exc:
            raise EncoderError(f"{path} is not a state dict of torchvision's {name}: {str(exc)[:200]}") from None
        tag = f"file:{file_sha256(path)}"
    module = _strip_classifier(model).eval()
    with torch.no_grad():
        dim = int(module(torch.zeros(1, 3, image_size, image_size)).shape[-1])
    return Encoder(name=name, weights=tag, module=module, dim=dim)
