"""Fused Triton causal dilated NA (forward + backward) vs PyTorch's fused SDPA with the same mask and
vs emotk's torch NA (``na1d_torch``), on CUDA.

    python bench/na_triton.py                     # T = 256 and 4096, C 128, k 7, d 8, batch 4, 2 heads, fp32
    python bench/na_triton.py --dtype bfloat16 --rpb

Times are the best of --reps after a warm-up, candidates interleaved. On a machine without CUDA it
says so and exits 0 (the kernels' logic is tested on CPU by tests/test_na_triton.py under
TRITON_INTERPRET=1, which is far too slow to time).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def fwd_bwd(fn, inputs, grad) -> float:
    for x in inputs:
        x.grad = None
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn(*inputs).backward(grad)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def window_mask(T: int, ks: int, d: int, device) -> torch.Tensor:
    """[T, T] bool: query t may attend key j = t, t−d, …, t−(k−1)d."""
    i = torch.arange(T, device=device)
    off = i[:, None] - i[None, :]
    return (off >= 0) & (off % d == 0) & (off // d < ks)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", default="256,4096")
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--kernel", type=int, default=7)
    ap.add_argument("--dilation", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--rpb", action="store_true", help="with the relative positional bias (SDPA gets it as a float mask)")
    ap.add_argument("--reps", type=int, default=20)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench/na_triton.py: the Triton NA kernel needs a CUDA GPU; none here (nothing measured).")
        return 0
    from emotk.models.na import na1d_torch
    from emotk.models.na_triton import na1d_triton, triton_problem

    dev, dtype = torch.device("cuda"), getattr(torch, a.dtype)
    C, ks, d, B, H = a.channels, a.kernel, a.dilation, a.batch, a.heads
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; C={C}, k={ks}, d={d}, batch={B}, heads={H}, "
          f"{a.dtype}, rpb={a.rpb}; forward+backward, best of {a.reps}")
    torch.manual_seed(0)
    for T in (int(x) for x in a.lengths.split(",")):
        q, k, v = (torch.randn(B, T, H, C // H, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
        g = torch.randn(B, T, H, C // H, device=dev, dtype=dtype)
        rpb = torch.randn(H, 2 * ks - 1, device=dev) * 0.1 if a.rpb else None
        why = triton_problem(q, ks, d, rpb)
        if why:
            print(f"T={T}: Triton kernel refused: {why}")
            continue
        allowed = window_mask(T, ks, d, dev)
        if rpb is None:
            mask = allowed
        else:  # float mask: bias of slot i (offset (i − (k−1))·d) where allowed, −inf elsewhere
            i = torch.arange(T, device=dev)
            slot = (ks - 1 - (i[:, None] - i[None, :]) // d).clamp(0, ks - 1)
            mask = rpb[:, slot].masked_fill(~allowed, float("-inf")).to(dtype).unsqueeze(0)

        def sdpa(q, k, v):
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
            return o.transpose(1, 2)

        fns = {"triton": lambda q, k, v: na1d_triton(q, k, v, ks, d, rpb=rpb),
               "sdpa": sdpa,
               "torch_na": lambda q, k, v: na1d_torch(q, k, v, ks, d, causal=True, rpb=rpb)}
        with torch.no_grad():
            ref = na1d_torch(q.float(), k.float(), v.float(), ks, d, causal=True, rpb=rpb)
            for n, f in fns.items():
                err = (f(q, k, v).float() - ref).abs().max().item()
                assert err < (1e-3 if dtype == torch.float32 else 5e-2), (n, err)
        timers = {n: (lambda f=f: fwd_bwd(f, (q, k, v), g)) for n, f in fns.items()}
        for f in timers.values():
            f()
        best = {n: float("inf") for n in timers}
        for _ in range(a.reps):
            for n, f in timers.items():
                best[n] = min(best[n], f())
        tr = best["triton"]
        print(f"T={T:5d}  triton {tr * 1e3:8.3f} ms | sdpa {best['sdpa'] * 1e3:8.3f} ms ({best['sdpa'] / tr:6.1f}x) "
              f"| torch NA {best['torch_na'] * 1e3:8.3f} ms ({best['torch_na'] / tr:6.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
