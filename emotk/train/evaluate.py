"""Re-score a finished run's selected weights (``best.pt``): on its reported part, on another part of
an official split, and with test-time augmentation (``--tta NAME``: a named set of views, averaged)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import torch
from torch.utils.data import DataLoader

from emotk import distributed as ddp
from emotk.datasets.base import Task
from emotk.errors import RunError
from emotk.splits import read_split
from emotk.train.data import collate
from emotk.train.loop import Resolved, TrainConfig, build_model, load_checkpoint, make_dataset, predict, score, select_parts
from emotk.workspace import Workspace


def load_run(run: str | Path) -> tuple[Resolved, dict]:
    """The resolved run saved in ``run/config.json`` (its protocol as it was resolved then)."""
    run = Path(run)
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        raise RunError(f"{run} is not a run directory (no config.json). Give a path printed by `emotk train`.")
    try:
        saved = json.loads(cfg_path.read_text())
        cfg = TrainConfig(**{k: saved[k] for k in TrainConfig.__dataclass_fields__ if k in saved})
        task = Task(**{**saved["task"], "targets": tuple(saved["task"]["targets"])})
        resolved = Resolved(cfg, task, saved["protocol_resolved"], saved["inputs"],
                            saved["fingerprints"], saved["identity"], saved["config_hash"], run)
    except (ValueError, KeyError, TypeError) as exc:
        raise RunError(f"{cfg_path} is not a config.json written by this emotk ({type(exc).__name__}: {exc}); "
                       "train the run again.") from None
    return resolved, saved


def evaluate_run(ws: Workspace, run: str | Path, part: str | None = None, device: str | None = None,
                 tta: str = "none") -> dict:
    resolved, saved = load_run(run)
    cfg = resolved.cfg
    if part is None:
        ids = select_parts(ws, cfg, resolved.protocol).report
    else:
        split = read_split(ws, cfg.dataset, cfg.split)
        if "split" not in split.columns:
            raise RunError(f"split {cfg.split!r} has folds, not named parts; drop --part to score the held-out fold.")
        ids = split.filter(pl.col("split") == part)["sample_id"].to_list()
        if not ids:
            have = sorted(split["split"].unique().to_list())
            raise RunError(f"split {cfg.split!r} has no samples in part {part!r} (parts: {', '.join(have)}).")
    dataset = make_dataset(ws, resolved, ids, f"split {cfg.split!r}")
    dev = ddp.resolve_device(device)
    torch.manual_seed(cfg.seed)
    model, streams = build_model(resolved, {k: s.shape for k, s in dataset.sources.items()})
    model.load_state_dict(load_checkpoint(Path(run) / "best.pt", cfg.model)["model"])
    model.to(dev)
    loader = DataLoader(dataset, batch_size=64, shuffle=False, collate_fn=collate)
    classify = resolved.task.kind.endswith("classification")
    report, _ = score(resolved.task, dataset, *predict(model, loader, dev, streams, amp=dev.type == "cuda", tta=tta,
                                                        classify=classify))
    return report
