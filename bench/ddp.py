"""Training throughput of N gloo processes vs 1 on this machine, and the all-reduce share of a step.

    python bench/ddp.py                      # nactcn sm (AffWild2 preset) if registered, else gru
    python bench/ddp.py --model gru --nproc 2 --steps 20

Both runs use the same *global* batch (emotk's --batch-size semantics: each of N ranks computes
batch/N windows and the loss is taken over the gathered global batch, see
emotk.distributed). Per rank, the bench times training steps as emotk's loop runs them
(forward, gather, CCC loss, backward with DDP's all-reduce, Adam step) and the same steps under
``no_sync()`` (no gradient all-reduce); the difference is the all-reduce time not hidden behind the
backward pass. Figures are printed as ratios measured in one run. Synthetic features ([B, T, 440],
AffWild2's RegNetY-400MF width) stand in for a feature cache: data loading is not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(args) -> None:
    import torch

    from emotk.datasets import get_dataset
    from emotk.models import build
    from emotk.models.registry import find_preset
    from emotk import distributed as ddp
    from emotk.train.losses import ccc_loss

    info = ddp.init("cpu")
    task = get_dataset("affwild2").task
    preset = find_preset(args.model, args.size, "affwild2")
    seq_len = args.seq_len or (preset.seq_len if preset and preset.seq_len else task.seq_len)
    torch.manual_seed(0)
    model = build(args.model, args.size, "affwild2", in_dim=440, out_dim=2, head=task.head)
    net = torch.nn.parallel.DistributedDataParallel(model) if info.distributed else model
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sizes = ddp.shard_sizes(args.batch_size, info.world_size)
    local = sizes[info.rank]
    g = torch.Generator().manual_seed(1 + info.rank)
    x = torch.randn(max(sizes), seq_len, 440, generator=g)
    y = torch.rand(max(sizes), seq_len, 2, generator=g) * 2 - 1
    valid = torch.ones(max(sizes), seq_len, dtype=torch.bool)

    def step(sync: bool) -> float:
        ddp.barrier()
        t = time.perf_counter()
        ctx = net.no_sync() if (not sync and info.distributed) else _null()
        with ctx:
            out = ddp.gather_batch(net(x), sizes, info.rank, keep_grad=True)
            yy = ddp.gather_batch(y, sizes, info.rank, keep_grad=False)
            vv = ddp.gather_batch(valid, sizes, info.rank, keep_grad=False)
            loss = ccc_loss(out, yy, vv) * info.world_size
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        ddp.barrier()
        return time.perf_counter() - t

    for _ in range(args.warmup):
        step(True)
    synced, unsynced = [], []
    for _ in range(args.steps):  # interleaved, so drifts in machine load hit both alike
        synced.append(step(True))
        unsynced.append(step(False))
    if info.is_main:
        Path(args.out).write_text(json.dumps({
            "world": info.world_size, "local_batch": local, "seq_len": seq_len, "threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters()),
            "step_sync": sorted(synced)[len(synced) // 2], "step_nosync": sorted(unsynced)[len(unsynced) // 2],
        }))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def launch(nproc: int, args, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               str(Path(__file__).resolve()), "--worker", "--out", str(out), "--model", args.model,
               "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        if args.size:
            cmd += ["--size", args.size]
        if args.seq_len:
            cmd += ["--seq-len", str(args.seq_len)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model name [default: nactcn if registered, else gru]")
    p.add_argument("--size", default=None, help="preset size [default: sm for nactcn]")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32, help="global batch (windows)")
    p.add_argument("--seq-len", type=int, default=None, help="[default: the preset's, else the dataset's]")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    from emotk.models.registry import model_info
    from emotk.errors import ModelError

    note = ""
    if args.model is None:
        try:
            model_info("nactcn")
            args.model, args.size = "nactcn", args.size or "sm"
        except ModelError:
            args.model, note = "gru", " (nactcn is not registered: gru with the AffWild2 preset instead)"
    cores = os.cpu_count() or 1
    one = launch(1, args, threads=cores)  # one process uses every core
    many = launch(args.nproc, args, threads=max(cores // args.nproc, 1))  # N processes share them
    print(f"model {args.model}{'-' + args.size if args.size else ''}{note}: {one['params']:,} parameters, "
          f"global batch {args.batch_size} × {one['seq_len']} frames, {cores} CPU cores, gloo")
    print(f"1 process ({one['threads']} threads): {args.batch_size / one['step_sync']:.1f} windows/s")
    print(f"{args.nproc} processes ({many['threads']} threads each): {args.batch_size / many['step_sync']:.1f} windows/s")
    print(f"throughput {args.nproc} processes / 1 process: {one['step_sync'] / many['step_sync']:.2f}×")
    share = max(many["step_sync"] - many["step_nosync"], 0.0) / many["step_sync"]
    print(f"all-reduce share of a {args.nproc}-process step (step with sync vs no_sync): {share:.1%}")


if __name__ == "__main__":
    main()
