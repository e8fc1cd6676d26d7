"""Causal dilated neighborhood attention: emotk's NA paths vs dense masked attention, and the NA
core's share of a NAC-TCN block (forward + backward, CPU or the current CUDA device).

    python bench/na.py                  # T = 256 and 4096, C = 128, k = 7, d = 8, batch 4, 2 heads
    python bench/na.py --heads 1 --reps 5
    python bench/na.py --no-compile     # skip the torch.compile'd path (its first call compiles ~15-30 s)

Printed ratios are measured in this run (best of --reps after a warm-up, the candidates interleaved
so that machine load hits all of them alike). NA candidates: ``before`` = the causal shift core as it
was before the CPU rework (padded k/v copies, scatter backward; kept in this file only), ``torch`` =
emotk's PyTorch path (``na1d_torch``, impl auto; the CPU default before the native kernel),
``compiled`` = the same core through ``torch.compile`` (opt-in backend), ``native`` = emotk's C
kernel (``emotk.models.na_cpu``; the CPU default where a C compiler builds it), ``triton`` = the
fused kernel (CUDA, when it can run), ``natten`` (CUDA, when it imports). Dense baselines: ``dense`` = explicit q·kᵀ, mask, softmax, ·v (what one writes without NA),
``sdpa`` = PyTorch's fused scaled_dot_product_attention with the same boolean mask. Both materialise
T×T scores; the NA never does. Each "sdpa/x" column is sdpa's time over that candidate's (× faster).
"""

from __future__ import annotations

import argparse
import time
from functools import lru_cache

import torch
import torch.nn.functional as F

from torch.autograd.function import once_differentiable

from emotk.models import na_cpu
from emotk.models.na import compiled_problem, na1d, na1d_natten, na1d_torch, natten_available
from emotk.models.tcn import NACBlock


class _ShiftBefore(torch.autograd.Function):
    """The causal shift core before the CPU rework (bench only, for "before" beside "after")."""

    @staticmethod
    def forward(ctx, q, k, v, bias, ks: int, d: int, scale: float):
        B, T, H, Dh = q.shape
        p = (ks - 1) * d
        q = q.contiguous()
        kp = F.pad(k, (0, 0, 0, 0, p, 0))
        vp = F.pad(v, (0, 0, 0, 0, p, 0))
        s = torch.empty(ks, B, T, H, dtype=q.dtype, device=q.device)
        for i in range(ks):
            torch.linalg.vecdot(q, kp[:, i * d:i * d + T], out=s[i])
        s = s.to(bias.dtype).mul_(scale).add_(bias.unsqueeze(1))
        a = torch.softmax(s, dim=0)
        a_in = a.to(q.dtype).unsqueeze(-1)
        out = torch.mul(a_in[0], vp[:, :T])
        for i in range(1, ks):
            out.addcmul_(a_in[i], vp[:, i * d:i * d + T])
        ctx.save_for_backward(q, kp, vp, a)
        ctx.cfg = (ks, d, scale)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, kp, vp, a = ctx.saved_tensors
        ks, d, scale = ctx.cfg
        B, T, H, Dh = q.shape
        p = (ks - 1) * d
        go = grad_out.contiguous().to(q.dtype)
        ga = torch.empty(ks, B, T, H, dtype=q.dtype, device=q.device)
        for i in range(ks):
            torch.linalg.vecdot(go, vp[:, i * d:i * d + T], out=ga[i])
        ga = ga.to(a.dtype)
        gs = a * (ga - (ga * a).sum(0, keepdim=True))
        grad_bias = gs.sum(1) if ctx.needs_input_grad[3] else None
        gs_in = (gs * scale).to(q.dtype).unsqueeze(-1)
        a_in = a.to(q.dtype).unsqueeze(-1)
        gq = torch.mul(gs_in[0], kp[:, :T])
        gkp = torch.zeros_like(kp)
        gvp = torch.zeros_like(vp)
        for i in range(ks):
            sl = slice(i * d, i * d + T)
            if i:
                gq.addcmul_(gs_in[i], kp[:, sl])
            gkp[:, sl].addcmul_(gs_in[i], q)
            gvp[:, sl].addcmul_(a_in[i], go)
        return gq, gkp[:, p:], gvp[:, p:], grad_bias, None, None, None


@lru_cache(maxsize=64)
def _valid_before(T: int, ks: int, d: int, device: str) -> torch.Tensor:
    t = torch.arange(T, device=device)
    back = (ks - 1 - torch.arange(ks, device=device)) * d
    return (t[None, :] - back[:, None]) >= 0


