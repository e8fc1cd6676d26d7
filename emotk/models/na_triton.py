"""Fused causal dilated 1-D neighborhood attention in Triton (forward and backward).

Same semantics and layout as ``emotk.models.na.na1d_torch(..., causal=True)``: ``q, k, v`` are
``[B, T, heads, head_dim]``; frame t attends to t, t−d, …, t−(k−1)d, neighbours before frame 0 are
masked; the optional relative positional bias ``rpb [heads, 2k−1]`` adds ``rpb[h, i]`` to window
slot i (key t − (k−1−i)·d), i.e. only its first k columns are used.

Kernels (one program per (batch·head, block of frames), each frame reads only its k dilated
neighbours, no T×T matrix, softmax and all sums in fp32):

- forward: online softmax over the k slots; writes the output and the row log-sum-exp (base 2).
- backward, query side: ``delta = Σ_c dO·O``, dq, and per-program partial sums of the score
  gradient per slot (d-rpb, reduced afterwards in torch).
- backward, key side: dk and dv gathered per key from the queries that attend to it (key j is
  attended by queries j, j+d, …, j+(k−1)d) — no atomics anywhere.

Triton is imported lazily (the first call that needs a kernel), so importing this module never
fails where Triton is missing. ``TRITON_INTERPRET=1`` (set before the first call) runs the kernels on
CPU tensors with Triton's numpy interpreter.
"""

from __future__ import annotations

import importlib.util
import math
import os
from functools import lru_cache

import torch
from torch.autograd.function import once_differentiable

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_HEAD_DIM = 512
LOG2E = 1.4426950408889634

tl = None  # triton.language, bound by _kernels() on first use (the kernel bodies read this global)


# --------------------------------------------------------------------------------------------------
# kernel bodies (plain functions; _kernels() wraps them with triton.jit once triton is imported)


def _fwd(Q, K, V, RPB, O, LSE,
         sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, sob, sot, soh, srh,
         T, H, D, dil, qk_scale,
         KS: tl.constexpr, HAS_RPB: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.arange(0, BLOCK_D)
    t_ok = t < T
    c_ok = c < D
    tt = t.to(tl.int64)
    q = tl.load(Q + b * sqb + h * sqh + tt[:, None] * sqt + c[None, :],
                mask=t_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)
    m = tl.full([BLOCK_T], float("-inf"), tl.float32)
    l_sum = tl.zeros([BLOCK_T], tl.float32)
    acc = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
    for step in tl.static_range(KS):  # step 0 is the frame itself (always present): m is finite after it
        j = tt - step * dil
        ok = t_ok & (j >= 0)
        mk = ok[:, None] & c_ok[None, :]
        kj = tl.load(K + b * skb + h * skh + j[:, None] * skt + c[None, :], mask=mk, other=0.0).to(tl.float32)
        s = tl.sum(q * kj, axis=1) * qk_scale
        if HAS_RPB:
            s += tl.load(RPB + h * srh + (KS - 1 - step)).to(tl.float32) * 1.4426950408889634
        if step > 0:
            s = tl.where(ok, s, float("-inf"))
        m_new = tl.maximum(m, s)
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new)
        l_sum = l_sum * alpha + p
        vj = tl.load(V + b * svb + h * svh + j[:, None] * svt + c[None, :], mask=mk, other=0.0).to(tl.float32)
        acc = acc * alpha[:, None] + p[:, None] * vj
        m = m_new
    out = acc / l_sum[:, None]
    tl.store(O + b * sob + h * soh + tt[:, None] * sot + c[None, :], out.to(O.dtype.element_ty),
             mask=t_ok[:, None] & c_ok[None, :])
    tl.store(LSE + bh.to(tl.int64) * T + tt, m + tl.log2(l_sum), mask=t_ok)


