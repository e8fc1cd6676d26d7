"""One training step (forward, backward, Adam) of NAC-TCN sm vs the TCN baseline on AffWild2-shaped
input: batch 16 windows of 256 frames × 440-d features, per-frame tanh head, 1 − CCC loss.

    python bench/step.py                   # nactcn sm affwild2 vs tcn sm affwild2, T=256, batch 16
    python bench/step.py --reps 10 --device cuda
    python bench/step.py --variants        # + NAC-TCN on the torch NA, the pre-rework NA core, the compiled NA

Both models are built exactly as ``emotk train`` builds them (registry presets + the task's head).
Times are the best of --reps interleaved steps after one warm-up step; the ratio is measured in
this run. ``nactcn`` runs the default backend ("auto": the native C kernel on the CPU where it builds).
``--variants`` adds, in the same interleaved run, ``nactcn:torch`` (``na_backend="torch"``, the CPU
default before the native kernel), ``nactcn:before`` (the NA layers running the causal core as it was
before the CPU rework, kept in bench/na.py) and ``nactcn:compiled`` (``na_backend="compiled"``, the
opt-in torch.compile'd NA core; its warm-up step compiles), each with its ratio to the TCN.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import time
from pathlib import Path

import torch

from emotk.models import build
from emotk.models.counting import count_params
from emotk.models.na import NeighborhoodAttention1d


def ccc_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    p, t = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
    pm, tm = p.mean(0), t.mean(0)
    cov = ((p - pm) * (t - tm)).mean(0)
    ccc = 2 * cov / (p.var(0) + t.var(0) + (pm - tm) ** 2 + 1e-8)
    return 1 - ccc.mean()


def with_na_before(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``net`` whose NA layers run bench/na.py's pre-rework causal core (bench only)."""
    spec = importlib.util.spec_from_file_location("bench_na", Path(__file__).with_name("na.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = copy.deepcopy(net)
    for layer in net.modules():
        if isinstance(layer, NeighborhoodAttention1d):
            if not layer.causal:
                raise SystemExit("--variants needs causal NA layers (na_mode causal)")
            layer.backend = "torch"
            layer._torch = (lambda q, k, v, impl="auto", layer=layer:
                            mod._na1d_reference_shift(q, k, v, layer.kernel_size, layer.dilation, rpb=layer.rpb))
    return net


def na_label(net: torch.nn.Module, seq_len: int, device: torch.device) -> str:
    """"   NA: <backend>" for a model with NA layers (the kernel its first NA layer runs on), else ""."""
    na = next((m for m in net.modules() if isinstance(m, NeighborhoodAttention1d)), None)
    return "" if na is None else f"   NA: {na.resolve_backend(torch.empty(1, seq_len, na.dim, device=device))}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="nactcn,tcn")
    ap.add_argument("--size", default="sm")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--variants", action="store_true", help="add nactcn:torch, nactcn:before and nactcn:compiled")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    x = torch.randn(a.batch, a.seq_len, 440, device=device)
    y = torch.tanh(torch.randn(a.batch, a.seq_len, 2, device=device))
    names = a.models.split(",")
    base = list(names)
    if a.variants and "nactcn" in names:
        names[names.index("nactcn") + 1:names.index("nactcn") + 1] = ["nactcn:torch", "nactcn:before", "nactcn:compiled"]
    steps = {}
    for name in names:
        model, _, variant = name.partition(":")
        opts = {"na_backend": variant} if variant in ("compiled", "torch") else {}
        torch.manual_seed(0)
        net = build(model, a.size, "affwild2", in_dim=440, out_dim=2, head="frame_tanh", **opts)
        if variant == "before":
            net = with_na_before(net)
        net = net.to(device).train()
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

        steps[name] = (step, count_params(net), na_label(net, a.seq_len, device))
    best = {n: float("inf") for n in names}
    warm = {}
    for n in names:
        t0 = time.perf_counter()
        steps[n][0]()  # warm-up (the compiled variant compiles here)
        warm[n] = time.perf_counter() - t0
    for _ in range(a.reps):
        for n in names:
            best[n] = min(best[n], steps[n][0]())
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"one training step, batch {a.batch} × T {a.seq_len} × 440, best of {a.reps}")
    for n in names:
        print(f"  {n:16s} {a.size}/affwild2  {steps[n][1]:>11,d} params   step {best[n] * 1e3:9.1f} ms"
              f"   (warm-up {warm[n]:.1f} s){steps[n][2]}")
    if len(base) == 2:
        for n in names[:-1]:
            print(f"  step-time ratio {n} / {base[1]} = {best[n] / best[base[1]]:.3f}")


if __name__ == "__main__":
    main()
