"""Model registry: builders registered by name, paper presets per (model, size, dataset).

A builder is a function ``builder(*, in_dim, out_dim, head, **config) -> nn.Module``. A preset is
the configuration behind one paper's table row (architecture only: the trainer passes ``in_dim``,
``out_dim`` and ``head`` from the dataset's task; a preset's ``in_dim`` is the paper's feature width,
used when counting). It carries the paper's own figures so ``emotk models`` and recipe READMEs read
them instead of repeating numbers:

- ``params_published`` / ``macs_published``: the figures as printed in the paper (params, MMac);
- ``params_paper``: the exact parameter count reconstructed in the paper's convention (the model
  built with ``paper_count`` overrides, e.g. without the output head); set only where a
  configuration reproduces the printed figure, and a test checks our count equals it;
- ``macs_reproduced``: whether our paper-convention MAC count (``emotk.models.counting``) lands
  within 2 % of ``macs_published`` for this configuration (tested where True).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from emotk.errors import ModelError
from emotk.registry import Registry


@dataclass(frozen=True)
class ModelInfo:
    name: str
    builder: Callable[..., nn.Module]
    family: str  # "temporal" | "image" | "multimodal"
    description: str
    causal: bool = False
    streams: tuple[str, ...] = ("frames",)  # the input streams forward() takes, in order


@dataclass(frozen=True)
class Preset:
    """One configuration of a model, e.g. NAC-TCN sm on AffWild2."""

    model: str
    size: str
    dataset: str | None  # None: applies to any dataset without a more specific preset
    config: dict[str, Any]
    seq_len: int | None = None  # the sequence length the paper counted MACs at
    params_paper: int | None = None  # exact count in the paper's convention (reconstructed, tested)
    params_published: float | None = None  # the paper's parameter figure as printed (e.g. 1.24e6)
    macs_published: float | None = None  # the paper's MMac figure as printed
    paper_count: dict[str, Any] = field(default_factory=dict)  # build overrides of the paper's count
    macs_reproduced: bool = False  # our paper-convention MACs are within 2 % of macs_published
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def macs_paper(self) -> float | None:
        """Alias of ``macs_published`` (the paper's MMac figure)."""
        return self.macs_published


MODELS: Registry = Registry("model", "Run `emotk models` for the list with sizes and presets.", ModelError)
PRESETS: dict[tuple[str, str, str | None], Preset] = {}


def register_model(name: str, *, family: str, description: str, causal: bool = False,
                   streams: tuple[str, ...] = ("frames",)):
    """Decorator registering a builder under ``name``; ``streams`` are the inputs its module's forward takes."""

    def wrap(fn):
        MODELS.register(name, ModelInfo(name, fn, family, description, causal, tuple(streams)))
        return fn

    return wrap


def register_preset(preset: Preset) -> Preset:
    key = (preset.model, preset.size, preset.dataset)
    if key in PRESETS:
        raise ValueError(f"preset {key} registered twice")
    PRESETS[key] = preset
    return preset


def model_info(name: str) -> ModelInfo:
    if name not in MODELS:
        raise ModelError(
            f"unknown model {name!r}. Known models: {', '.join(sorted(MODELS))}. "
            "Run `emotk models` for the list with sizes and presets."
        )
    return MODELS[name]


def sizes_of(name: str) -> list[str]:
    return sorted({s for (m, s, _d) in PRESETS if m == name})


def find_preset(name: str, size: str | None, dataset: str | None) -> Preset | None:
    """The most specific preset for (name, size, dataset): dataset-specific first, then generic."""
    if size is None:
        sizes = sizes_of(name)
        if not sizes:
            return None
        size = "sm" if "sm" in sizes else sizes[0]
    for key in ((name, size, dataset), (name, size, None)):
        if key in PRESETS:
            return PRESETS[key]
    known = sorted({(s, d) for (m, s, d) in PRESETS if m == name}, key=str)
    if not known:
        return None
    raise ModelError(
        f"model {name!r} has no size {size!r} for dataset {dataset!r}. "
        f"Known (size, dataset) presets: {known}."
    )


def published(model: str, size: str | None, dataset: str | None, metric: str) -> tuple[float, str] | None:
    """The paper's printed figure for ``metric`` of this model preset on ``dataset`` and the protocol it
    was measured under: ``(value, protocol)`` from the preset's ``extra["published"][dataset][metric]``
    (a fraction, as emotk reports metrics) and ``extra["published_protocol"][dataset]``; None when the
    paper printed none."""
    try:
        preset = find_preset(model, size, dataset)
    except ModelError:
        return None
    if preset is None:
        return None
    value = (preset.extra.get("published") or {}).get(dataset, {}).get(metric)
    if value is None:
        return None
    return float(value), str((preset.extra.get("published_protocol") or {}).get(dataset, "the paper's protocol"))


def build(name: str, size: str | None = None, dataset: str | None = None, **overrides) -> nn.Module:
    """Build ``name`` with the preset for (size, dataset), then ``overrides`` on top.

    ``in_dim``, ``out_dim`` and ``head`` come from the preset or the overrides; the training code
    passes them from the dataset's task. Example::

        net = build("gru", dataset="affwild2", in_dim=440, out_dim=2, head="frame_tanh")
    """
    info = model_info(name)
    preset = find_preset(name, size, dataset)
    config = dict(preset.config) if preset else {}
    config.update(overrides)
    params = inspect.signature(info.builder).parameters
    unknown = sorted(k for k in config if k not in params)
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        known = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY)
        raise ModelError(f"model {name!r} has no option(s) {unknown}. Its options: {', '.join(known)}.")
    try:
        return info.builder(**config)
    except TypeError as exc:
        raise ModelError(f"cannot build {name!r} with {sorted(config)}: {exc}") from None
