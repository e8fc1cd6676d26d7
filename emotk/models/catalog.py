"""The model catalog behind ``emotk models``: every preset with its sizes, parameters and MACs.

Columns of :func:`model_table` (one row per preset; MACs in MMac = 10⁶ MACs):

- ``model``, ``size``, ``dataset`` (``"any"`` for the fallback preset used on other datasets),
  ``seq_len`` (the length MACs are counted at: the paper's, 128 AffWild2/EmoReact, 32 AFEW-VA);
- ``params``: the whole model as built for the dataset's task (with its output head);
- ``params_paper``: the same architecture counted the paper's way (``Preset.paper_count``, e.g.
  without the head for NAC-TCN), computed here; ``params_published``: the paper's printed figure;
- ``macs``: true MACs of one forward pass (batch 1), attention cores included;
- ``macs_paper``: the paper's convention (ptflops on the released code, incl. its double counting),
  computed here; ``macs_published``: the paper's printed MMac;
- ``reproduced``: "params+macs", "params", "macs" or "" — which published figures this
  configuration reproduces (params exactly, MACs within 2 %); ``note``: where the configuration
  comes from.
"""

from __future__ import annotations

from functools import lru_cache

import polars as pl
import torch

from emotk.models.counting import count_macs, count_macs_paper, count_params
from emotk.models.registry import MODELS, PRESETS, Preset, build



def _task(dataset: str | None) -> tuple[str, int, int]:
    """(head, output size, feature width of the paper's encoder) of a dataset's task, as the trainer
    builds it; a preset for any dataset is shown with AffWild2's task (per-frame regression)."""
    from emotk.datasets import get_dataset

    task = get_dataset(dataset if dataset and dataset != "any" else "affwild2").task
    return task.head, task.out_dim, task.feature_dim_hint

COLUMNS = ["model", "size", "dataset", "seq_len", "params", "params_paper", "macs", "macs_paper",
           "params_published", "macs_published", "reproduced", "note"]


def _mmac(n: int | None) -> float | None:
    return None if n is None else round(n / 1e6, 1)


@lru_cache(maxsize=None)
def _row(model: str, size: str, dataset: str | None) -> dict:
    preset: Preset = PRESETS[(model, size, dataset)]
    ds = dataset or "any"
    if MODELS[model].family == "image":
        return _image_row(preset, ds)
    if MODELS[model].family == "multimodal":
        return _multimodal_row(preset, ds)
    head, out_dim, in_default = _task(ds)
    in_dim = preset.config.get("in_dim", in_default)
    T = preset.seq_len or 128
    torch.manual_seed(0)
    net = build(model, size, dataset, head=head, out_dim=out_dim)
    params, macs = count_params(net), count_macs(net, in_dim, T)
    params_paper = macs_paper = None
    if preset.params_published is not None or preset.macs_published is not None:
        ref = build(model, size, dataset, **{"head": head, "out_dim": out_dim, **preset.paper_count})
        params_paper, macs_paper = count_params(ref), count_macs_paper(ref, in_dim, T)
    ok = []
    if preset.params_paper is not None and params_paper == preset.params_paper:
        ok.append("params")
    if preset.macs_reproduced and macs_paper is not None and abs(macs_paper / 1e6 / preset.macs_published - 1) <= 0.02:
        ok.append("macs")
    return {
        "model": model, "size": size, "dataset": ds, "seq_len": T, "params": params, "params_paper": params_paper,
        "macs": _mmac(macs), "macs_paper": _mmac(macs_paper),
        "params_published": None if preset.params_published is None else int(round(preset.params_published)),
        "macs_published": preset.macs_published, "reproduced": "+".join(ok), "note": preset.note,
    }


