"""One training step (forward, backward, Adam) of NAC-TCN sm vs the TCN baseline on AffWild2-shaped
input: batch 16 windows of 256 frames × 440-d features, per-frame tanh head, 1 − CCC loss.

    python bench/step.py                   # nactcn sm affwild2 vs tcn sm affwild2, T=256, batch 16
    python bench/step.py --reps 10 --device cuda

Both models are built exactly as ``emotk train`` builds them (registry presets + the task's head).
Times are the best of --reps interleaved steps after one warm-up step; the ratio is measured in
this run.
"""

from __future__ import annotations

import argparse
import time

import torch

from emotk.models import build
from emotk.models.counting import count_params


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p, t = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
    pm, tm = p.mean(0), t.mean(0)
    cov = ((p - pm) * (t - tm)).mean(0)
    ccc = 2 * cov / (p.var(0) + t.var(0) + (pm - tm) ** 2 + 1e-8)
    return 1 - ccc.mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="nactcn,tcn")
    ap.add_argument("--size", default="sm")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    x = torch.randn(a.batch, a.seq_len, 440, device=device)
    y = torch.tanh(torch.randn(a.batch, a.seq_len, 2, device=device))
    names = a.models.split(",")
    steps = {}
    for name in names:
        net = build(name, a.size, "affwild2", in_dim=440, out_dim=2, head="frame_tanh").to(device).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step(net=net, opt=opt) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            ccc_loss(net(x), y).backward()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        steps[name] = (step, count_params(net))
    best = {n: float("inf") for n in names}
    for n in names:
        steps[n][0]()  # warm-up
    for _ in range(a.reps):
        for n in names:
            best[n] = min(best[n], steps[n][0]())
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"one training step, batch {a.batch} × T {a.seq_len} × 440, best of {a.reps}")
    for n in names:
        print(f"  {n:8s} {a.size}/affwild2  {steps[n][1]:>11,d} params   step {best[n] * 1e3:9.1f} ms")
    if len(names) == 2:
        print(f"  step-time ratio {names[0]} / {names[1]} = {best[names[0]] / best[names[1]]:.3f}")


if __name__ == "__main__":
    main()
