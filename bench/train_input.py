"""Training input pipeline at Aff-Wild2 scale: share of step time spent waiting for data, and peak RSS.

Builds a synthetic workspace (manifest, labels.h5, a float16 feature cache of --frames × 440,
an official split) with emotk's own writers, then runs training steps of --model through the
same windowing, dataset and loss the trainer uses, timing how long each step waits for its batch,
then reads every window once (a whole epoch's data). Each loader runs in its own process, so each
peak RSS is its own:

- ``before``: the loader before issue 14 (kept here only): every sample read into its own float16
  array, the whole cache in the process's memory;
- ``after``: ``emotk.train.data.FrameSource``: samples verified at load, rows read from the file
  per window (the page cache, not the process, holds the file).

    python bench/train_input.py                    # 1.5 M frames (the issue's scale, ~1.3 GB cache)
    python bench/train_input.py --frames 200000    # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader

from emotk.atomic import write_json, write_parquet
from emotk.datasets import get_dataset, write_frame_labels
from emotk.features.store import FeatureWriter
from emotk.models import build
from emotk.train.data import WindowDataset, check_in_manifest, collate, load_labels, make_sources, read_cache
from emotk.train.losses import ccc_loss
from emotk.workspace import Workspace


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def anon_bytes() -> int:
    """Resident anonymous memory (heap, arrays): what the process owns, unlike pages of mapped files."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


