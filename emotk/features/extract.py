"""Frame-feature extraction: face crops of every sample → encoder → the feature store.

Images are decoded and resized in DataLoader worker processes; batches span samples so the
encoder always sees full batches; a sample is handed to the writer only when all its frames are
encoded, so it is written whole or not at all. A re-run skips the samples already stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from emotk.datasets.base import failure
from emotk.features.encoders import IMAGENET_MEAN, IMAGENET_STD, load_encoder
from emotk.features.store import FeatureWriter
from emotk.workspace import Workspace, write_failures


@dataclass
class ExtractSummary:
    name: str
    path: Path
    done: int = 0
    skipped_existing: int = 0
    failed: int = 0
    frames: int = 0
    frames_missing: int = 0
    failures: list[dict] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            f"features: {self.path}",
            f"samples: {self.done} extracted, {self.skipped_existing} already there, {self.failed} skipped (see failures.csv)",
            f"frames: {self.frames} encoded, {self.frames_missing} without a face crop (masked)",
        ]


def list_frames(folder: Path, frame_base: int, n_frames: int) -> list[tuple[int, Path]]:
    """(frame index, image path) of the numbered images in ``folder`` within [0, n_frames)."""
    out = []
    for p in folder.iterdir():
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.stem.isdigit() and not p.name.startswith("."):
            i = int(p.stem) - frame_base
            if 0 <= i < n_frames:
                out.append((i, p))
    return sorted(out)


class FrameImages(Dataset):
    """Flat list of (sample number, frame index, image path) → normalised tensors."""

    def __init__(self, items: list[tuple[int, int, Path]], image_size: int):
        self.items = items
        self.size = image_size
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        s, f, path = self.items[i]
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (self.size, self.size):
                    im = im.resize((self.size, self.size), Image.BILINEAR)
                arr = np.asarray(im, dtype=np.uint8)
            x = (torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255.0 - self.mean) / self.std
            ok = True
        except Exception:  # unreadable image: reported by the main process
            x, ok = torch.zeros(3, self.size, self.size), False
        return s, f, x, ok


def extract_frames(
    ws: Workspace,
    dataset: str,
    encoder: str = "regnet_y_400mf",
    weights: str = "imagenet",
    name: str | None = None,
    image_size: int = 224,
    batch_size: int = 64,
    num_workers: int = 2,
    device: str | None = None,
    dtype: str = "float16",
    every: int = 1,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
) -> ExtractSummary:
    """Encode every sample's frames (``every``-th frame only when > 1); see the module docstring."""
    manifest = ws.read_manifest(dataset)
    name = name or encoder
    path = ws.feature_path(dataset, name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    enc = load_encoder(encoder, weights, image_size)
    provenance = {"extractor": "frames", "encoder": encoder, "weights": enc.weights, "image_size": image_size,
                  "dim": enc.dim, "dtype": dtype, "every": every, "dataset": dataset}
    writer = FeatureWriter(path, provenance, rank=rank)
    summary = ExtractSummary(name=name, path=path)
    done = writer.done_ids()

    rows = [r for r in manifest.iter_rows(named=True)]
    rows = rows[rank::world_size]
    todo, frame_lists = [], []
    for row in rows:
        sid = row["sample_id"]
        if sid in done:
            summary.skipped_existing += 1
            continue
        folder = ws.media_path(dataset, row)
        frames = list_frames(folder, row["frame_base"] or 0, row["n_frames"]) if folder.is_dir() else []
        if every > 1:
            frames = [(i, p) for i, p in frames if i % every == 0]
        if not frames:
            summary.failures.append(failure(sid, "extract", folder, "no frame images found",
                                            "re-run `emotk prepare` or restore the crops"))
            continue
        todo.append(row)
        frame_lists.append(frames)

    items = [(s, i, p) for s, frames in enumerate(frame_lists) for i, p in frames]
    remaining = [len(f) for f in frame_lists]
    feats: dict[int, np.ndarray] = {}
    masks: dict[int, np.ndarray] = {}
    module = enc.module.to(device)
    if device.startswith("cuda"):
        module = module.to(memory_format=torch.channels_last)
    loader = DataLoader(FrameImages(items, image_size), batch_size=batch_size, num_workers=num_workers,
                        shuffle=False, pin_memory=device.startswith("cuda"),
                        persistent_workers=False, prefetch_factor=4 if num_workers else None)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    bar = tqdm(total=len(items), unit="frame", desc=f"extract {name}", disable=not progress)
    with torch.inference_mode():
        for s_idx, f_idx, x, ok in loader:
            x = x.to(device, non_blocking=True)
            if device.startswith("cuda"):
                x = x.to(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.float16):
                    y = module(x).float()
            else:
                y = module(x)
            y = y.cpu().numpy()
            for s, f, vec, good in zip(s_idx.tolist(), f_idx.tolist(), y, ok.tolist()):
                row = todo[s]
                if s not in feats:
                    feats[s] = np.zeros((row["n_frames"], enc.dim), dtype=np.float32)
                    masks[s] = np.zeros(row["n_frames"], dtype=bool)
                if good:
                    feats[s][f] = vec
                    masks[s][f] = True
                remaining[s] -= 1
                if remaining[s] == 0:
                    _finish_sample(writer, summary, row, feats.pop(s), masks.pop(s), np_dtype)
            bar.update(len(f_idx))
    bar.close()
    writer.flush()
    if rank == 0 and world_size == 1:
        writer.finalize()
    if summary.failures:
        write_failures(ws.failures_path(dataset), summary.failures, append=True)
    summary.failed = len(summary.failures)
    return summary


def _finish_sample(writer: FeatureWriter, summary: ExtractSummary, row: dict, feats: np.ndarray, mask: np.ndarray, np_dtype) -> None:
    """Fill frames without a crop with the nearest observed frame's features (masked), then store."""
    sid = row["sample_id"]
    if not mask.any():
        summary.failures.append(failure(sid, "extract", row["media"], "no frame image could be decoded",
                                        "check the image files; the sample is skipped"))
        return
    observed = np.flatnonzero(mask)
    if not mask.all():
        pos = np.searchsorted(observed, np.arange(len(mask)))
        left = observed[np.clip(pos - 1, 0, len(observed) - 1)]
        right = observed[np.clip(pos, 0, len(observed) - 1)]
        nearest = np.where(np.abs(np.arange(len(mask)) - left) <= np.abs(right - np.arange(len(mask))), left, right)
        feats = feats[nearest]
    writer.add(sid, feats.astype(np_dtype), mask)
    summary.done += 1
    summary.frames += int(mask.sum())
    summary.frames_missing += int((~mask).sum())


__all__ = ["extract_frames", "ExtractSummary", "list_frames"]
