"""Training inputs: cached features held in memory (float16) and cut into windows.

Window builders, one per task kind:
- ``frame_regression`` (AffWild2): per sample, the frames with a valid label and an observed face
  are cut into non-overlapping runs of ``seq_len`` (the released code's 'sequential' sampler); the
  last run is edge-padded and the padding masked.
- ``clip_*`` (EmoReact, AFEW-VA): ``seq_len`` frames sampled uniformly over the clip's observed
  frames; shorter clips are edge-padded and the padding masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset

from emotk.datasets import read_frame_labels
from emotk.datasets.base import Task
from emotk.errors import EmotkError
from emotk.features.store import FeatureStore
from emotk.workspace import Workspace


@dataclass
class Samples:
    """Features, masks and labels of a set of samples, in memory."""

    ids: list[str]
    feats: list[np.ndarray]  # [T, D] float16
    masks: list[np.ndarray]  # [T] bool: frame observed
    frame_labels: list[np.ndarray | None]  # [T, L] float32 (NaN = no label)
    clip_labels: np.ndarray | None  # [N, L] float32

    @property
    def dim(self) -> int:
        return int(self.feats[0].shape[-1])


def load_samples(ws: Workspace, dataset: str, features: str, sample_ids: list[str], task: Task) -> Samples:
    path = ws.feature_path(dataset, features)
    manifest = ws.read_manifest(dataset)
    with FeatureStore(path) as store:
        missing = [s for s in sample_ids if s not in store]
        if missing:
            raise EmotkError(f"{len(missing)} samples of the split have no features in {path} (e.g. {missing[0]!r}); "
                             "run `emotk extract` again (it adds only what is missing) or check failures.csv.")
        loaded = [store.read(s) for s in sample_ids]
    feats = [np.asarray(f, dtype=np.float16) for f, _ in loaded]
    masks = [m for _, m in loaded]
    frame_labels: list[np.ndarray | None] = [None] * len(sample_ids)
    clip_labels = None
    if task.kind.startswith("frame"):
        labels = read_frame_labels(ws.labels_path(dataset), sample_ids)
        frame_labels = [labels.get(s) for s in sample_ids]
    else:
        cols = [c for c in task.targets]
        missing_cols = [c for c in cols if c not in manifest.columns]
        if missing_cols:
            raise EmotkError(f"manifest of {dataset} lacks label columns {missing_cols}; run `emotk prepare` again.")
        table = pl.DataFrame({"sample_id": sample_ids}).join(manifest.select("sample_id", *cols), on="sample_id", how="left")
        clip_labels = table.select(cols).to_numpy().astype(np.float32)
    return Samples(sample_ids, feats, masks, frame_labels, clip_labels)


@dataclass
class Windows:
    sample: np.ndarray  # [W] sample number
    frames: np.ndarray  # [W, L] frame indices (edge-padded)
    valid: np.ndarray  # [W, L] bool: real, labelled frame (not padding)


def frame_windows(samples: Samples, seq_len: int) -> Windows:
    s_out, f_out, v_out = [], [], []
    for s, (mask, labels) in enumerate(zip(samples.masks, samples.frame_labels)):
        ok = mask.copy()
        if labels is not None:
            n = min(len(ok), len(labels))
            ok[:n] &= np.isfinite(labels[:n]).all(axis=1)
            ok[n:] = False
        idx = np.flatnonzero(ok)
        for start in range(0, len(idx), seq_len):
            chunk = idx[start:start + seq_len]
            pad = seq_len - len(chunk)
            s_out.append(s)
            f_out.append(np.concatenate([chunk, np.full(pad, chunk[-1])]))
            v_out.append(np.arange(seq_len) < len(chunk))
    if not s_out:
        raise EmotkError("no frame has both a valid label and features: nothing to train on. Check failures.csv.")
    return Windows(np.asarray(s_out), np.stack(f_out), np.stack(v_out))


def clip_windows(samples: Samples, seq_len: int) -> Windows:
    s_out, f_out, v_out = [], [], []
    for s, mask in enumerate(samples.masks):
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            continue
        if len(idx) >= seq_len:
            take = idx[np.linspace(0, len(idx) - 1, seq_len).round().astype(int)]
            valid = np.ones(seq_len, bool)
        else:
            take = np.concatenate([idx, np.full(seq_len - len(idx), idx[-1])])
            valid = np.arange(seq_len) < len(idx)
        s_out.append(s)
        f_out.append(take)
        v_out.append(valid)
    return Windows(np.asarray(s_out), np.stack(f_out), np.stack(v_out))


WINDOW_BUILDERS = {
    "frame_regression": frame_windows,
    "frame_classification": frame_windows,
    "clip_multilabel": clip_windows,
    "clip_classification": clip_windows,
}


class WindowDataset(Dataset):
    """Index → (features [L, D] float32, targets, valid [L], window number)."""

    def __init__(self, samples: Samples, windows: Windows, task: Task):
        self.samples, self.windows, self.task = samples, windows, task

    def __len__(self) -> int:
        return len(self.windows.sample)

    def __getitem__(self, i: int):
        s = int(self.windows.sample[i])
        frames = self.windows.frames[i]
        x = torch.from_numpy(self.samples.feats[s][frames].astype(np.float32))
        valid = torch.from_numpy(self.windows.valid[i])
        if self.task.kind.startswith("frame"):
            y = torch.from_numpy(np.nan_to_num(self.samples.frame_labels[s][frames], nan=0.0))
        else:
            y = torch.from_numpy(self.samples.clip_labels[s])
        return x, y, valid, i


def collate(batch):
    x, y, valid, idx = zip(*batch)
    return torch.stack(x), torch.stack(y), torch.stack(valid), torch.tensor(idx)
