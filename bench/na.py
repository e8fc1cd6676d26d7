"""Causal dilated neighborhood attention: emotk's gather NA vs dense masked attention, and the NA
core's share of a NAC-TCN block (forward + backward, CPU or the current CUDA device).

    python bench/na.py                  # T = 256 and 4096, C = 128, k = 7, d = 8, batch 4, 2 heads
    python bench/na.py --heads 1 --reps 5

Printed ratios are measured in this run (best of --reps after a warm-up, the candidates interleaved
so that machine load hits all of them alike). Dense baselines: ``dense`` = explicit q·kᵀ, mask,
softmax, ·v (what one writes without NA), ``sdpa`` = PyTorch's fused scaled_dot_product_attention
with the same boolean mask. Both materialise T×T scores; the NA never does.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from emotk.models.na import na1d_natten, na1d_torch, natten_available
from emotk.models.tcn import NACBlock


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def fwd_bwd(fn, inputs, grad, device) -> float:
    for x in inputs:
        x.grad = None
    sync(device)
    t0 = time.perf_counter()
    fn(*inputs).backward(grad)
    sync(device)
    return time.perf_counter() - t0


def best_of(cands: dict, reps: int) -> dict:
    """cands: name → zero-arg timing callable; interleaved repetitions, best time each."""
    for f in cands.values():
        f()  # warm-up
    best = {n: float("inf") for n in cands}
    for _ in range(reps):
        for n, f in cands.items():
            best[n] = min(best[n], f())
    return best


def window_mask(T: int, k_size: int, d: int, device) -> torch.Tensor:
    """[T, T] bool: query t may attend key j (j = t, t−d, …, t−(k−1)d)."""
    i = torch.arange(T, device=device)
    off = i[:, None] - i[None, :]
    return (off >= 0) & (off % d == 0) & (off // d < k_size)


def dense_masked(mask: torch.Tensor):
    """q·kᵀ over all T×T pairs, −inf outside the window, softmax, ·v (mask built once, outside the timing)."""
    neg = torch.zeros(mask.shape, device=mask.device).masked_fill_(~mask, float("-inf"))

    def fn(q, k, v):
        qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
        s = (qh @ kh.transpose(-1, -2)) * q.shape[-1] ** -0.5 + neg
        return (torch.softmax(s, -1) @ vh).transpose(1, 2)

    return fn


def sdpa_masked(mask: torch.Tensor):
    def fn(q, k, v):
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
        return o.transpose(1, 2)

    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="256,4096")
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--kernel", type=int, default=7)
    ap.add_argument("--dilation", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=2, help="2 = the released AffWild2 NAC-TCN block")
    ap.add_argument("--reps", type=int, default=0, help="repetitions [default: 30 for T ≤ 1024, else 4]")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    C, k, d, B, H = a.channels, a.kernel, a.dilation, a.batch, a.heads
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; "
          f"C={C}, k={k}, d={d}, batch={B}, heads={H}; forward+backward, best of reps")
    for T in (int(x) for x in a.lengths.split(",")):
        reps = a.reps or (30 if T <= 1024 else 4)
        q, kk, v = (torch.randn(B, T, H, C // H, device=device, requires_grad=True) for _ in range(3))
        g = torch.randn(B, T, H, C // H, device=device)
        mask = window_mask(T, k, d, device)
        fns = {
            "na": lambda q, kk, v: na1d_torch(q, kk, v, k, d, causal=True),
            "dense": dense_masked(mask),
            "sdpa": sdpa_masked(mask),
        }
        with torch.no_grad():  # all compute the same attention
            ref = na1d_torch(q, kk, v, k, d, causal=True)
            for n in ("dense", "sdpa"):
                assert (fns[n](q, kk, v) - ref).abs().max() < 1e-4, n
        if natten_available() and device.type == "cuda":  # NATTEN trains only on CUDA (CPU: forward only)
            fns["natten"] = lambda q, kk, v: na1d_natten(q, kk, v, k, d, causal=True)
            with torch.no_grad():
                assert (fns["natten"](q, kk, v) - ref).abs().max() < 1e-4, "natten"
        best = best_of({n: (lambda f=f: fwd_bwd(f, (q, kk, v), g, device)) for n, f in fns.items()}, reps)
        na = best["na"]
        extra = f" | natten {best['natten'] * 1e3:8.2f} ms ({best['natten'] / na:5.2f}x)" if "natten" in best else ""
        print(f"T={T:5d}  NA {na * 1e3:8.2f} ms | dense {best['dense'] * 1e3:9.2f} ms ({best['dense'] / na:6.1f}x) "
              f"| sdpa {best['sdpa'] * 1e3:9.2f} ms ({best['sdpa'] / na:6.1f}x){extra}   [reps {reps}]")

        # the NA core's share of one NAC-TCN block (C→C, k, d, heads H, causal NA, dropout 0)
        block = NACBlock(C, C, k, d, dropout=0.0, heads=H, na_backend="torch").to(device)
        x = torch.randn(B, C, T, device=device, requires_grad=True)
        gy = torch.randn(B, C, T, device=device)
        qkv_shape = (B, T, H, C // H)
        cq, ck, cv = (torch.randn(*qkv_shape, device=device, requires_grad=True) for _ in range(3))
        rpb = block.na.rpb
        cands = {
            "block": lambda: fwd_bwd(block, (x,), gy, device),
            "core": lambda: fwd_bwd(lambda q, kk, v: na1d_torch(q, kk, v, k, d, causal=True, rpb=rpb),
                                    (cq, ck, cv), g, device),
        }
        bb = best_of(cands, reps)
        print(f"         NAC-TCN block {bb['block'] * 1e3:8.2f} ms, its NA core {bb['core'] * 1e3:7.2f} ms "
              f"→ NA core share {100 * bb['core'] / bb['block']:5.1f} %")


if __name__ == "__main__":
    main()
