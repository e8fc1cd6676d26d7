"""1-D (dilated, causal) neighborhood attention: emotk's own PyTorch implementation + NATTEN bridge.

Layout everywhere: ``q, k, v`` are ``[B, T, heads, head_dim]`` (NATTEN's "heads last" layout).

Window semantics (``kernel_size`` k, ``dilation`` d):

- **causal** (``causal=True``, NAC-TCN paper, Sec. 3.3): frame t attends to t, t−d, …, t−(k−1)d.
  Neighbours before frame 0 do not exist and are masked (not attended), so early frames attend to
  fewer than k keys. This is exactly NATTEN's ``is_causal=True`` (checked against NATTEN 0.21.7:
  frame 2 with k=3, d=2 attends to {0, 2}).
- **centred** (``causal=False``, ordinary dilated NA, used by ``na_mode="lagged"``): the sequence is
  split into d interleaved groups (frames with equal t mod d); inside its group a frame attends to
  the k group members centred on it, the window shifted to stay inside the group near both ends
  (NATTEN's edge behaviour: start = clamp(g − k//2, 0, n_g − k) for group index g of n_g members).
  If a group has fewer than k members (T < k·d, which NATTEN refuses) the window is the whole group.

Relative positional bias (``rpb``, shape ``[heads, 2k−1]``, as in the NATTEN 0.14 layer the NAC-TCN
code used): the score of key j for query i gets ``rpb[h, (j−i)/d + k − 1]`` (offset measured in group
steps). A causal window only uses offsets −(k−1)…0, i.e. the first k entries; the layer still holds
h·(2k−1) parameters so parameter counts match the released model (the other k−1 entries get no
gradient and are inert).

No T×T matrix is ever formed. Implementations (``na1d_torch(impl=...)``): "shift" — causal only, a
custom autograd function over k shifted slices of q/k/v restricted to each slot's valid frames (no
padded copies, mask bias cached per shape/device/dtype; memory O(B·T·C + B·T·h·k)); the default on
CPU, bit-identical from call to call. "gather" — one index gather of the k neighbours with plain
autograd, few large kernels (GPU, and the centred window). "compiled" — the shift core as pure
tensor functions through ``torch.compile`` (one fused C++/Triton loop for the forward and one for
the hand-written backward): opt-in, because its rounding differs from "shift" (~1e-6) and its first
call per shape compiles for seconds; where no compiler works it runs those functions eagerly.
Backends of the layer: "native" (``emotk.models.na_cpu``: a C kernel for float32 CPU tensors, built
with the system compiler on first use), "torch", "compiled", "triton" (``emotk.models.na_triton``,
imported on first use), "natten"; "auto" picks triton → natten → torch on CUDA and native → torch
on the CPU.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from emotk.errors import ModelError
from emotk.models import na_cpu

BACKENDS = ("auto", "native", "torch", "compiled", "triton", "natten")


# --------------------------------------------------------------------------------------------------
# window geometry (cached per shape; tiny integer tensors)


@lru_cache(maxsize=256)
def _causal_valid(T: int, k: int, d: int, device: str) -> torch.Tensor:
    """[k, T] bool: window slot i of frame t (key t − (k−1−i)·d) exists."""
    with torch.inference_mode(False):
        t = torch.arange(T, device=device)
        back = (k - 1 - torch.arange(k, device=device)) * d
        return (t[None, :] - back[:, None]) >= 0


@lru_cache(maxsize=256)
def centred_window(T: int, k: int, d: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NATTEN-style centred dilated window: (index [T, k], bias slot [T, k], valid [T, k]).

    ``index[t, i]`` is the frame of the i-th neighbour of frame t, ``bias slot`` the rpb column
    ((j − t)/d + k − 1), ``valid`` False for slots beyond a group shorter than k (index then repeats
    a valid frame and the slot is masked).
    """
    t = torch.arange(T)
    r = t % d
    g = t // d
    n = (T - 1 - r) // d + 1  # members of t's group
    start = torch.clamp(g - k // 2, min=0)
    start = torch.minimum(start, torch.clamp(n - k, min=0))
    slot = start[:, None] + torch.arange(k)[None, :]  # group positions
    valid = slot < n[:, None]
    slot = torch.where(valid, slot, g[:, None])
    index = slot * d + r[:, None]
    bias_slot = slot - g[:, None] + k - 1
    return index.to(device), bias_slot.to(device), valid.to(device)


# --------------------------------------------------------------------------------------------------
# causal core: custom autograd function, k shifted views, no gather copies


class _CausalNA(torch.autograd.Function):
    """out[t] = Σ_i softmax_i(scale·q[t]·k[t−(k−1−i)d] + bias[i, t]) · v[t−(k−1−i)d].

    ``bias`` is ``[k, T, H]`` and carries −inf for missing neighbours; its dtype is the softmax dtype
    (fp32 for fp16/bf16 inputs, else the input dtype). Slot i only touches its valid frames
    t ≥ (k−1−i)·d, so q/k/v are never padded or copied; the backward accumulates straight into the
    unpadded gradients. Memory: the attention weights (k·B·T·H) beside the saved q, k, v.
    """

    @staticmethod
    def forward(ctx, q, k, v, bias, ks: int, d: int, scale: float):
        B, T, H, Dh = q.shape
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        s = torch.zeros(ks, B, T, H, dtype=q.dtype, device=q.device)  # missing slots: 0 + (−inf) bias
        for i in range(ks):
            o = (ks - 1 - i) * d
            if o < T:
                torch.linalg.vecdot(q[:, o:], k[:, :T - o], out=s[i, :, o:])
        s = s.to(bias.dtype).mul_(scale).add_(bias.unsqueeze(1))
        a = torch.softmax(s, dim=0)
        a_in = a.to(q.dtype).unsqueeze(-1)
        out = torch.mul(a_in[ks - 1], v)
        for i in range(ks - 1):
            o = (ks - 1 - i) * d
            if o < T:
                out[:, o:].addcmul_(a_in[i, :, o:], v[:, :T - o])
        ctx.save_for_backward(q, k, v, a)
        ctx.cfg = (ks, d, scale)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, a = ctx.saved_tensors
        ks, d, scale = ctx.cfg
        B, T, H, Dh = q.shape
        go = grad_out.contiguous().to(q.dtype)
        ga = torch.zeros(ks, B, T, H, dtype=q.dtype, device=q.device)
        for i in range(ks):
            o = (ks - 1 - i) * d
            if o < T:
                torch.linalg.vecdot(go[:, o:], v[:, :T - o], out=ga[i, :, o:])
        ga = ga.to(a.dtype)
        gs = a * (ga - (ga * a).sum(0, keepdim=True))  # softmax backward in the softmax dtype
        grad_bias = gs.sum(1) if ctx.needs_input_grad[3] else None
        gs_in = (gs * scale).to(q.dtype).unsqueeze(-1)
        a_in = a.to(q.dtype).unsqueeze(-1)
        gq = torch.mul(gs_in[ks - 1], k)
        gk = torch.mul(gs_in[ks - 1], q)
        gv = torch.mul(a_in[ks - 1], go)
        for i in range(ks - 1):
            o = (ks - 1 - i) * d
            if o < T:
                gq[:, o:].addcmul_(gs_in[i, :, o:], k[:, :T - o])
                gk[:, :T - o].addcmul_(gs_in[i, :, o:], q[:, o:])
                gv[:, :T - o].addcmul_(a_in[i, :, o:], go[:, o:])
        return gq, gk, gv, grad_bias, None, None, None


# --------------------------------------------------------------------------------------------------
# the same causal core as pure tensor functions for torch.compile (opt-in: impl/backend "compiled")


def _fused_forward(q, k, v, bias, ks: int, d: int, scale: float):
    """(out, a) of the causal core written for a compiler: one fused pass instead of ~2k kernels."""
    T = q.shape[1]
    p = (ks - 1) * d
    kp = F.pad(k, (0, 0, 0, 0, p, 0))
    vp = F.pad(v, (0, 0, 0, 0, p, 0))
    s = torch.stack([(q * kp[:, i * d:i * d + T]).sum(-1) for i in range(ks)])
    s = s.to(bias.dtype) * scale + bias.unsqueeze(1)
    a = torch.softmax(s, dim=0)
    a_in = a.to(q.dtype)
    out = a_in[0].unsqueeze(-1) * vp[:, :T]
    for i in range(1, ks):
        out = out + a_in[i].unsqueeze(-1) * vp[:, i * d:i * d + T]
    return out, a


def _fused_backward(q, k, v, a, go, ks: int, d: int, scale: float):
    """(gq, gk, gv, grad_bias) of the causal core; key/value gradients gathered from later queries."""
    T = q.shape[1]
    p = (ks - 1) * d
    kp = F.pad(k, (0, 0, 0, 0, p, 0))
    vp = F.pad(v, (0, 0, 0, 0, p, 0))
    ga = torch.stack([(go * vp[:, i * d:i * d + T]).sum(-1) for i in range(ks)]).to(a.dtype)
    gs = a * (ga - (ga * a).sum(0, keepdim=True))
    gs_in = (gs * scale).to(q.dtype)
    a_in = a.to(q.dtype)
    gq = gs_in[0].unsqueeze(-1) * kp[:, :T]
    for i in range(1, ks):
        gq = gq + gs_in[i].unsqueeze(-1) * kp[:, i * d:i * d + T]
    qr, gor = F.pad(q, (0, 0, 0, 0, 0, p)), F.pad(go, (0, 0, 0, 0, 0, p))
    gsr, ar = F.pad(gs_in, (0, 0, 0, p)), F.pad(a_in, (0, 0, 0, p))
    gk = torch.zeros_like(q)
    gv = torch.zeros_like(v)
    for i in range(ks):  # key t is slot i of query t + (k−1−i)·d
        sl = slice((ks - 1 - i) * d, (ks - 1 - i) * d + T)
        gk = gk + gsr[i, :, sl].unsqueeze(-1) * qr[:, sl]
        gv = gv + ar[i, :, sl].unsqueeze(-1) * gor[:, sl]
    return gq, gk, gv, gs.sum(1)


_COMPILE_PROBLEM: list[str] = []  # why the compiled core is off in this process (set once, never cleared)


@lru_cache(maxsize=1)
def _compiled_cores():
    """torch.compile'd (forward, backward) cores, built on first use (never at import)."""
    return (torch.compile(_fused_forward, fullgraph=True, dynamic=None),
            torch.compile(_fused_backward, fullgraph=True, dynamic=None))


def compiled_problem() -> str | None:
    """Why ``impl="compiled"`` runs eagerly in this process (compiler failed), or None."""
    return _COMPILE_PROBLEM[0] if _COMPILE_PROBLEM else None


def _run_compiled(which: int, *args):
    """Run compiled core ``which`` (0 forward, 1 backward); after any compiler failure the eager
    functions run instead for the rest of the process (same results, slightly different rounding)."""
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)  # no requires_grad guards
    if not _COMPILE_PROBLEM:
        try:
            return _compiled_cores()[which](*args)
        except Exception as exc:  # noqa: BLE001 — no working compiler here: fall back, remember why
            _COMPILE_PROBLEM.append(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]})")
    return (_fused_forward, _fused_backward)[which](*args)


