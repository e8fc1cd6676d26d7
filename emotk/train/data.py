"""Training inputs as named streams, cut into windows; a batch is a dict of padded tensors.

Streams (one source object per kind reads one sample's frames):

- ``frames``: a feature cache (``features/<name>.h5``) as float16, read from its file per window (or from
  one in-memory block when it is chunked or compressed), ``[L, D]`` per window;
- ``crops``: the face-crop images of the manifest's frame folders, decoded at the window's frame
  indices (in DataLoader workers) and resized to ``image_size``, ``[L, 3, S, S]`` uint8 per window —
  for training a frame encoder end to end with the temporal model;
- ``image``: one still image per sample from the dataset's image store (``images.h5``, uint8
  ``[H, W]`` or ``[H, W, 3]`` per sample id, held in memory), ``[C, H, W]`` uint8 per item (image
  datasets have windows of one "frame").

- ``text``, ``audio``, ``video``: per-utterance feature sequences (``features/<name>.h5``: token
  vectors, audio frames or functionals, per-utterance frame features), each cut or zero padded to the
  protocol's fixed ``lengths[stream]`` (keeping the first steps), ``[L_s, D_s]`` per item. They are not
  aligned in time with each other: an utterance is one item (one "frame" on the window axis, like an
  image), and each stream brings its own time mask ``<stream>_mask`` ``[L_s]``.

A batch is ``{stream: [B, L, …], "<stream>_mask": [B, L], "valid": [B, L], "y": targets, "index": [B]}``:
``<stream>_mask`` marks the frames the stream really observed, ``valid`` the frames the loss and the
metrics count (observed by every stream, labelled, not padding).

Window builders, one per task kind:
- ``frame_*`` (AffWild2): per sample, the frames with a valid label and observed by every stream are
  cut into non-overlapping runs of ``seq_len`` (the released code's 'sequential' sampler), optionally
  keeping every ``stride``-th frame; the last run is edge-padded and the padding masked.
- ``clip_*`` (EmoReact, AFEW-VA): ``seq_len`` frames sampled uniformly over the clip's observed
  frames; shorter clips are edge-padded and the padding masked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from PIL import Image
from torch.utils.data import Dataset

from emotk.datasets import read_frame_labels
from emotk.datasets.base import Task
from emotk.errors import EmotkError
from emotk.features.store import FeatureStore
from emotk.workspace import Workspace

SEQUENCE_STREAMS = ("text", "audio", "video")
STREAMS = ("frames", "crops", "image") + SEQUENCE_STREAMS


def check_in_manifest(ws: Workspace, dataset: str, sample_ids: list[str], what: str) -> pl.DataFrame:
    """The manifest rows of ``sample_ids`` in that order; an id the manifest lacks is a stale split."""
    manifest = ws.read_manifest(dataset)
    known = set(manifest["sample_id"].to_list())
    missing = [s for s in sample_ids if s not in known]
    if missing:
        raise EmotkError(f"{what} names {len(missing)} sample(s) that {ws.manifest_path(dataset)} does not have "
                         f"(e.g. {missing[0]!r}): the split was made for another preparation of the dataset. "
                         "Make it again with `emotk split` (and train on the new split).")
    return pl.DataFrame({"sample_id": sample_ids}).join(manifest, on="sample_id", how="left", maintain_order="left")


def open_cache(ws: Workspace, dataset: str, name: str, sample_ids: list[str], stream: str,
               how: str, require_all: bool = True) -> FeatureStore:
    """The open feature cache ``name``, holding every one of ``sample_ids``; a missing cache (or, with
    ``require_all``, a missing sample) is an error."""
    path = ws.feature_path(dataset, name)
    if not path.exists() and not path.with_name(path.stem + ".parts").is_dir():
        raise EmotkError(f"no feature cache {name!r} in {path.parent}: make it with `emotk extract {how} --name {name}` "
                         f"(or pick another with --input {stream}=NAME).")
    store = FeatureStore(path)
    missing = [s for s in sample_ids if s not in store]
    if missing and require_all:
        store.close()
        raise EmotkError(f"{len(missing)} samples of the split have no features in {path} (e.g. {missing[0]!r}); "
                         "run `emotk extract` again (it adds only what is missing) or see failures.csv: "
                         "samples that could not be extracted are listed there.")
    return store


def read_cache(ws: Workspace, dataset: str, name: str, sample_ids: list[str], stream: str,
               how: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(features, mask) of every sample from feature cache ``name``; a missing cache or sample is an error."""
    with open_cache(ws, dataset, name, sample_ids, stream, how) as store:
        return [store.read(s) for s in sample_ids]