class LegacyFrameSource:
    """The ``frames`` loader before issue 14, for comparison only: every sample in its own float16 array."""

    def __init__(self, ws: Workspace, dataset: str, name: str, sample_ids: list[str]):
        loaded = read_cache(ws, dataset, name, sample_ids, "frames", "--encoder ENCODER")
        self.feats = [np.asarray(f, dtype=np.float16) for f, _ in loaded]
        self.masks = [np.asarray(m, dtype=bool) for _, m in loaded]
        self.shape = tuple(self.feats[0].shape[1:]) if self.feats else ()

    def take(self, s: int, frames: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        return torch.from_numpy(self.feats[s][frames].astype(np.float32)), np.ones(len(frames), bool)


def build_workspace(root: Path, frames: int, per_sample: int, dim: int) -> None:
    ws = Workspace.open(root)
    ws.ensure()
    rng = np.random.default_rng(0)
    n = frames // per_sample
    rows, labels = [], {}
    writer = FeatureWriter(ws.feature_path("affwild2", "synthetic"), {"extractor": "synthetic", "dim": dim}, flush_frames=200_000)
    for i in range(n):
        sid = f"track{i:04d}"
        rows.append({"sample_id": sid, "subject": f"s{i}", "split": "train" if i % 5 else "validation", "kind": "video",
                     "media": sid, "media_root": "raw", "media_kind": "frames_dir", "frame_base": 1,
                     "n_frames": per_sample, "fps": 30.0})
        labels[sid] = rng.uniform(-1, 1, (per_sample, 2)).astype(np.float32)
        writer.add(sid, rng.standard_normal((per_sample, dim), dtype=np.float32).astype(np.float16))
    writer.finalize()
    write_frame_labels(ws.labels_path("affwild2"), labels, ("valence", "arousal"))
    write_json(ws.info_path("affwild2"), {"raw_root": str(root)})
    manifest = pl.DataFrame(rows)
    write_parquet(ws.manifest_path("affwild2"), manifest)


def measure(root: Path, loader: str, model_name: str, steps: int, workers: int) -> dict:
    """One loader's figures, in this (fresh) process."""
    torch.set_num_threads(2)
    ws = Workspace.open(root)
    rss_before = rss_bytes()
    task = get_dataset("affwild2").task
    ids = pl.read_parquet(ws.manifest_path("affwild2"))["sample_id"].to_list()
    t0 = time.perf_counter()
    if loader == "before":
        rows = check_in_manifest(ws, "affwild2", ids, "the benchmark's samples")
        sources = {"frames": LegacyFrameSource(ws, "affwild2", "synthetic", ids)}
    else:
        sources, rows = make_sources(ws, "affwild2", {"frames": "synthetic"}, ids, "the benchmark's samples")
    data = WindowDataset(sources, load_labels(ws, "affwild2", rows, task), task, 256, sample_ids=ids)
    load_s = time.perf_counter() - t0
    held = rss_bytes() - rss_before
    model = build(model_name, "sm", "affwild2", in_dim=440, out_dim=2, head="frame_tanh")
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loader_ = DataLoader(data, batch_size=16, shuffle=True, collate_fn=collate, num_workers=workers,
                         generator=torch.Generator().manual_seed(0))
    wait = compute = 0.0
    anon = anon_bytes()
    it = iter(loader_)
    for step in range(steps + 3):
        t_a = time.perf_counter()
        batch = next(it)
        t_b = time.perf_counter()
        loss = ccc_loss(model(batch["frames"]), batch["y"], batch["valid"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        t_c = time.perf_counter()
        anon = max(anon, anon_bytes())
        if step >= 3:  # warm-up steps excluded
            wait += t_b - t_a
            compute += t_c - t_b
    peak_steps = peak_rss_bytes()
    t0 = time.perf_counter()
    for i in range(len(data)):  # every window once: a whole epoch's data
        data[i]
        if i % 500 == 0:
            anon = max(anon, anon_bytes())
    epoch_s = time.perf_counter() - t0
    anon = max(anon, anon_bytes())
    return {"rss_before": rss_before, "held": held, "load_s": load_s, "windows": len(data), "samples": len(ids),
            "wait": wait, "compute": compute, "peak_steps": peak_steps, "peak": peak_rss_bytes(),
            "anon": anon, "epoch_s": epoch_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_500_000)
    ap.add_argument("--per-sample", type=int, default=3000)
    ap.add_argument("--model", default="gru")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--loaders", default="before,after", help="which loaders to measure (before, after)")
    ap.add_argument("--build-into", help=argparse.SUPPRESS)  # internal: build the cache in a child process
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: measure one loader in a child process
    ap.add_argument("--workspace", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build_into:
        build_workspace(Path(args.build_into), args.frames, args.per_sample, 440)
        return
    if args.measure:
        print(json.dumps(measure(Path(args.workspace), args.measure, args.model, args.steps, args.workers)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        # built by a child process so the measuring processes' peak RSS is training alone
        subprocess.run([sys.executable, __file__, "--frames", str(args.frames), "--per-sample", str(args.per_sample),
                        "--build-into", tmp], check=True)
        ws = Workspace.open(tmp)
        cache = ws.feature_path("affwild2", "synthetic").stat().st_size
        print(f"cache: {args.frames:,} frames × 440 float16 = {cache / 2**30:.2f} GiB (built in {time.perf_counter() - t0:.0f} s)")
        print(f"model {args.model} sm affwild2, batch 16 × 256 frames, {args.steps} steps, {args.workers} loader workers")
        results = {}
        for loader in args.loaders.split(","):
            out = subprocess.run([sys.executable, __file__, "--measure", loader, "--workspace", tmp, "--model", args.model,
                                  "--steps", str(args.steps), "--workers", str(args.workers)],
                                 check=True, capture_output=True, text=True).stdout
            r = results[loader] = json.loads(out.strip().splitlines()[-1])
            steps = max(args.steps, 1)
            print(f"[{loader}] loaded {r['samples']} samples, {r['windows']} windows of 256 in {r['load_s']:.1f} s; "
                  f"features held in the process {r['held'] / cache:.2f}× cache; read every window in {r['epoch_s']:.1f} s")
            print(f"[{loader}] data wait share of step time: {r['wait'] / max(r['wait'] + r['compute'], 1e-9):.2%} "
                  f"(wait {r['wait'] / steps * 1e3:.1f} ms, compute {r['compute'] / steps * 1e3:.0f} ms per step; target ≤ 5 %)")
            print(f"[{loader}] peak RSS / cache size: {r['peak'] / cache:.2f}× (peak {r['peak'] / 2**30:.2f} GiB after "
                  f"the steps and a pass over every window, {r['peak_steps'] / 2**30:.2f} GiB after the steps; "
                  f"interpreter and libraries before loading {r['rss_before'] / 2**30:.2f} GiB = {r['rss_before'] / cache:.2f}× cache; "
                  f"peak anonymous memory {r['anon'] / 2**30:.2f} GiB; target ≤ 1.3×)")
        if "before" in results and "after" in results:
            b, a = results["before"], results["after"]
            print(f"peak RSS / cache size: before {b['peak'] / cache:.2f}×, after {a['peak'] / cache:.2f}×; "
                  f"above the interpreter and libraries: before {(b['peak'] - b['rss_before']) / cache:.2f}×, "
                  f"after {(a['peak'] - a['rss_before']) / cache:.2f}×")


if __name__ == "__main__":
    main()