class _CausalNACompiled(torch.autograd.Function):
    """``_CausalNA`` with compiled forward/backward cores (hand-written backward, no autograd tracing)."""

    @staticmethod
    def forward(ctx, q, k, v, bias, ks: int, d: int, scale: float):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out, a = _run_compiled(0, q, k, v, bias, ks, d, scale)
        ctx.save_for_backward(q, k, v, a)
        ctx.cfg = (ks, d, scale)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        q, k, v, a = ctx.saved_tensors
        go = grad_out.contiguous().to(q.dtype)
        gq, gk, gv, grad_bias = _run_compiled(1, q, k, v, a, go, *ctx.cfg)
        return gq, gk, gv, (grad_bias if ctx.needs_input_grad[3] else None), None, None, None


def _softmax_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


@lru_cache(maxsize=256)
def _causal_mask_bias(T: int, k: int, d: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    """[k, T, 1]: 0 where window slot i of frame t exists, −inf where it would precede frame 0.
    Cached per (shape, device, dtype); callers only read it."""
    with torch.inference_mode(False), torch.no_grad():
        valid = _causal_valid(T, k, d, device)
        return torch.zeros(k, T, 1, device=device, dtype=dtype).masked_fill_(~valid[..., None], float("-inf"))


def _causal_torch(q, k, v, ks, d, rpb, scale, compiled: bool = False):
    B, T, H, Dh = q.shape
    acc = _softmax_dtype(q.dtype)
    mask = _causal_mask_bias(T, ks, d, str(q.device), acc)
    if rpb is not None:
        bias = rpb[:, :ks].to(acc).t().unsqueeze(1) + mask  # slot i ↔ offset i − (k−1) ↔ rpb column i
    else:
        bias = mask.expand(ks, T, H)
    fn = _CausalNACompiled if compiled else _CausalNA
    return fn.apply(q, k, v, bias, ks, d, scale)


@lru_cache(maxsize=256)
def causal_window(T: int, k: int, d: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Causal dilated window as (index [T, k], bias slot [T, k], valid [T, k]); slot i is frame
    t − (k−1−i)·d (rpb column i); frames before 0 are invalid (index clamped to 0, masked)."""
    t = torch.arange(T)[:, None]
    back = (k - 1 - torch.arange(k))[None, :] * d
    index = t - back
    valid = index >= 0
    bias_slot = torch.arange(k)[None, :].expand(T, k)
    return index.clamp(min=0).to(device), bias_slot.contiguous().to(device), valid.to(device)


@lru_cache(maxsize=256)
def _window(T: int, k: int, d: int, device: str, causal: bool):
    """Cached gather indices per (T, k, d, device, causal); normal tensors even when first built
    under ``torch.inference_mode`` (autograd saves the index for the backward)."""
    with torch.inference_mode(False):
        index, bias_slot, valid = (causal_window if causal else centred_window)(T, k, d, "cpu")
        complete = bool(valid.all())
        return index.to(device), bias_slot.to(device), valid.to(device), complete


def _gather_torch(q, k, v, ks, d, rpb, scale, causal):
    """Index-gather NA (plain autograd): few large kernels — the fast path on GPUs."""
    B, T, H, Dh = q.shape
    index, bias_slot, valid, complete = _window(T, ks, d, str(q.device), causal)
    flat = index.reshape(-1)
    kw = k.index_select(1, flat).view(B, T, ks, H, Dh)
    vw = v.index_select(1, flat).view(B, T, ks, H, Dh)
    acc = _softmax_dtype(q.dtype)
    s = (q.unsqueeze(2) * kw).sum(-1).to(acc) * scale  # [B, T, k, H]
    if rpb is not None:
        s = s + rpb.to(acc)[:, bias_slot].permute(1, 2, 0)  # [T, k, H]
    if not complete:
        s = s.masked_fill(~valid[..., None], float("-inf"))
    a = torch.softmax(s, dim=2).to(q.dtype)
    return (a.unsqueeze(-1) * vw).sum(2)


IMPLS = ("auto", "shift", "gather", "compiled")


def na1d_torch(q, k, v, kernel_size: int, dilation: int = 1, *, causal: bool = True, rpb=None, scale=None,
               impl: str = "auto"):
    """emotk's PyTorch neighborhood attention (CPU and GPU, forward and backward, optional rpb).

    ``impl``: "shift" (causal only: k shifted slices in a custom autograd function, no copies of
    q/k/v — fastest PyTorch path on CPU), "gather" (index gather, plain autograd, ~10 large kernels —
    fastest eager path on GPU where kernel launches dominate), "auto" (shift for causal CPU tensors,
    else gather), "compiled" (causal: the shift core through ``torch.compile``, opt-in — results equal
    to ~1e-6, not bit-identical to "shift"; the first call per shape compiles for seconds; where no
    compiler works it runs the same functions eagerly for the rest of the process, see
    ``compiled_problem()``; centred windows use "gather").
    """
    _check(q, k, v, kernel_size, dilation, rpb)
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}; got {impl!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if impl == "shift" and not causal:
        raise ValueError("the shift implementation is causal only")
    if impl == "compiled" and causal:
        return _causal_torch(q, k, v, kernel_size, dilation, rpb, scale, compiled=True)
    if impl == "shift" or (impl == "auto" and causal and not q.is_cuda):
        return _causal_torch(q, k, v, kernel_size, dilation, rpb, scale)
    return _gather_torch(q, k, v, kernel_size, dilation, rpb, scale, causal)


def _check(q, k, v, ks, d, rpb):
    if q.dim() != 4 or q.shape != k.shape or k.shape[:3] != v.shape[:3]:
        raise ValueError(f"q, k, v must be [B, T, heads, head_dim] of equal shape; got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if ks < 1 or d < 1:
        raise ValueError(f"kernel_size and dilation must be ≥ 1; got {ks}, {d}")
    if rpb is not None and tuple(rpb.shape) != (q.shape[2], 2 * ks - 1):
        raise ValueError(f"rpb must be [heads, 2k−1] = [{q.shape[2]}, {2 * ks - 1}]; got {tuple(rpb.shape)}")


# --------------------------------------------------------------------------------------------------
# NATTEN bridge


@lru_cache(maxsize=1)
def natten_functional():
    """``natten.functional.na1d`` or None when NATTEN does not import."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from natten.functional import na1d
    except Exception:  # noqa: BLE001 — any import failure means "not available"
        return None
    return na1d


def natten_available() -> bool:
    return natten_functional() is not None


def na1d_natten(q, k, v, kernel_size: int, dilation: int = 1, *, causal: bool = True, scale=None):
    """NATTEN's ``na1d`` (CUDA kernels; on CPU forward only). Same layout and semantics, no rpb."""
    fn = natten_functional()
    if fn is None:
        raise ModelError("NATTEN is not installed: `pip install --no-build-isolation natten` (or use --na-backend torch).")
    T = q.shape[1]
    if kernel_size * dilation > T:
        raise ModelError(f"NATTEN needs kernel_size·dilation ≤ sequence length; got {kernel_size}·{dilation} > {T}. "
                         "Use --na-backend torch.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(q, k, v, kernel_size=kernel_size, dilation=dilation, is_causal=causal, scale=scale)


def na1d(q, k, v, kernel_size: int, dilation: int = 1, *, causal: bool = True, rpb=None, scale=None,
         backend: str = "torch"):
    """Neighborhood attention on ``[B, T, heads, head_dim]``; ``backend`` "native" (causal, float32
    CPU), "torch", "compiled", "triton" (causal, CUDA or ``TRITON_INTERPRET=1``) or "natten"."""
    if backend == "natten":
        if rpb is not None:
            raise ModelError("NATTEN ≥ 0.20 has no relative positional bias; use pos_bias=False or backend torch.")
        return na1d_natten(q, k, v, kernel_size, dilation, causal=causal, scale=scale)
    if backend == "native":
        why = na_cpu.problem(q, kernel_size, causal)
        if why:
            raise ModelError(f"the native CPU NA kernel cannot run here: {why}. Use backend torch or auto.")
        return na_cpu.na1d_native(q, k, v, kernel_size, dilation, rpb=rpb, scale=scale)
    if backend == "triton":
        fn, why = _triton_entry(q, kernel_size, dilation, rpb, causal)
        if why:
            raise ModelError(f"the Triton NA kernel cannot run here: {why}. Use backend torch or auto.")
        return fn(q, k, v, kernel_size, dilation, rpb=rpb, scale=scale)
    if backend not in ("torch", "compiled"):
        raise ValueError(f"backend must be 'native', 'torch', 'compiled', 'triton' or 'natten' here; got {backend!r}")
    return na1d_torch(q, k, v, kernel_size, dilation, causal=causal, rpb=rpb, scale=scale,
                      impl="compiled" if backend == "compiled" else "auto")


# --------------------------------------------------------------------------------------------------
# Triton bridge (emotk.models.na_triton, imported on first use)


@lru_cache(maxsize=1)
def _triton_module():
    """(module, None) or (None, why) — ``emotk.models.na_triton`` imported lazily."""
    try:
        from emotk.models import na_triton
    except Exception as exc:  # noqa: BLE001 — any import failure means "not available"
        return None, f"emotk.models.na_triton does not import ({type(exc).__name__}: {exc})"
    return na_triton, None


def _triton_entry(q, kernel_size, dilation, rpb, causal):
    """(na1d_triton, None) when the Triton kernel can run on q, else (None, why)."""
    if not causal:
        return None, "the Triton kernel is causal only (na_mode lagged uses centred windows)"
    mod, why = _triton_module()
    if mod is None:
        return None, why
    why = mod.triton_problem(q, kernel_size, dilation, rpb)
    return (None, why) if why else (mod.na1d_triton, None)


# --------------------------------------------------------------------------------------------------
# native CPU kernel bridge (emotk.models.na_cpu, built on first use)


_NATIVE_WARNED: list[bool] = []


def _warn_native_unavailable() -> None:
    """One warning per process when the native kernel cannot be built (not for inputs it does not take)."""
    if _NATIVE_WARNED or na_cpu.available():
        return
    _NATIVE_WARNED.append(True)
    warnings.warn(f"emotk's native CPU NA kernel is not available ({na_cpu.build_info()}); "
                  "using the slower torch path (same results within float32 rounding).", stacklevel=3)


# --------------------------------------------------------------------------------------------------
# layer


class NeighborhoodAttention1d(nn.Module):
    """Multi-head 1-D dilated neighborhood attention layer on ``[B, T, C]``.

    Same parameters as NATTEN 0.14's ``NeighborhoodAttention1D`` used by the NAC-TCN code:
    qkv = Linear(C, 3C), rpb [heads, 2k−1] (trunc-normal std 0.02), proj = Linear(C, C) →
    4C² + 4C + heads·(2k−1) parameters (``pos_bias=False`` drops the rpb term).

    ``backend``: "native" (``emotk.models.na_cpu``: emotk's C kernel, causal float32 CPU tensors, built
    with the system C compiler on first use; bit-identical from call to call and for any thread
    count, equal to "torch" within float32 rounding), "torch" (always works, trains everywhere;
    bit-identical from call to call),
    "compiled" (the torch path through ``torch.compile``, opt-in because its rounding
    differs from "torch" by ~1e-6 and the first call per shape compiles for seconds), "triton" (the
    fused causal kernel of ``emotk.models.na_triton``: CUDA, with the positional bias), "natten"
    (NATTEN kernels; needs NATTEN, no positional bias, kernel·dilation ≤ T, and CUDA to train),
    "auto" (on a CUDA tensor: Triton for causal layers when it can run, else NATTEN when all of its
    conditions hold, else torch; on the CPU: native when it can run, else torch — with one warning
    per process when the kernel cannot be built). ``explain_backend(x)`` says which and why.
    """

    def __init__(self, dim: int, num_heads: int = 1, kernel_size: int = 7, dilation: int = 1, causal: bool = True,
                 pos_bias: bool = True, qkv_bias: bool = True, backend: str = "auto"):
        super().__init__()
        if dim % num_heads:
            raise ModelError(f"NA dim {dim} is not divisible by num_heads {num_heads}")
        if backend not in BACKENDS:
            raise ModelError(f"unknown NA backend {backend!r}; choose one of {BACKENDS}")
        self.dim, self.num_heads, self.kernel_size, self.dilation = dim, num_heads, kernel_size, dilation
        self.causal, self.backend = causal, backend
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        if pos_bias:
            self.rpb = nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1))
            nn.init.trunc_normal_(self.rpb, std=0.02, a=-2.0, b=2.0)
        else:
            self.register_parameter("rpb", None)
        self.proj = nn.Linear(dim, dim)
        self._natten_refused: set = set()
        self._triton_refused: set = set()

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, heads={self.num_heads}, kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"causal={self.causal}, pos_bias={self.rpb is not None}, backend={self.backend!r}")

    def _natten_problem(self, x: torch.Tensor) -> str | None:
        T = x.shape[1]
        if self.rpb is not None:
            return "the layer has a relative positional bias (NATTEN ≥ 0.20 has none; build with pos_bias=False)"
        if not natten_available():
            return "NATTEN is not installed"
        if self.kernel_size * self.dilation > T:
            return f"kernel_size·dilation = {self.kernel_size * self.dilation} > sequence length {T}"
        if not x.is_cuda and torch.is_grad_enabled() and x.requires_grad:
            return "NATTEN has no backward pass on CPU"
        if not x.is_cuda and self.backend == "auto":
            return "auto uses NATTEN on CUDA only"
        if (x.device.type, x.dtype, self.head_dim) in self._natten_refused:
            return "NATTEN refused this configuration earlier"
        return None

    def _triton_problem(self, q: torch.Tensor) -> tuple[object, str | None]:
        if (q.device.type, q.dtype, self.head_dim) in self._triton_refused:
            return None, "the Triton kernel failed on this configuration earlier"
        return _triton_entry(q, self.kernel_size, self.dilation, self.rpb, self.causal)

    def _native_problem(self, q: torch.Tensor) -> str | None:
        return na_cpu.problem(q, self.kernel_size, self.causal)

    def _choose(self, x: torch.Tensor, q: torch.Tensor) -> tuple[str, str, object]:
        """(backend, why, triton function or None) for input x [B, T, C] and its queries q."""
        if self.backend in ("torch", "compiled"):
            return self.backend, f"requested {self.backend!r}", None
        if self.backend == "native":
            why = self._native_problem(q)
            if why:
                raise ModelError(f"--na-backend native cannot run here: {why}. Use --na-backend torch or auto.")
            return "native", "requested 'native'", None
        if self.backend == "triton":
            fn, why = self._triton_problem(q)
            if why:
                raise ModelError(f"--na-backend triton cannot run here: {why}. Use --na-backend torch or auto.")
            return "triton", "requested 'triton'", fn
        if self.backend == "natten":
            why = self._natten_problem(x)
            if why:
                raise ModelError(f"--na-backend natten cannot run here: {why}. Use --na-backend torch or auto.")
            return "natten", "requested 'natten'", None
        if not x.is_cuda:  # auto
            why = self._native_problem(q)
            if why is None:
                return "native", "auto on the CPU: emotk's native kernel can run on this input", None
            _warn_native_unavailable()
            return "torch", f"auto on the CPU: the native kernel cannot run ({why}); emotk's torch NA", None
        fn, t_why = self._triton_problem(q)
        if fn is not None:
            return "triton", "auto: the Triton kernel can run on this input", fn
        n_why = self._natten_problem(x)
        if n_why is None:
            return "natten", f"auto: triton cannot run ({t_why}); NATTEN can", None
        return "torch", f"auto: triton cannot run ({t_why}); natten cannot run ({n_why})", None

    def _queries_like(self, x: torch.Tensor) -> torch.Tensor:
        """A tensor shaped, typed and placed like this layer's queries for input x (no compute)."""
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        B, T, _ = x.shape
        return torch.empty(B, T, self.num_heads, self.head_dim, device=x.device, dtype=dtype)

    def explain_backend(self, x: torch.Tensor) -> tuple[str, str]:
        """(backend this call runs on, why) for input x ``[B, T, C]``."""
        backend, why, _ = self._choose(x, self._queries_like(x))
        return backend, why

    def resolve_backend(self, x: torch.Tensor) -> str:
        """The backend this call runs on ("native", "torch", "compiled", "triton" or "natten")."""
        return self.explain_backend(x)[0]

    def core_macs(self, inputs, output) -> int:
        """MACs of the attention core of the last call (q·k and a·v over k neighbours)."""
        B, T, C = inputs[0].shape
        return 2 * B * T * self.kernel_size * C

    def _torch(self, q, k, v, impl: str = "auto"):
        return na1d_torch(q, k, v, self.kernel_size, self.dilation, causal=self.causal, rpb=self.rpb, impl=impl)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.unbind(2)
        backend, _, triton_fn = self._choose(x, q)
        if backend == "triton":
            try:
                y = triton_fn(q, k, v, self.kernel_size, self.dilation, rpb=self.rpb)
            except Exception as exc:  # noqa: BLE001 — a kernel that cannot run this input: torch instead
                if self.backend == "triton":
                    raise ModelError(f"the Triton NA kernel failed on this input ({exc}); use --na-backend torch.") from None
                self._triton_refused.add((q.device.type, q.dtype, self.head_dim))
                warnings.warn(f"the Triton NA kernel refused {tuple(x.shape)} on {x.device} ({exc}); using emotk's torch NA.")
                y = self._torch(q, k, v)
        elif backend == "native":
            y = na_cpu.na1d_native(q, k, v, self.kernel_size, self.dilation, rpb=self.rpb)
        elif backend == "natten":
            try:
                y = na1d_natten(q.contiguous(), k.contiguous(), v.contiguous(), self.kernel_size, self.dilation,
                                causal=self.causal)
            except (NotImplementedError, RuntimeError, ValueError) as exc:
                if self.backend == "natten":
                    raise ModelError(f"NATTEN failed on this input ({exc}); use --na-backend torch.") from None
                self._natten_refused.add((x.device.type, x.dtype, self.head_dim))
                warnings.warn(f"NATTEN refused {tuple(x.shape)} on {x.device} ({exc}); using emotk's torch NA.")
                y = self._torch(q, k, v)
        else:
            y = self._torch(q, k, v, impl="compiled" if backend == "compiled" else "auto")
        return self.proj(y.reshape(B, T, C))