IN_MEMORY = -1  # FrameSource: the sample lies in the in-memory block


class FrameSource:
    """Stream ``frames``: a feature cache as float16, with no second copy of it in memory.

    Every sample's sha256 is checked when the source is made. Samples the cache stores as one plain
    float16 block (contiguous, uncompressed: what ``emotk extract`` writes) then stay in their file:
    ``take`` reads the rows a window spans with ``os.pread`` on a descriptor opened at load (the OS
    page cache holds them, shared between DataLoader workers and reclaimable, not in the process's
    own memory). Other samples (chunked or compressed datasets, float32 caches) are read into one
    float16 array for the whole split, per-sample offsets into it (float32 is rounded as ``astype``).
    """

    def __init__(self, ws: Workspace, dataset: str, name: str, sample_ids: list[str]):
        self._handles: list = []  # open files of the samples kept in their file
        self._paths: list[Path] = []
        self._ids: list[tuple[int, int]] = []  # (st_dev, st_ino) of each, checked on every (re)open
        with open_cache(ws, dataset, name, sample_ids, "frames", "--encoder ENCODER") as store:
            self._plan(store, sample_ids)
            self.masks = self._read(store, sample_ids)
        self.shape = self._shapes[0][1:] if self._shapes else ()

    def _plan(self, store: FeatureStore, sample_ids: list[str]) -> None:
        """Where each sample is read from: its file (byte offset) or the in-memory block (element offset)."""
        n = len(sample_ids)
        self._file = np.full(n, IN_MEMORY, np.int64)
        self._offset = np.zeros(n, np.int64)
        self._shapes: list[tuple[int, ...]] = []
        self._sizes: list[int] = []  # elements of each sample's features
        files: dict[Path, int] = {}
        block = 0
        for i, sid in enumerate(sample_ids):
            shape, _ = store.shape_of(sid)
            self._shapes.append(shape)
            self._sizes.append(int(np.prod(shape, dtype=np.int64)))
            ext = store.extent(sid) if hasattr(os, "pread") else None
            if ext is not None and ext.dtype == np.float16 and len(shape) >= 1:
                if ext.path not in files:
                    files[ext.path] = len(self._paths)
                    self._paths.append(ext.path)
                    self._ids.append(ext.file_id)
                self._file[i], self._offset[i] = files[ext.path], ext.offset
            else:
                self._offset[i] = block
                block += self._sizes[i]
        self._block = np.empty(block, np.float16)
        self._open()

    def _read(self, store: FeatureStore, sample_ids: list[str]) -> list[np.ndarray]:
        """Verify every sample (reading block samples into place); their masks."""
        in_file = [i for i in range(len(sample_ids)) if self._file[i] != IN_MEMORY]
        largest = max((self._sizes[i] for i in in_file), default=0)
        scratch = np.empty(largest, np.float16)  # one buffer for checking the samples kept in their file
        masks = []
        for i, sid in enumerate(sample_ids):
            size = self._sizes[i]
            if self._file[i] == IN_MEMORY:
                out = self._block[self._offset[i]:self._offset[i] + size]
            else:
                out = scratch[:size]
            masks.append(np.asarray(store.read_into(sid, out.reshape(self._shapes[i])), dtype=bool))
        return masks

    def _open(self) -> None:
        """Open the files of the samples kept there; each must be the file the store verified."""
        self._handles = []
        for path, want in zip(self._paths, self._ids):
            try:
                fh = open(path, "rb", buffering=0)
            except OSError as exc:
                self.close()
                raise EmotkError(f"cannot open {path} to read features ({exc.strerror or exc}); the feature cache "
                                 "changed while training started (an `emotk extract` merging it?). Train again "
                                 "once it is finished.") from None
            st = os.fstat(fh.fileno())
            self._handles.append(fh)
            if (st.st_dev, st.st_ino) != want:
                self.close()
                raise EmotkError(f"{path} was replaced while training read it (an `emotk extract` merging the "
                                 "feature cache?). Train again once it is finished.")

    def close(self) -> None:
        for fh in self._handles:
            fh.close()
        self._handles = []

    def __getstate__(self) -> dict:  # for DataLoader workers started by spawn: they reopen the files
        state = dict(self.__dict__)
        state["_handles"] = []
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._open()

    def _rows(self, s: int, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` of sample ``s`` (float16)."""
        shape = self._shapes[s]
        if self._file[s] == IN_MEMORY:
            return self._block[self._offset[s]:self._offset[s] + self._sizes[s]].reshape(shape)[lo:hi]
        row = int(np.prod(shape[1:], dtype=np.int64)) * 2
        want = (hi - lo) * row
        data = os.pread(self._handles[self._file[s]].fileno(), want, int(self._offset[s]) + lo * row)
        if len(data) != want:
            raise EmotkError(f"{self._paths[self._file[s]]} is shorter than when training started (truncated "
                             "while reading); extract the feature cache again and train again.")
        return np.frombuffer(data, np.float16).reshape(hi - lo, *shape[1:])

    def take(self, s: int, frames: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        frames = np.asarray(frames, dtype=np.int64)
        n = self._shapes[s][0]
        if len(frames) and (frames.min() < 0 or frames.max() >= n):
            raise IndexError(f"frames {frames.min()}..{frames.max()} outside sample {s} of {n} frames")
        lo, hi = (int(frames.min()), int(frames.max()) + 1) if len(frames) else (0, 0)
        if not self._handles and self._paths:  # closed: open again
            self._open()
        rows = self._rows(s, lo, hi)
        if hi - lo != len(frames) or (len(frames) > 1 and not (np.diff(frames) == 1).all()):
            rows = rows[frames - lo]  # not one run of consecutive frames (a stride, edge padding, a clip's picks)
        return torch.from_numpy(rows.astype(np.float32)), np.ones(len(frames), bool)


class CropSource:
    """Stream ``crops``: face-crop images at the window's frame indices, resized to ``image_size`` (uint8)."""

    def __init__(self, ws: Workspace, dataset: str, rows: pl.DataFrame, image_size: int):
        from emotk.features.extract import list_frames

        self.size = image_size
        self.paths: list[list[Path | None]] = []
        self.masks: list[np.ndarray] = []
        for row in rows.iter_rows(named=True):
            if row["media_kind"] != "frames_dir":
                raise EmotkError(f"sample {row['sample_id']!r} has no face-crop folder (media kind {row['media_kind']!r}); "
                                 "the crops input needs frame folders (emotk prepare … --faces provided|detect).")
            folder = ws.media_path(dataset, row)
            n = int(row["n_frames"])
            paths: list[Path | None] = [None] * n
            if folder.is_dir():
                for i, p in list_frames(folder, int(row["frame_base"]), n):
                    paths[i] = p
            self.paths.append(paths)
            self.masks.append(np.array([p is not None for p in paths], dtype=bool))
        self.shape = (3, image_size, image_size)

    def _read(self, path: Path) -> torch.Tensor | None:
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                if im.size != (self.size, self.size):
                    im = im.resize((self.size, self.size), Image.BILINEAR)
                return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        except (OSError, ValueError):  # unreadable image: the frame is left out of the loss and metrics
            return None

    def take(self, s: int, frames: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        out = torch.zeros(len(frames), *self.shape, dtype=torch.uint8)
        ok = np.zeros(len(frames), bool)
        cache: dict[int, torch.Tensor | None] = {}
        for j, f in enumerate(frames):
            f = int(f)
            if f not in cache:
                path = self.paths[s][f]
                cache[f] = None if path is None else self._read(path)
            if cache[f] is not None:
                out[j], ok[j] = cache[f], True
        return out, ok


class ImageSource:
    """Stream ``image``: the dataset's image store, in memory (uint8), one ``[C, H, W]`` image per sample."""

    def __init__(self, ws: Workspace, dataset: str, sample_ids: list[str]):
        from emotk.features.images import load_images

        path = ws.images_path(dataset)
        if not path.exists():
            raise EmotkError(f"no image store {path}: image datasets write it at prepare; run "
                             f"`emotk prepare {dataset} --root RAW_DIR` (again).")
        array = load_images(path, sample_ids)  # one uint8 array; a missing or odd sample is a WorkspaceError
        array = array[:, None] if array.ndim == 3 else array.transpose(0, 3, 1, 2)
        self.images = torch.from_numpy(np.ascontiguousarray(array))  # [N, C, H, W]
        self.masks = [np.ones(1, bool) for _ in sample_ids]
        self.shape = tuple(self.images.shape[1:])

    def take(self, s: int, frames: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        return self.images[s], np.ones(len(frames), bool)


class SequenceSource:
    """Streams ``text`` / ``audio`` / ``video``: one whole sequence per utterance, cut or zero padded to
    ``length`` steps (the first steps are kept), in memory (float32). Steps the cache marks unobserved
    (a frame without a face, an out-of-vocabulary token) are zeros and False in the time mask.
    Functionals (``[D]`` per sample) are one step. A sample with no step is unobserved (left out, and
    counted by the run): so is one the cache lacks, because extraction listed it in failures.csv
    (silent audio, an empty transcript, no face crop)."""

    whole = True

    def __init__(self, ws: Workspace, dataset: str, stream: str, name: str, sample_ids: list[str], length: int):
        how = {"text": "--text glove", "audio": "--audio KIND", "video": "--encoder ENCODER"}[stream]
        with open_cache(ws, dataset, name, sample_ids, stream, how, require_all=False) as store:
            absent = (np.zeros((0, store.dim), np.float32), np.zeros(0, bool))
            loaded = [store.read(s) if s in store else absent for s in sample_ids]
        self.length = length
        self.seqs: list[np.ndarray] = []
        self.time_masks: list[np.ndarray] = []
        dims = set()
        for feats, mask in loaded:
            feats = np.asarray(feats, dtype=np.float32)
            mask = np.asarray(mask, dtype=bool).reshape(-1)
            if feats.ndim == 1:
                feats, mask = feats[None], np.ones(1, bool)
            feats = np.where(mask[:, None], feats, 0.0)[:length].astype(np.float32)
            if len(feats):
                dims.add(feats.shape[1])
            self.seqs.append(feats)
            self.time_masks.append(mask[:length])
        if len(dims) > 1:
            raise EmotkError(f"feature cache {name!r} holds samples of different widths {sorted(dims)}; extract it again.")
        self.masks = [np.array([bool(m.any())]) for m in self.time_masks]
        self.shape = (length, dims.pop() if dims else 0)

    def take_whole(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.zeros(self.shape, dtype=torch.float32)
        m = torch.zeros(self.length, dtype=torch.bool)
        n = len(self.seqs[s])
        if n:
            x[:n] = torch.from_numpy(self.seqs[s])
            m[:n] = torch.from_numpy(self.time_masks[s])
        return x, m


@dataclass
class Labels:
    frame: list[np.ndarray | None]  # per sample [T, L] float32 (NaN = no label), frame tasks
    clip: np.ndarray | None  # [N, L] float32, clip tasks


def load_labels(ws: Workspace, dataset: str, rows: pl.DataFrame, task: Task) -> Labels:
    ids = rows["sample_id"].to_list()
    if task.kind.startswith("frame"):
        labels = read_frame_labels(ws.labels_path(dataset), ids)
        return Labels([labels.get(s) for s in ids], None)
    missing = [c for c in task.targets if c not in rows.columns]
    if missing:
        raise EmotkError(f"manifest of {dataset} lacks label columns {missing}; run `emotk prepare` again.")
    return Labels([None] * len(ids), rows.select(list(task.targets)).to_numpy().astype(np.float32))


def make_sources(ws: Workspace, dataset: str, inputs: dict[str, str], sample_ids: list[str], what: str,
                 image_size: int | None = None, lengths: dict[str, int] | None = None) -> tuple[dict, pl.DataFrame]:
    """The sources of ``inputs`` (stream → spec) for ``sample_ids``, and their manifest rows."""
    rows = check_in_manifest(ws, dataset, sample_ids, what)
    sources = {}
    for stream, spec in inputs.items():
        if stream == "frames":
            sources[stream] = FrameSource(ws, dataset, spec, sample_ids)
        elif stream == "crops":
            sources[stream] = CropSource(ws, dataset, rows, int(image_size or spec or 112))
        elif stream == "image":
            sources[stream] = ImageSource(ws, dataset, sample_ids)
        elif stream in SEQUENCE_STREAMS:
            length = (lengths or {}).get(stream)
            if not length:
                raise EmotkError(f"the protocol gives no length for stream {stream!r}: add it to its `lengths` "
                                 f"(or pass --set lengths.{stream}=N), e.g. text 128, audio 1000, video 32 as Rajan et al.")
            sources[stream] = SequenceSource(ws, dataset, stream, spec, sample_ids, int(length))
        else:
            raise EmotkError(f"unknown input stream {stream!r}; this emotk reads {', '.join(STREAMS)}.")
    return sources, rows


@dataclass
class Windows:
    sample: np.ndarray  # [W] sample number
    frames: np.ndarray  # [W, L] frame indices (edge-padded)
    valid: np.ndarray  # [W, L] bool: real, labelled frame (not padding)


def observed(sources: dict, s: int) -> np.ndarray:
    """Frames of sample ``s`` that every stream observed."""
    masks = [src.masks[s] for src in sources.values()]
    n = min(len(m) for m in masks)
    ok = np.ones(n, bool)
    for m in masks:
        ok &= m[:n]
    return ok


def frame_windows(masks: list[np.ndarray], labels: Labels, seq_len: int, stride: int = 1) -> Windows:
    s_out, f_out, v_out = [], [], []
    for s, mask in enumerate(masks):
        ok = mask.copy()
        lab = labels.frame[s]
        if lab is not None:
            n = min(len(ok), len(lab))
            ok[:n] &= np.isfinite(lab[:n]).all(axis=1)
            ok[n:] = False
        else:
            ok[:] = False
        idx = np.flatnonzero(ok)[::stride]
        for start in range(0, len(idx), seq_len):
            chunk = idx[start:start + seq_len]
            pad = seq_len - len(chunk)
            s_out.append(s)
            f_out.append(np.concatenate([chunk, np.full(pad, chunk[-1])]))
            v_out.append(np.arange(seq_len) < len(chunk))
    if not s_out:
        raise EmotkError("no frame has both a valid label and every input stream: nothing to train on. Check failures.csv.")
    return Windows(np.asarray(s_out), np.stack(f_out), np.stack(v_out))


def clip_windows(masks: list[np.ndarray], labels: Labels, seq_len: int, stride: int = 1) -> Windows:
    s_out, f_out, v_out = [], [], []
    for s, mask in enumerate(masks):
        idx = np.flatnonzero(mask)[::stride]
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
    if not s_out:
        raise EmotkError("no clip has an observed frame in every input stream: nothing to train on. Check failures.csv.")
    return Windows(np.asarray(s_out), np.stack(f_out), np.stack(v_out))


WINDOW_BUILDERS = {
    "frame_regression": frame_windows,
    "frame_classification": frame_windows,
    "clip_multilabel": clip_windows,
    "clip_classification": clip_windows,
}


class WindowDataset(Dataset):
    """Index → a dict of one window's streams, masks, targets and its number."""

    def __init__(self, sources: dict, labels: Labels, task: Task, seq_len: int, stride: int = 1,
                 sample_ids: list[str] | None = None):
        self.sources, self.labels, self.task = sources, labels, task
        self.sample_ids = sample_ids or []
        masks = [observed(sources, s) for s in range(len(next(iter(sources.values())).masks))]
        if all(getattr(src, "whole", False) for src in sources.values()):
            seq_len, stride = 1, 1  # whole sequences: one item per utterance (each stream brings its own time axis)
        #: samples with no observed step in some stream (no face, empty transcript, …): they cannot be scored
        self.left_out = [self.sample_ids[s] if self.sample_ids else str(s) for s, m in enumerate(masks) if not m.any()]
        self.windows = WINDOW_BUILDERS[task.kind](masks, labels, seq_len, stride)

    def __len__(self) -> int:
        return len(self.windows.sample)

    def __getitem__(self, i: int) -> dict:
        s = int(self.windows.sample[i])
        frames = self.windows.frames[i]
        valid = self.windows.valid[i].copy()
        item: dict = {"index": i}
        for name, src in self.sources.items():
            if getattr(src, "whole", False):  # a whole sequence with its own time axis and mask
                item[name], item[f"{name}_mask"] = src.take_whole(s)
                continue
            x, ok = src.take(s, frames)
            item[name], item[f"{name}_mask"] = x, torch.from_numpy(ok)
            valid &= ok
        item["valid"] = torch.from_numpy(valid)
        if self.task.kind.startswith("frame"):
            item["y"] = torch.from_numpy(np.nan_to_num(self.labels.frame[s][frames], nan=0.0))
        else:
            item["y"] = torch.from_numpy(self.labels.clip[s])
        return item


def collate(batch: list[dict]) -> dict:
    return {k: torch.tensor([b[k] for b in batch]) if k == "index" else torch.stack([b[k] for b in batch])
            for k in batch[0]}