def model_table(dataset: str | None = None) -> pl.DataFrame:
    """One row per preset (``dataset`` given: the presets that apply to it — its own, else the
    fallback one — labelled with that dataset)."""
    keys = sorted(PRESETS, key=lambda k: (k[0], k[1], k[2] or "~"))
    rows = []
    if dataset is None:
        rows = [dict(_row(*key)) for key in keys]
    else:
        seen = set()
        for m, s, d in keys:
            if (m, s) in seen:
                continue
            key = (m, s, dataset) if (m, s, dataset) in PRESETS else (m, s, None) if (m, s, None) in PRESETS else None
            if key is None:
                continue
            seen.add((m, s))
            if key[2] is None:
                head, out_dim, _ = _task(dataset)
                rows.append(dict(_row_for(m, s, dataset, head, out_dim)))
            else:
                rows.append(dict(_row(*key)))
    missing = sorted(set(MODELS) - {r["model"] for r in rows})
    for m in missing:  # models without presets still show up
        rows.append({c: None for c in COLUMNS} | {"model": m, "note": MODELS[m].description})
    schema = {"model": pl.Utf8, "size": pl.Utf8, "dataset": pl.Utf8, "seq_len": pl.Int64, "params": pl.Int64,
              "params_paper": pl.Int64, "macs": pl.Float64, "macs_paper": pl.Float64, "params_published": pl.Int64,
              "macs_published": pl.Float64, "reproduced": pl.Utf8, "note": pl.Utf8}
    return pl.DataFrame(rows, schema=schema).select(COLUMNS)


@lru_cache(maxsize=None)
def _row_for(model: str, size: str, dataset: str, head: str, out_dim: int) -> dict:
    """A fallback preset counted with ``dataset``'s task head (architecture of the generic preset)."""
    preset = PRESETS[(model, size, None)]
    if MODELS[model].family == "image":
        return _image_row(preset, dataset)
    if MODELS[model].family == "multimodal":
        return _multimodal_row(preset, dataset)
    in_dim = preset.config.get("in_dim", 440)
    T = preset.seq_len or 128
    torch.manual_seed(0)
    net = build(model, size, None, head=head, out_dim=out_dim)
    return {"model": model, "size": size, "dataset": dataset, "seq_len": T, "params": count_params(net),
            "params_paper": None, "macs": _mmac(count_macs(net, in_dim, T)), "macs_paper": None,
            "params_published": None, "macs_published": None, "reproduced": "", "note": preset.note}


def _image_row(preset: Preset, ds: str) -> dict:
    """An image model's row, counted on one image of the preset's shape ``(C, H, W)`` (the paper's
    input): class logits, as many as the dataset's classes when its task has logits, else the model's
    default. Built on the meta device (shapes only: nothing is allocated or run for real).
    ``params_paper`` uses the model's ``paper_params()`` when it has one (Keras counted BatchNorm's
    running statistics as parameters)."""
    head, out_dim, _ = _task(ds)
    task = {"out_dim": out_dim} if head == "logits" else {}
    side = preset.config.get("image_size", 48)
    shape = (preset.config.get("in_channels", 1), side, side)
    with torch.device("meta"):
        net = build(preset.model, preset.size, preset.dataset, head="logits", **task)
        ref = build(preset.model, preset.size, preset.dataset, head="logits", **task, **preset.paper_count)
    params_paper = ref.paper_params() if callable(getattr(ref, "paper_params", None)) else count_params(ref)
    ok = "params" if preset.params_paper is not None and params_paper == preset.params_paper else ""
    return {
        "model": preset.model, "size": preset.size, "dataset": ds, "seq_len": None, "params": count_params(net),
        "params_paper": params_paper, "macs": _mmac(count_macs(net, shape, None)), "macs_paper": None,
        "params_published": None if preset.params_published is None else int(round(preset.params_published)),
        "macs_published": preset.macs_published, "reproduced": ok, "note": preset.note,
    }


def _multimodal_row(preset: Preset, ds: str) -> dict:
    """A per-utterance multimodal model's row at the paper's streams, widths and lengths (the
    preset's defaults): class logits, as many as the dataset's classes when its task is a
    classification, else the paper's. MACs of one utterance (batch 1)."""
    head, out_dim, _ = _task(ds)
    task = {"out_dim": out_dim} if head == "logits" else {}
    torch.manual_seed(0)
    net = build(preset.model, preset.size, preset.dataset, head="logits", **task)
    ref = build(preset.model, preset.size, preset.dataset, head="logits", **preset.paper_count)
    params_paper = count_params(ref)
    ok = "params" if preset.params_paper is not None and params_paper == preset.params_paper else ""
    return {
        "model": preset.model, "size": preset.size, "dataset": ds, "seq_len": None, "params": count_params(net),
        "params_paper": params_paper, "macs": _mmac(count_macs(net, None, None, inputs=net.example_inputs())),
        "macs_paper": None,
        "params_published": None if preset.params_published is None else int(round(preset.params_published)),
        "macs_published": preset.macs_published, "reproduced": ok, "note": preset.note,
    }