def _na1d_reference_shift(q, k, v, ks: int, d: int, rpb=None):
    """Causal NA through the pre-rework core, with the per-call mask building it did then."""
    B, T, H, Dh = q.shape
    valid = _valid_before(T, ks, d, str(q.device))
    mask = torch.zeros(ks, T, 1, device=q.device, dtype=q.dtype).masked_fill_(~valid[..., None], float("-inf"))
    bias = rpb[:, :ks].t().unsqueeze(1) + mask if rpb is not None else mask.expand(ks, T, H)
    return _ShiftBefore.apply(q, k, v, bias, ks, d, Dh ** -0.5)


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
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd candidate")
    ap.add_argument("--no-block", action="store_true", help="skip the NAC-TCN block share line")
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
            "before": lambda q, kk, v: _na1d_reference_shift(q, kk, v, k, d),
            "torch": lambda q, kk, v: na1d_torch(q, kk, v, k, d, causal=True),
        }
        if not a.no_compile:
            fns["compiled"] = lambda q, kk, v: na1d_torch(q, kk, v, k, d, causal=True, impl="compiled")
        if device.type == "cpu":
            if na_cpu.available():
                fns["native"] = lambda q, kk, v: na1d(q, kk, v, k, d, backend="native")
            else:
                print(f"  native: not measured ({na_cpu.build_info()})")
        if device.type == "cuda":
            try:
                with torch.no_grad():
                    na1d(q, kk, v, k, d, backend="triton")
                fns["triton"] = lambda q, kk, v: na1d(q, kk, v, k, d, backend="triton")
            except Exception as exc:  # noqa: BLE001 — report and go on without it
                print(f"  triton: not measured ({exc})")
        if natten_available() and device.type == "cuda":  # NATTEN trains only on CUDA (CPU: forward only)
            fns["natten"] = lambda q, kk, v: na1d_natten(q, kk, v, k, d, causal=True)
        fns["dense"] = dense_masked(mask)
        fns["sdpa"] = sdpa_masked(mask)
        t0 = time.perf_counter()
        with torch.no_grad():  # all compute the same attention (the compiled path compiles here)
            ref = na1d_torch(q, kk, v, k, d, causal=True)
            for n, f in fns.items():
                assert (f(q, kk, v) - ref).abs().max() < 1e-4, n
        best = best_of({n: (lambda f=f: fwd_bwd(f, (q, kk, v), g, device)) for n, f in fns.items()}, reps)
        setup = time.perf_counter() - t0
        sd = best["sdpa"]
        note = f"; compiled ran eagerly: {compiled_problem()}" if "compiled" in fns and compiled_problem() else ""
        print(f"T={T:5d}  [reps {reps}, incl. warm-up/compile {setup:.1f} s{note}]")
        for n, t in best.items():
            rel = f"sdpa/x {sd / t:6.2f}" if n != "sdpa" else ""
            vs = f"  before/x {best['before'] / t:5.2f}" if n not in ("before", "dense", "sdpa") else ""
            print(f"    {n:9s} {t * 1e3:9.3f} ms   {rel}{vs}")
        if a.no_block:
            continue
        # the NA core's share of one NAC-TCN block (C→C, k, d, heads H, causal NA, dropout 0), default backend
        block = NACBlock(C, C, k, d, dropout=0.0, heads=H).to(device)
        x = torch.randn(B, C, T, device=device, requires_grad=True)
        gy = torch.randn(B, C, T, device=device)
        backend = block.na.resolve_backend(x.detach().transpose(1, 2))
        qkv_shape = (B, T, H, C // H)
        cq, ck, cv = (torch.randn(*qkv_shape, device=device, requires_grad=True) for _ in range(3))
        rpb = block.na.rpb
        cands = {
            "block": lambda: fwd_bwd(block, (x,), gy, device),
            "core": lambda: fwd_bwd(lambda q, kk, v: na1d(q, kk, v, k, d, causal=True, rpb=rpb, backend=backend),
                                    (cq, ck, cv), g, device),
        }
        bb = best_of(cands, reps)
        print(f"    NAC-TCN block ({backend} backend) {bb['block'] * 1e3:8.2f} ms, its NA core {bb['core'] * 1e3:7.2f} ms "
              f"→ NA core share {100 * bb['core'] / bb['block']:5.1f} %")

if __name__ == "__main__":
    main()