def _bwd_q(Q, K, V, RPB, O, DO, LSE, DELTA, DQ, DRPB,
           sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, sob, sot, soh, sdb, sdt, sdh, sgb, sgt, sgh, srh,
           T, H, D, dil, qk_scale, scale,
           KS: tl.constexpr, HAS_RPB: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    bh = tl.program_id(0)
    tb = tl.program_id(1)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    t = tb * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.arange(0, BLOCK_D)
    t_ok = t < T
    c_ok = c < D
    tt = t.to(tl.int64)
    m2 = t_ok[:, None] & c_ok[None, :]
    q = tl.load(Q + b * sqb + h * sqh + tt[:, None] * sqt + c[None, :], mask=m2, other=0.0).to(tl.float32)
    o = tl.load(O + b * sob + h * soh + tt[:, None] * sot + c[None, :], mask=m2, other=0.0).to(tl.float32)
    do = tl.load(DO + b * sdb + h * sdh + tt[:, None] * sdt + c[None, :], mask=m2, other=0.0).to(tl.float32)
    row = bh.to(tl.int64) * T + tt
    lse = tl.load(LSE + row, mask=t_ok, other=0.0)
    delta = tl.sum(do * o, axis=1)
    tl.store(DELTA + row, delta, mask=t_ok)
    dq = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
    for step in tl.static_range(KS):
        j = tt - step * dil
        ok = t_ok & (j >= 0)
        mk = ok[:, None] & c_ok[None, :]
        kj = tl.load(K + b * skb + h * skh + j[:, None] * skt + c[None, :], mask=mk, other=0.0).to(tl.float32)
        vj = tl.load(V + b * svb + h * svh + j[:, None] * svt + c[None, :], mask=mk, other=0.0).to(tl.float32)
        s = tl.sum(q * kj, axis=1) * qk_scale
        if HAS_RPB:
            s += tl.load(RPB + h * srh + (KS - 1 - step)).to(tl.float32) * 1.4426950408889634
        p = tl.where(ok, tl.exp2(s - lse), 0.0)
        ds = p * (tl.sum(do * vj, axis=1) - delta)  # d loss / d (scale·q·k + rpb)
        dq += ds[:, None] * kj
        if HAS_RPB:
            tl.store(DRPB + (bh.to(tl.int64) * tl.num_programs(1) + tb) * KS + (KS - 1 - step), tl.sum(ds, axis=0))
    tl.store(DQ + b * sgb + h * sgh + tt[:, None] * sgt + c[None, :], (dq * scale).to(DQ.dtype.element_ty), mask=m2)


def _bwd_kv(Q, K, V, RPB, DO, LSE, DELTA, DK, DV,
            sqb, sqt, sqh, skb, skt, skh, svb, svt, svh, sdb, sdt, sdh, sgb, sgt, sgh, srh,
            T, H, D, dil, qk_scale, scale,
            KS: tl.constexpr, HAS_RPB: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
    bh = tl.program_id(0)
    b = (bh // H).to(tl.int64)
    h = (bh % H).to(tl.int64)
    j = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = tl.arange(0, BLOCK_D)
    j_ok = j < T
    c_ok = c < D
    jj = j.to(tl.int64)
    m2 = j_ok[:, None] & c_ok[None, :]
    kj = tl.load(K + b * skb + h * skh + jj[:, None] * skt + c[None, :], mask=m2, other=0.0).to(tl.float32)
    vj = tl.load(V + b * svb + h * svh + jj[:, None] * svt + c[None, :], mask=m2, other=0.0).to(tl.float32)
    dk = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_T, BLOCK_D], tl.float32)
    for step in tl.static_range(KS):  # query t = j + step·d sees key j in slot KS−1−step
        t = jj + step * dil
        ok = j_ok & (t < T)
        mk = ok[:, None] & c_ok[None, :]
        qt = tl.load(Q + b * sqb + h * sqh + t[:, None] * sqt + c[None, :], mask=mk, other=0.0).to(tl.float32)
        dot = tl.load(DO + b * sdb + h * sdh + t[:, None] * sdt + c[None, :], mask=mk, other=0.0).to(tl.float32)
        row = bh.to(tl.int64) * T + t
        lse = tl.load(LSE + row, mask=ok, other=0.0)
        delta = tl.load(DELTA + row, mask=ok, other=0.0)
        s = tl.sum(qt * kj, axis=1) * qk_scale
        if HAS_RPB:
            s += tl.load(RPB + h * srh + (KS - 1 - step)).to(tl.float32) * 1.4426950408889634
        p = tl.where(ok, tl.exp2(s - lse), 0.0)
        dv += p[:, None] * dot
        ds = p * (tl.sum(dot * vj, axis=1) - delta)
        dk += ds[:, None] * qt
    tl.store(DK + b * sgb + h * sgh + jj[:, None] * sgt + c[None, :], (dk * scale).to(DK.dtype.element_ty), mask=m2)
    tl.store(DV + b * sgb + h * sgh + jj[:, None] * sgt + c[None, :], dv.to(DV.dtype.element_ty), mask=m2)


@lru_cache(maxsize=1)
def _kernels():
    """Import triton and jit the three kernels (once; TRITON_INTERPRET is read here)."""
    global tl
    import triton
    import triton.language

    tl = triton.language
    return triton.jit(_fwd), triton.jit(_bwd_q), triton.jit(_bwd_kv)


# --------------------------------------------------------------------------------------------------
# launch configuration and checks


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _config(bh: int, T: int, head_dim: int, backward: bool, block_t: int | None) -> tuple[int, int, int]:
    """(BLOCK_T, BLOCK_D, num_warps): about 4k fp32 elements per [BLOCK_T, BLOCK_D] tile, halved while
    the grid has fewer than 256 programs (short sequences) — a guess, not tuned on a GPU."""
    block_d = max(1, 1 << (head_dim - 1).bit_length())
    if block_t is None:
        block_t = max(8, min(128, 4096 // block_d))
        if backward:
            block_t = max(8, block_t // 2)
        while block_t > 16 and bh * math.ceil(T / block_t) < 256:
            block_t //= 2
    return block_t, block_d, 4 if block_d <= 128 else 8


def triton_problem(q, kernel_size, dilation, rpb=None) -> str | None:
    """None when the Triton kernel can run on this input, else a short reason (never raises)."""
    try:
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed"
        if not isinstance(q, torch.Tensor) or q.dim() != 4:
            return "q must be a [B, T, heads, head_dim] tensor"
        if not q.is_cuda and not (q.device.type == "cpu" and _interpret()):
            return f"the Triton kernel needs a CUDA tensor (got {q.device.type}; TRITON_INTERPRET=1 runs it on CPU)"
        if q.dtype not in DTYPES:
            return f"dtype {q.dtype} is not supported (float32, float16, bfloat16)"
        if q.numel() == 0:
            return "empty input"
        if q.shape[-1] > MAX_HEAD_DIM:
            return f"head_dim {q.shape[-1]} > {MAX_HEAD_DIM}"
        if int(kernel_size) < 1 or int(dilation) < 1:
            return f"kernel_size and dilation must be ≥ 1; got {kernel_size}, {dilation}"
        if rpb is not None:
            if tuple(rpb.shape) != (q.shape[2], 2 * int(kernel_size) - 1):
                return f"rpb must be [heads, 2k−1] = [{q.shape[2]}, {2 * int(kernel_size) - 1}]; got {tuple(rpb.shape)}"
            if rpb.device != q.device:
                return f"rpb is on {rpb.device}, q on {q.device}"
        if q.is_cuda:
            import triton  # noqa: F401 — importable, not just present
    except Exception as exc:  # noqa: BLE001 — a reason, never an exception
        return f"triton is not usable here ({type(exc).__name__}: {exc})"
    return None


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x with a unit stride on head_dim (the kernels take the other three strides as given)."""
    return x if x.stride(-1) == 1 else x.contiguous()


# --------------------------------------------------------------------------------------------------
# autograd function and public entry


class _NATriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rpb, ks: int, d: int, scale: float, block_t):
        fwd, _, _ = _kernels()
        q, k, v = _rows(q), _rows(k), _rows(v)
        B, T, H, D = q.shape
        bt, bd, nw = _config(B * H, T, D, False, block_t)
        o = torch.empty(B, T, H, D, dtype=q.dtype, device=q.device)
        lse = torch.empty(B * H, T, dtype=torch.float32, device=q.device)
        r = rpb.contiguous() if rpb is not None else None
        fwd[(B * H, math.ceil(T / bt))](
            q, k, v, r if r is not None else q, o, lse,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], r.stride(0) if r is not None else 0,
            T, H, D, d, scale * LOG2E,
            KS=ks, HAS_RPB=r is not None, BLOCK_T=bt, BLOCK_D=bd, num_warps=nw)
        ctx.save_for_backward(q, k, v, r, o, lse)
        ctx.cfg = (ks, d, scale, block_t)
        return o

    @staticmethod
    @once_differentiable
    def backward(ctx, do):
        _, bwd_q, bwd_kv = _kernels()
        q, k, v, r, o, lse = ctx.saved_tensors
        ks, d, scale, block_t = ctx.cfg
        B, T, H, D = q.shape
        do = _rows(do)
        bt, bd, nw = _config(B * H, T, D, True, block_t)
        nb = math.ceil(T / bt)
        delta = torch.empty(B * H, T, dtype=torch.float32, device=q.device)
        dq, dk, dv = (torch.empty(B, T, H, D, dtype=q.dtype, device=q.device) for _ in range(3))  # one stride set
        has_rpb = r is not None
        drpb_part = torch.empty(B * H, nb, ks, dtype=torch.float32, device=q.device) if has_rpb else None
        rr = r if has_rpb else q
        srh = r.stride(0) if has_rpb else 0
        bwd_q[(B * H, nb)](
            q, k, v, rr, o, do, lse, delta, dq, drpb_part if has_rpb else delta,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3], *do.stride()[:3], *dq.stride()[:3], srh,
            T, H, D, d, scale * LOG2E, scale,
            KS=ks, HAS_RPB=has_rpb, BLOCK_T=bt, BLOCK_D=bd, num_warps=nw)
        bwd_kv[(B * H, nb)](
            q, k, v, rr, do, lse, delta, dk, dv,
            *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3], *dk.stride()[:3], srh,
            T, H, D, d, scale * LOG2E, scale,
            KS=ks, HAS_RPB=has_rpb, BLOCK_T=bt, BLOCK_D=bd, num_warps=nw)
        drpb = None
        if has_rpb and ctx.needs_input_grad[3]:
            drpb = torch.zeros(H, 2 * ks - 1, dtype=torch.float32, device=q.device)
            drpb[:, :ks] = drpb_part.view(B, H, nb, ks).sum((0, 2))
            drpb = drpb.to(r.dtype)
        return dq, dk, dv, drpb, None, None, None, None


def na1d_triton(q, k, v, kernel_size: int, dilation: int = 1, *, rpb=None, scale=None, block_t: int | None = None):
    """Causal dilated NA with the fused Triton kernels; same result as ``na1d_torch(..., causal=True)``.

    ``q, k, v``: ``[B, T, heads, head_dim]`` of one dtype (float32/16, bfloat16) on one CUDA device (or
    CPU under ``TRITON_INTERPRET=1``); any strides with a unit head_dim stride are read in place.
    ``block_t`` overrides the frames per program (tests use small blocks). Check ``triton_problem``
    first: this function raises ValueError on what it reports.
    """
    why = triton_problem(q, kernel_size, dilation, rpb)
    if why is not None:
        raise ValueError(f"na1d_triton cannot run: {why}")
    if q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"q, k, v must have equal shapes; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must share dtype and device; got {q.dtype}/{k.dtype}/{v.dtype} on "
                         f"{q.device}/{k.device}/{v.device}")
    if block_t is not None and (block_t < 1 or block_t & (block_t - 1)):
        raise ValueError(f"block_t must be a power of two; got {block_t}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    return _NATriton.apply(q, k, v, rpb, int(kernel_size), int(dilation), scale, block_t)


__all__ = ["DTYPES", "MAX_HEAD_DIM", "na1d_triton", "triton_problem"]
