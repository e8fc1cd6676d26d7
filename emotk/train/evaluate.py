"""Re-score a finished run's best checkpoint, on its held-out part or another part of an official split."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import torch
from torch.utils.data import DataLoader

from emotk.datasets import get_dataset
from emotk.errors import RunError
from emotk.splits import read_split
from emotk.train.data import WINDOW_BUILDERS, WindowDataset, collate, load_samples
from emotk.train.loop import TrainConfig, build_model, load_checkpoint, predict, score, select_parts
from emotk.workspace import Workspace


def evaluate_run(ws: Workspace, run: str | Path, part: str | None = None, device: str | None = None) -> dict:
    run = Path(run)
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        raise RunError(f"{run} is not a run directory (no config.json). Give a path printed by `emotk train`.")
    saved = json.loads(cfg_path.read_text())
    cfg = TrainConfig(**{k: saved[k] for k in TrainConfig.__dataclass_fields__ if k in saved})
    task = get_dataset(cfg.dataset).task
    if part is None:
        _, ids, _ = select_parts(ws, cfg)
    else:
        split = read_split(ws, cfg.dataset, cfg.split)
        if "split" not in split.columns:
            raise RunError(f"split {cfg.split!r} has folds, not named parts; drop --part to score the held-out fold.")
        ids = split.filter(pl.col("split") == part)["sample_id"].to_list()
        if not ids:
            raise RunError(f"split {cfg.split!r} has no samples in part {part!r}.")
    samples = load_samples(ws, cfg.dataset, cfg.features, ids, task)
    dataset = WindowDataset(samples, WINDOW_BUILDERS[task.kind](samples, saved.get("seq_len") or task.seq_len), task)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = build_model(cfg, task, samples.dim)
    model.load_state_dict(load_checkpoint(run / "best.pt", cfg.model)["model"])
    model.to(dev)
    loader = DataLoader(dataset, batch_size=64, shuffle=False, collate_fn=collate)
    report, _ = score(task, dataset, *predict(model, loader, dev, task, amp=dev.type == "cuda"))
    return report
