"""Frame-feature extraction: face crops of every sample → encoder → the feature store.

Images are decoded in DataLoader worker processes (uint8), resized and normalised on the encoder's device.
Samples are grouped, in manifest order, into *packs* of consecutive samples holding at least one
batch of frames; a pack's frames are cut into encoder batches from its first frame. Short clips
therefore share batches (the encoder always sees full batches), while the batches a frame is
encoded in depend only on the manifest — never on which samples are still to do or on the number
of processes — so an interrupted and re-run extraction, or one spread over several processes,
gives bit-identical features (CPU kernels round differently for different batch compositions).
A pack with any sample missing is encoded again whole; only its missing samples are written. A
sample is handed to the writer only when all its frames are encoded, so it is written whole or not
at all.

Under torchrun (``torchrun --nproc_per_node N -m emotk extract …`` or ``emotk extract --nproc N``)
rank r takes packs r, r+N, …, writes its own part files, and after a barrier rank 0 merges all
parts into ``<name>.h5`` and writes failures.csv.

A frame image that cannot be decoded (truncated or corrupt jpg) is masked like a missing crop and
listed in failures.csv (stage ``extract-frame``); a sample none of whose frames decode is skipped
and listed.

Every stored sample records the fingerprint of what it was made from (:func:`source_fingerprint`:
its manifest row, the names, sizes and modification times of its frame images, and the dataset's
prepare options). A re-run recomputes the samples whose fingerprint changed (``prepare`` made new
crops) and those whose checksum no longer matches (damaged bytes), and keeps the rest.

One extraction at a time writes a given cache: a second one waits for the first's lock
(:func:`emotk.locks.output_lock` on ``<name>.h5.lock``), saying who holds it, then finds the work done.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from emotk.datasets.base import failure
from emotk.errors import EmotkError
from emotk.features.encoders import IMAGENET_MEAN, IMAGENET_STD, load_encoder
from emotk.features.store import FeatureWriter, merge_parts
from emotk import distributed as ddp
from emotk.locks import output_lock
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
    bad_frames: int = 0
    steady_seconds: float = 0.0  # from the first encoded batch to the last write (excludes start-up)
    damaged: int = 0  # stored samples whose checksum failed: recomputed (or dropped if no longer extractable)
    stale: int = 0  # stored samples made from older crops / prepare settings: recomputed
    notes: list[str] = field(default_factory=list)  # unreadable cache files set aside
    failures: list[dict] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"features: {self.path}",
            f"samples: {self.done} extracted, {self.skipped_existing} already there, {self.failed} skipped (see failures.csv)",
            f"frames: {self.frames} encoded, {self.frames_missing} without a face crop (masked)"
            + (f", {self.bad_frames} unreadable images masked (see failures.csv)" if self.bad_frames else ""),
        ]
        if self.damaged or self.stale:
            out.append(f"recomputed: {self.damaged} damaged samples (checksum mismatch), "
                       f"{self.stale} made from crops or prepare settings that have changed since")
        return out + [f"note: {n}" for n in self.notes]


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
    """Flat list of (sample number, frame index, image path) → uint8 ``[3, H, W]`` tensors at native size.

    Resizing to the encoder's input size happens batched on the encoder's device (:class:`Prepare`),
    which keeps the workers' work and the inter-process traffic small; a batch whose images differ
    in size is resized in the worker by :func:`collate_frames`.
    """

    def __init__(self, items: list[tuple[int, int, Path]], image_size: int):
        self.items = items
        self.size = image_size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        s, f, path = self.items[i]
        try:
            with Image.open(path) as im:
                x = torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1)
            ok = True
        except Exception:  # unreadable image: reported by the main process
            x, ok = None, False
        return s, f, x, ok, self.size


class FrameBytes(FrameImages):
    """:class:`FrameImages` for ``decode="device"``: the workers only read each file's bytes (uint8 1-D
    tensors); the main process decodes the batch with ``torchvision.io.decode_jpeg`` on the encoder's
    device (nvJPEG on CUDA), so JPEG decoding leaves the CPU workers."""

    def __getitem__(self, i: int):
        s, f, path = self.items[i]
        try:
            data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
            ok = data.numel() > 0
        except OSError:
            data, ok = torch.zeros(0, dtype=torch.uint8), False
        return s, f, data, ok


def collate_bytes(batch):
    s, f, data, ok = zip(*batch)
    return torch.tensor(s), torch.tensor(f), list(data), torch.tensor(ok)


def decode_on_device(data: list[torch.Tensor], ok: torch.Tensor, size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of encoded images → uint8 ``[N, 3, size, size]`` on ``device`` and the per-image ok flags.

    One batched ``decode_jpeg`` call on ``device``; when it fails (a corrupt or non-JPEG file in the
    batch) the images are decoded one by one and the failing ones are masked; the batch is stacked as
    :func:`collate_frames` stacks it (:func:`stack_images`)."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    ok = ok.clone()
    idx = [i for i, good in enumerate(ok.tolist()) if good]
    try:
        images = decode_jpeg([data[i] for i in idx], mode=ImageReadMode.RGB, device=device) if idx else []
    except RuntimeError:
        images = []
        for i in idx:
            try:
                images.append(decode_image(data[i], mode=ImageReadMode.RGB).to(device))
            except RuntimeError:  # not decodable: masked like a missing crop
                images.append(None)
    xs: list[torch.Tensor | None] = [None] * len(data)
    for i, im in zip(idx, images):
        xs[i] = im
        ok[i] = im is not None
    return stack_images(xs, size, device), ok


def stack_images(xs: list, size: int, device="cpu") -> torch.Tensor:
    """One uint8 batch: images of one size are stacked at their native size (:class:`Prepare` resizes on
    the encoder's device); mixed sizes or unreadable images (None, zeros) are first brought to ``size``."""
    shapes = {x.shape for x in xs if x is not None}
    if len(shapes) != 1 or any(x is None for x in xs):
        xs = [torch.zeros(3, size, size, dtype=torch.uint8, device=device) if x is None else
              x if x.shape[1:] == (size, size) else
              F.interpolate(x[None].float(), size=(size, size), mode="bilinear", antialias=True,
                            align_corners=False).round().clamp(0, 255).to(torch.uint8)[0] for x in xs]
    return torch.stack(xs)


def collate_frames(batch):
    """Stack a batch (:func:`stack_images`)."""
    s, f, xs, ok, size = zip(*batch)
    return torch.tensor(s), torch.tensor(f), stack_images(list(xs), size[0]), torch.tensor(ok)


class Prepare(torch.nn.Module):
    """uint8 images → resized to ``size`` (bilinear, antialiased) → ImageNet-normalised floats."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True, align_corners=False)
        return (x - self.mean) / self.std


#: Manifest fields a sample's features depend on (labels do not).
SOURCE_FIELDS = ("sample_id", "kind", "media", "media_root", "media_kind", "frame_base", "n_frames", "fps")


def source_fingerprint(row: dict, frames: list[tuple[int, Path]], prepare_options: dict) -> str:
    """sha256 of what a sample's features are made from: its manifest fields, each frame image's
    index, name, size and modification time, and the dataset's prepare options."""
    h = hashlib.sha256(json.dumps({"row": {k: row.get(k) for k in SOURCE_FIELDS}, "prepare": prepare_options},
                                  sort_keys=True, default=str).encode())
    for i, p in frames:
        try:
            st = p.stat()
            h.update(f"{i}|{p.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{i}|{p.name}|missing\n".encode())
    return h.hexdigest()


def prepare_options(ws: Workspace, dataset: str) -> dict:
    """The options ``prepare`` was run with (from dataset.json), less those that change no output."""
    options = dict(ws.read_info(dataset).get("options") or {})
    options.pop("progress", None)
    return options


def make_packs(frame_counts: list[int], batch_size: int) -> list[list[int]]:
    """Group consecutive samples (by position) into packs of at least ``batch_size`` frames."""
    packs, current, size = [], [], 0
    for s, n in enumerate(frame_counts):
        current.append(s)
        size += n
        if size >= batch_size:
            packs.append(current)
            current, size = [], 0
    if current:
        packs.append(current)
    return packs


def shard_packs(frame_counts: list[int], batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    """The packs process ``rank`` of ``world_size`` encodes: packs rank, rank + world_size, … of
    :func:`make_packs` over every sample (so a pack, and thus its batches, never depends on the rank)."""
    return make_packs(frame_counts, batch_size)[rank::world_size]


def pack_batches(pack_sizes: list[int], batch_size: int) -> list[list[int]]:
    """Batches of item indices, each within one pack, cut from the pack's first frame."""
    out, offset = [], 0
    for n in pack_sizes:
        out += [list(range(offset + i, offset + min(i + batch_size, n))) for i in range(0, n, batch_size)]
        offset += n
    return out


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
    fps: float | None = None,
    rank: int | None = None,
    world_size: int | None = None,
    progress: bool = True,
    flush_frames: int = 4096,
    lock_timeout: float | None = None,
    decode: str = "workers",
) -> ExtractSummary:
    """Encode every sample's frames; see the module docstring.

    ``decode``: ``workers`` (PIL in the DataLoader workers, the default) or ``device`` (the workers only
    read bytes; JPEGs are decoded batched on the encoder's device — nvJPEG on CUDA — which takes the
    decoding off the CPU). The decoders may differ in the last bit, so ``device`` is recorded in the
    cache's provenance (a cache is never a mix of both).

    Subsampling: ``every`` keeps every n-th frame; ``fps`` keeps about ``fps`` frames per second of
    each video (every round(native fps / fps)-th frame; samples whose fps is unknown keep all frames
    and are listed in failures.csv). Frames left out are masked, the time axis stays native.

    ``rank``/``world_size`` default to torchrun's (one process when not under torchrun). Returns this
    rank's summary; under torchrun rank 0's summary counts every rank.

    While another extraction writes the same cache, this one waits (``lock_timeout`` seconds at most,
    then :class:`emotk.locks.OutputLockedError`; None: as long as it takes).
    """
    if decode not in ("workers", "device"):
        raise EmotkError(f"decode={decode!r}: choose workers (PIL in the DataLoader workers) or device.")
    info = ddp.init(device) if rank is None and world_size is None else ddp.DistInfo(rank or 0, world_size or 1)
    name = name or encoder
    path = ws.feature_path(dataset, name)
    lock = output_lock(path, what="feature cache", timeout=lock_timeout) if info.is_main else nullcontext()
    with lock:  # rank 0 holds the cache's lock for the whole job; the other ranks wait for it here
        ddp.barrier()
        return _extract(ws, dataset, info, path, name, encoder, weights, image_size, batch_size, num_workers,
                        device, dtype, every, fps, progress, flush_frames, decode)


def _extract(ws: Workspace, dataset: str, info: ddp.DistInfo, path: Path, name: str, encoder: str, weights: str,
             image_size: int, batch_size: int, num_workers: int, device: str | None, dtype: str, every: int,
             fps: float | None, progress: bool, flush_frames: int, decode: str) -> ExtractSummary:
    """The extraction itself, under the cache's lock (see :func:`extract_frames`)."""
    rank, world_size = info.rank, info.world_size
    manifest = ws.read_manifest(dataset)
    options = prepare_options(ws, dataset)
    device = str(ddp.device_for(info, device))
    enc = load_encoder(encoder, weights, image_size)
    provenance = {"extractor": "frames", "encoder": encoder, "weights": enc.weights, "image_size": image_size,
                  "dim": enc.dim, "dtype": dtype, "every": every, "fps": fps or "native", "dataset": dataset}
    if decode == "device":  # another decoder: another cache (absent for the default, so older caches still match)
        provenance["decode"] = f"device:{torch.device(device).type}"
    writer = FeatureWriter(path, provenance, rank=rank, flush_frames=flush_frames, world_size=world_size)
    summary = ExtractSummary(name=name, path=path)

    listed = []  # (row, folder, frames, fps known) of every sample; every rank lists all: packs must not depend on rank
    for row in manifest.iter_rows(named=True):
        folder = ws.media_path(dataset, row)
        frames = list_frames(folder, row["frame_base"] or 0, row["n_frames"]) if folder.is_dir() else []
        step = every
        native = row.get("fps")
        if fps and native and native > 0:
            step *= max(1, round(native / fps))
        if step > 1:
            frames = [(i, p) for i, p in frames if i % step == 0]
        listed.append((row, folder, frames, bool(native and native > 0)))
    sources = {row["sample_id"]: source_fingerprint(row, frames, options) for row, _, frames, _ in listed if frames}
    inventory = writer.inventory(sources)
    done = inventory.done
    if info.is_main:
        summary.damaged, summary.stale, summary.notes = len(inventory.damaged), len(inventory.stale), inventory.removed

    rows, frame_lists = [], []
    for row, folder, frames, fps_known in listed:
        if fps and not fps_known and rank == 0 and row["sample_id"] not in done:
            summary.failures.append(failure(row["sample_id"], "extract-fps", folder, "native frame rate unknown: --fps not applied",
                                            "nothing (all frames encoded), or use --every N"))
        if not frames:
            if rank == 0 and row["sample_id"] not in done:
                summary.failures.append(failure(row["sample_id"], "extract", folder, "no frame images found",
                                                "re-run `emotk prepare` or restore the crops"))
            continue
        rows.append(row)
        frame_lists.append(frames)
    packs = shard_packs([len(f) for f in frame_lists], batch_size, rank, world_size)
    todo_packs = [p for p in packs if any(rows[s]["sample_id"] not in done for s in p)]
    summary.skipped_existing = sum(rows[s]["sample_id"] in done for p in packs for s in p)
    order = [s for p in todo_packs for s in p]
    todo = [rows[s] for s in order]
    lists = [frame_lists[s] for s in order]
    keep = [row["sample_id"] not in done for row in todo]  # samples of a redone pack already stored: not rewritten
    items = [(k, i, p) for k, frames in enumerate(lists) for i, p in frames]
    remaining = [len(f) for f in lists]
    feats: dict[int, np.ndarray] = {}
    masks: dict[int, np.ndarray] = {}
    module = torch.nn.Sequential(Prepare(image_size), enc.module).to(device).eval()
    if device.startswith("cuda"):
        module = module.to(memory_format=torch.channels_last)
    batches = pack_batches([sum(len(frame_lists[s]) for s in p) for p in todo_packs], batch_size)
    on_device = decode == "device"
    loader = DataLoader(FrameBytes(items, image_size) if on_device else FrameImages(items, image_size),
                        batch_sampler=batches, collate_fn=collate_bytes if on_device else collate_frames,
                        num_workers=num_workers, pin_memory=device.startswith("cuda") and not on_device,
                        persistent_workers=False, prefetch_factor=4 if num_workers else None)
    np_dtype = np.float16 if dtype == "float16" else np.float32
    bar = tqdm(total=len(items), unit="frame", desc=f"extract {name}", disable=not (progress and info.is_main))
    t_first = None  # steady-state timing: from the first encoded batch on (excludes start-up)
    cuda = device.startswith("cuda")

    def assemble(s_idx, f_idx, ok, y: np.ndarray) -> None:
        """Put one batch's features into their samples; hand each completed sample to the writer."""
        s_all, f_all, ok_all = s_idx.numpy(), f_idx.numpy(), ok.numpy()
        for s in np.unique(s_all):  # a batch holds a few samples: assign their rows at once
            s = int(s)
            row, sel = todo[s], s_all == s
            if s not in feats:
                feats[s] = np.zeros((row["n_frames"], enc.dim), dtype=np.float32)
                masks[s] = np.zeros(row["n_frames"], dtype=bool)
            good = sel & ok_all
            feats[s][f_all[good]] = y[good]
            masks[s][f_all[good]] = True
            if keep[s]:
                for f in f_all[sel & ~ok_all].tolist():
                    summary.failures.append(failure(
                        row["sample_id"], "extract-frame", dict(lists[s])[f],
                        "image cannot be decoded (truncated or corrupt); the frame is masked like a missing crop",
                        "restore this crop and run extract on a new --name to include it, or leave it masked"))
            remaining[s] -= int(sel.sum())
            if remaining[s] == 0:
                sample_feats, sample_mask = feats.pop(s), masks.pop(s)
                if keep[s]:
                    _finish_sample(writer, summary, row, sample_feats, sample_mask, np_dtype, sources[row["sample_id"]])
        bar.update(len(f_idx))

    pending = None  # on CUDA: the previous batch, assembled while the GPU encodes the next one
    with torch.inference_mode():
        for s_idx, f_idx, x, ok in loader:
            if on_device:
                x, ok = decode_on_device(x, ok, image_size, device)
                ok = ok.cpu()
            x = x.to(device, non_blocking=True)
            if cuda:
                with torch.autocast("cuda", dtype=torch.float16):
                    y = module(x.to(memory_format=torch.channels_last)).float()
                host = torch.empty(y.shape, dtype=y.dtype, pin_memory=True)
                host.copy_(y, non_blocking=True)
                done_event = torch.cuda.Event()
                done_event.record()
                if pending is not None:
                    pending[-1].synchronize()  # the previous batch's copy only, not this batch's forward
                    assemble(*pending[:3], pending[3].numpy())
                pending = (s_idx, f_idx, ok, host, done_event)
            else:
                assemble(s_idx, f_idx, ok, module(x).numpy())
            if t_first is None:
                t_first = time.perf_counter()
        if pending is not None:
            pending[-1].synchronize()
            assemble(*pending[:3], pending[3].numpy())
    bar.close()
    writer.flush()
    if t_first is not None:
        summary.steady_seconds = time.perf_counter() - t_first
    written = writer.written
    if info.distributed:  # totals and failures to rank 0, which merges once every rank is done
        everyone = ddp.gather_objects((summary, written))
        if info.is_main:
            summary = _combine([s for s, _ in everyone])
            written = set().union(*(w for _, w in everyone))
        ddp.barrier()
    if info.is_main:
        merge_parts(path, drop=set(inventory.damaged) - written)  # damaged and not recomputed: left out
        if summary.failures:
            write_failures(ws.failures_path(dataset), summary.failures, append=True)
    summary.failed = len({f["sample_id"] for f in summary.failures if f["stage"] == "extract"})
    summary.bad_frames = sum(1 for f in summary.failures if f["stage"] == "extract-frame")
    ddp.barrier()
    return summary


def _combine(summaries: list[ExtractSummary]) -> ExtractSummary:
    out = ExtractSummary(name=summaries[0].name, path=summaries[0].path, damaged=summaries[0].damaged,
                         stale=summaries[0].stale, notes=summaries[0].notes)
    for s in summaries:
        out.done += s.done
        out.skipped_existing += s.skipped_existing
        out.frames += s.frames
        out.frames_missing += s.frames_missing
        out.failures += s.failures
    return out


def _finish_sample(writer: FeatureWriter, summary: ExtractSummary, row: dict, feats: np.ndarray, mask: np.ndarray, np_dtype,
                   source: str | None = None) -> None:
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
    writer.add(sid, feats.astype(np_dtype), mask, source=source)
    summary.done += 1
    summary.frames += int(mask.sum())
    summary.frames_missing += int((~mask).sum())


__all__ = ["extract_frames", "ExtractSummary", "list_frames", "source_fingerprint"]
