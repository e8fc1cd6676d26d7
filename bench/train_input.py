"""Training input pipeline at Aff-Wild2 scale: share of step time spent waiting for data, and peak RSS.

Builds a synthetic workspace (manifest, labels.h5, a float16 feature cache of --frames × 440,
an official split) with emotk's own writers, then runs training steps of --model through the
same windowing, dataset and loss the trainer uses, timing how long each step waits for its batch.

    python bench/train_input.py                    # 1.5 M frames (the issue's scale, ~1.3 GB cache)
    python bench/train_input.py --frames 200000    # quicker
"""

from __future__ import annotations

import argparse
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
from emotk.train.data import WindowDataset, collate, load_labels, make_sources
from emotk.train.losses import ccc_loss
from emotk.workspace import Workspace


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=1_500_000)
    ap.add_argument("--per-sample", type=int, default=3000)
    ap.add_argument("--model", default="gru")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--build-into", help=argparse.SUPPRESS)  # internal: build the cache in a child process
    args = ap.parse_args()
    if args.build_into:
        build_workspace(Path(args.build_into), args.frames, args.per_sample, 440)
        return
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        # built by a child process so this process's peak RSS measures training alone
        subprocess.run([sys.executable, __file__, "--frames", str(args.frames), "--per-sample", str(args.per_sample),
                        "--build-into", tmp], check=True)
        ws = Workspace.open(tmp)
        cache = ws.feature_path("affwild2", "synthetic").stat().st_size
        print(f"cache: {args.frames:,} frames × 440 float16 = {cache / 2**30:.2f} GiB (built in {time.perf_counter() - t0:.0f} s)")
        rss_before = rss_bytes()
        task = get_dataset("affwild2").task
        ids = pl.read_parquet(ws.manifest_path("affwild2"))["sample_id"].to_list()
        t0 = time.perf_counter()
        sources, rows = make_sources(ws, "affwild2", {"frames": "synthetic"}, ids, "the benchmark's samples")
        data = WindowDataset(sources, load_labels(ws, "affwild2", rows, task), task, 256, sample_ids=ids)
        held = rss_bytes() - rss_before
        print(f"loaded {len(ids)} samples, {len(data)} windows of 256 in {time.perf_counter() - t0:.1f} s")
        model = build(args.model, "sm", "affwild2", in_dim=440, out_dim=2, head="frame_tanh")
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        loader = DataLoader(data, batch_size=16, shuffle=True, collate_fn=collate, num_workers=args.workers,
                            generator=torch.Generator().manual_seed(0))
        wait = compute = 0.0
        it = iter(loader)
        for step in range(args.steps + 3):
            t_a = time.perf_counter()
            batch = next(it)
            t_b = time.perf_counter()
            loss = ccc_loss(model(batch["frames"]), batch["y"], batch["valid"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            t_c = time.perf_counter()
            if step >= 3:  # warm-up steps excluded
                wait += t_b - t_a
                compute += t_c - t_b
        peak = peak_rss_bytes()
        print(f"model {args.model} sm affwild2, batch 16 × 256 frames, {args.steps} steps, {args.workers} loader workers")
        print(f"data wait share of step time: {wait / (wait + compute):.2%} (wait {wait / args.steps * 1e3:.1f} ms, "
              f"compute {compute / args.steps * 1e3:.0f} ms per step; target ≤ 5 %)")
        print(f"peak RSS / cache size: {peak / cache:.2f}× (peak {peak / 2**30:.2f} GiB; "
              f"before loading {rss_before / 2**30:.2f} GiB; features held in memory {held / cache:.2f}× cache; target ≤ 1.3×)")


if __name__ == "__main__":
    main()
