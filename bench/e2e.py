"""End-to-end training throughput: regnet_y_400mf + NAC-TCN sm from 112-px face crops, against the same
network on preloaded tensors (the input pipeline's cost made visible).

Builds a miniature Aff-Wild2 release (real JPEG crops, real annotation files) and prepares it, then
times training steps (forward + CCC loss + backward + Adam) two ways, interleaved so both see the
same machine load:

- **end to end**: emotk's own pipeline — windows of crops decoded by DataLoader workers
  (``--workers``), uint8 to the device, scaled there, through the model;
- **preloaded**: the same batches decoded beforehand and held on the device as float tensors.

Prints frames/s of both and their ratio (target ≥ 0.8: the input pipeline hidden behind compute).

    python bench/e2e.py                          # CPU, batch 2 × 32 frames
    python bench/e2e.py --device cuda --batch 8 --seq-len 64 --workers 8 --steps 30
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from emotk.datasets import prepare_dataset
from emotk.synth import make_affwild2
from emotk.splits import make_split
from emotk.train.data import collate
from emotk.train.loop import TrainConfig, build_model, make_dataset, resolve, select_parts, to_device
from emotk.train.losses import ccc_loss
from emotk.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=2, help="windows per step")
    ap.add_argument("--seq-len", type=int, default=32, help="frames per window")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per way (after 2 warm-up steps)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tracks", type=int, default=6)
    ap.add_argument("--frames", type=int, default=200, help="frames per track")
    args = ap.parse_args()
    device = torch.device(args.device)
    amp = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        tracks = {f"{100 + i}": ("Train_Set" if i else "Validation_Set", args.frames) for i in range(args.tracks)}
        make_affwild2(raw, tracks=tracks, seed=0, size=112)
        ws = Workspace.open(Path(tmp) / "ws")
        prepare_dataset(ws, "affwild2", raw, progress=False)
        make_split(ws, "affwild2", by="official")
        cfg = TrainConfig(model="nactcn", size="sm", dataset="affwild2", split="official", inputs={"crops": ""},
                          protocol="nactcn", device=args.device,
                          overrides={"encoder.weights": "none", "seq_len": args.seq_len, "select_on": "last",
                                     "stages.*.batch_size": args.batch})
        run = resolve(ws, cfg)
        data = make_dataset(ws, run, select_parts(ws, cfg, run.protocol).train, "the benchmark's tracks")
        torch.manual_seed(0)
        model, streams = build_model(run, {k: s.shape for k, s in data.sources.items()})
        model = model.to(device)
        if amp:
            model.encoder.to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        loader = DataLoader(data, batch_size=args.batch, shuffle=True, collate_fn=collate, num_workers=args.workers,
                            persistent_workers=args.workers > 0, pin_memory=amp, drop_last=True,
                            generator=torch.Generator().manual_seed(0))
        n_batches = len(loader)
        preloaded = [to_device(b, device) for b, _ in zip(loader, range(min(n_batches, args.steps + 2)))]

        def step(b: dict) -> None:
            with torch.autocast("cuda", enabled=amp):
                out = model(*(b[s] for s in streams))
            loss = ccc_loss(out, b["y"], b["valid"])
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        def sync() -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()

        def timed_e2e(k: int) -> float:
            it, total = iter(loader), 0.0
            for i in range(k + 2):
                try:
                    t0 = time.perf_counter()
                    b = to_device(next(it), device)
                except StopIteration:
                    it = iter(loader)
                    t0 = time.perf_counter()
                    b = to_device(next(it), device)
                step(b)
                sync()
                if i >= 2:
                    total += time.perf_counter() - t0
            return total

        def timed_preloaded(k: int) -> float:
            total = 0.0
            for i in range(k + 2):
                t0 = time.perf_counter()
                step(preloaded[i % len(preloaded)])
                sync()
                if i >= 2:
                    total += time.perf_counter() - t0
            return total

        half = max(1, args.steps // 2)
        e2e = pre = 0.0
        for _ in range(2):  # interleaved: both ways see the same machine load
            pre += timed_preloaded(half)
            e2e += timed_e2e(half)
        frames = 2 * half * args.batch * args.seq_len
        params = sum(p.numel() for p in model.parameters())
        print(f"regnet_y_400mf + nactcn sm at 112 px on {device} ({params:,} params), batch {args.batch} × "
              f"{args.seq_len} frames, {args.workers} loader workers, {2 * half} timed steps each, "
              f"{torch.get_num_threads()} threads{', AMP + channels-last' if amp else ''}")
        print(f"end to end (crops decoded by the input pipeline): {frames / e2e:8.1f} frames/s")
        print(f"preloaded tensors on the device:                   {frames / pre:8.1f} frames/s")
        print(f"ratio end to end / preloaded: {pre / e2e:.2f} (target ≥ 0.8)")


if __name__ == "__main__":
    main()