def dense_reference(q, k, v, kernel_size: int, dilation: int = 1, *, causal: bool = True, rpb=None, scale=None):
    """The same attention through a full T×T masked score matrix (for tests and benchmarks only)."""
    B, T, H, Dh = q.shape
    scale = Dh ** -0.5 if scale is None else scale
    qh, kh, vh = (x.transpose(1, 2) for x in (q, k, v))
    s = (qh @ kh.transpose(-1, -2)) * scale  # [B, H, T, T]
    i = torch.arange(T, device=q.device)
    off = i[None, :] - i[:, None]  # key − query
    same_group = (off % dilation) == 0
    step = torch.div(off, dilation, rounding_mode="floor")
    if causal:
        allowed = same_group & (step <= 0) & (step > -kernel_size)
    else:
        index, _, valid = centred_window(T, kernel_size, dilation, str(q.device))
        allowed = torch.zeros(T, T, dtype=torch.bool, device=q.device)
        allowed[i[:, None].expand_as(index)[valid], index[valid]] = True
    if rpb is not None:
        col = (step + kernel_size - 1).clamp(0, 2 * kernel_size - 2)
        s = s + rpb[:, col].unsqueeze(0)
    s = s.masked_fill(~allowed, float("-inf"))
    a = torch.softmax(s, dim=-1)
    return (a @ vh).transpose(1, 2)


__all__ = ["BACKENDS", "IMPLS", "NeighborhoodAttention1d", "causal_window", "centred_window", "compiled_problem",
           "dense_reference", "na1d", "na1d_natten", "na1d_torch", "natten_available"]
