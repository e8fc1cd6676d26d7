"""emotk's C kernel for causal dilated neighborhood attention on the CPU (float32, forward + backward).

``na_cpu.c`` (next to this file) is compiled on first use with the system C compiler
(``$CC``, else ``cc``/``gcc``/``clang``; ``-O3 -march=native``, OpenMP where the compiler has it)
and loaded with ctypes. The shared library is cached under :func:`cache_dir` in a file named by a
hash of the source, the compiler's version, the flags and this CPU, so a home folder shared by
machines of different kinds never runs a library built for another CPU. It is written to a
temporary name and renamed into place, so concurrent first uses (torchrun ranks) are safe.

Where no compiler works (or the input is not float32, not causal, or the window is larger than
``KMAX``) :func:`problem` says why and emotk's torch path runs instead (``NeighborhoodAttention1d``
with backend "auto" warns once; backend "native" refuses). The kernel writes every output row from
one thread in a fixed order: results are bit-identical from call to call and for any thread count
(``torch.get_num_threads()`` threads are used). They equal the torch path's within float32
rounding (~1e-6), not bit for bit, so a run's NA kernel is recorded with the run.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional

import torch
from torch.autograd.function import once_differentiable

SOURCE = Path(__file__).with_name("na_cpu.c")
KMAX = 64  # the largest kernel size the C code takes (its KMAX)
_FLAG_SETS = (  # tried in order; the first that compiles is used
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-march=native"],
    ["-O3", "-fopenmp"],
    ["-O3"],
)
_COMMON = ["-std=gnu11", "-fPIC", "-shared", "-fno-strict-aliasing"]
_cache_override: list[Path] = []
_lock = threading.Lock()
_built: dict = {}  # "lib", "where", "why" once _library() has run in this process


class _Args(ctypes.Structure):
    """Mirror of ``NAArgs`` in na_cpu.c."""

    _fields_ = ([(n, ctypes.c_void_p) for n in ("q", "k", "v", "rpb", "a", "go")]
                + [(n, ctypes.c_int64 * 3) for n in ("qs", "ks", "vs")]
                + [(n, ctypes.c_void_p) for n in ("out", "aw", "gs", "gq", "gk", "gv")]
                + [(n, ctypes.c_int64) for n in ("B", "T", "H", "D", "K", "dil", "nthreads")]
                + [("scale", ctypes.c_float)])


def set_cache_dir(path: str | Path | None) -> None:
    """Build and cache the kernel under ``path`` (the trainer passes ``<workspace>/cache/kernels``);
    None restores the default. ``$EMOTK_KERNEL_CACHE`` wins over both."""
    _cache_override[:] = [] if path is None else [Path(path)]


def cache_dir() -> Path:
    """``$EMOTK_KERNEL_CACHE``, else :func:`set_cache_dir`'s folder, else ``$XDG_CACHE_HOME/emotk/kernels``
    (``~/.cache/emotk/kernels``)."""
    if os.environ.get("EMOTK_KERNEL_CACHE"):
        return Path(os.environ["EMOTK_KERNEL_CACHE"])
    if _cache_override:
        return _cache_override[0]
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "emotk" / "kernels"


def _compiler() -> str | None:
    for name in ([os.environ["CC"]] if os.environ.get("CC") else ["cc", "gcc", "clang"]):
        path = shutil.which(name)
        if path:
            return path
    return None


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the architecture and, on Linux, the CPU model and flags."""
    parts = [platform.machine(), platform.processor()]
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    for key in ("model name", "flags", "Features", "CPU part"):
        line = next((ln for ln in text.splitlines() if ln.startswith(key)), "")
        parts.append(line)
    return "\n".join(parts)


def _key(cc: str) -> str:
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), cc.encode(), version.encode(), repr((_FLAG_SETS, _COMMON)).encode(),
                 _cpu_identity().encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:20]


def _compile(cc: str, target: Path) -> str | None:
    """Compile SOURCE into ``target`` (atomically); None on success, else what the compiler said."""
    target.parent.mkdir(parents=True, exist_ok=True)
    said = ""
    for flags in _FLAG_SETS:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            res = subprocess.run([cc, *flags, *_COMMON, str(SOURCE), "-o", tmp, "-lm"], capture_output=True,
                                 text=True, timeout=300)
            if res.returncode == 0:
                os.replace(tmp, target)
                return None
            lines = (res.stderr or res.stdout).strip().splitlines()
            errors = [ln for ln in lines if "error" in ln.lower()]
            said = (errors or lines or [f"exit {res.returncode}"])[0][:300]
        except (OSError, subprocess.SubprocessError) as exc:
            said = f"{type(exc).__name__}: {exc}"
        finally:
            Path(tmp).unlink(missing_ok=True)
    return said


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    lib.emotk_na_forward_f32.argtypes = [ctypes.POINTER(_Args)]
    lib.emotk_na_forward_f32.restype = None
    lib.emotk_na_backward_f32.argtypes = [ctypes.POINTER(_Args)]
    lib.emotk_na_backward_f32.restype = None
    lib.emotk_na_exp_f32.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.emotk_na_exp_f32.restype = None
    lib.emotk_na_openmp.restype = ctypes.c_int
    return lib


def _library() -> tuple[ctypes.CDLL | None, str]:
    """(library, its path) or (None, why it is not available); built at most once per process."""
    if "lib" not in _built:
        with _lock:
            if "lib" not in _built:
                lib, where = _build()
                _built.update(lib=lib, where=where, why=None if lib is not None else where)
    return _built["lib"], _built["where"]


def _build() -> tuple[ctypes.CDLL | None, str]:
    """Load the cached library for this source/compiler/CPU, building it first when absent or damaged."""
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found (set $CC, or install gcc or clang)"
    target = cache_dir() / f"na_cpu-{_key(cc)}.so"
    if target.exists():
        try:
            return _declare(ctypes.CDLL(str(target))), str(target)
        except (OSError, AttributeError):  # a damaged cached file: build it again
            target.unlink(missing_ok=True)
    said = _compile(cc, target)
    if said is not None:
        return None, f"{cc} could not build {SOURCE.name}: {said}"
    try:
        return _declare(ctypes.CDLL(str(target))), str(target)
    except (OSError, AttributeError) as exc:
        return None, f"the built kernel {target} does not load ({exc})"


def available() -> bool:
    """Whether the kernel is built (building it now if needed) and loads."""
    return _library()[0] is not None


def build_info() -> str:
    """The kernel's library path and threading, or why it is not available (recorded with runs)."""
    lib, where = _library()
    if lib is None:
        return f"unavailable: {where}"
    return f"{where} ({'OpenMP' if lib.emotk_na_openmp() else 'one thread'})"


def problem(q: torch.Tensor, kernel_size: int, causal: bool = True) -> str | None:
    """Why the kernel cannot run on queries ``q`` [B, T, H, D], or None when it can."""
    if not causal:
        return "the native kernel is causal only (na_mode lagged uses centred windows)"
    if q.device.type != "cpu":
        return f"the native kernel runs on the CPU (the input is on {q.device})"
    if q.dtype != torch.float32:
        return f"the native kernel is float32 only (the input is {q.dtype})"
    if kernel_size > KMAX:
        return f"the native kernel takes kernel sizes up to {KMAX} (got {kernel_size})"
    if "why" not in _built:  # (after the first call a plain lookup, which torch.compile traces without a break)
        _library()
    return _built["why"]


def exp(x: torch.Tensor) -> torch.Tensor:
    """The kernel's vectorised e^x (for x ≤ 0) on a float32 CPU tensor — exposed for its tests."""
    lib, why = _library()
    if lib is None:
        raise RuntimeError(why)
    x = x.detach().to(torch.float32).contiguous()
    y = torch.empty_like(x)
    lib.emotk_na_exp_f32(x.data_ptr(), y.data_ptr(), x.numel())
    return y


def _args(q, k, v, ks: int, d: int, scale: float) -> _Args:
    B, T, H, D = q.shape
    a = _Args()
    a.q, a.k, a.v = q.data_ptr(), k.data_ptr(), v.data_ptr()
    a.qs[:], a.ks[:], a.vs[:] = q.stride()[:3], k.stride()[:3], v.stride()[:3]
    a.B, a.T, a.H, a.D, a.K, a.dil = B, T, H, D, ks, d
    a.nthreads, a.scale = max(1, torch.get_num_threads()), scale
    return a


def _head_contiguous(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _forward_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rpb_k: Optional[torch.Tensor], ks: int, d: int,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(out [B, T, H, D], attention weights [B, T, H, k]) from the C forward. The layouts the C code
    assumes are made here, where the real tensors arrive (a compiled graph may choose other strides)."""
    q, k, v = _head_contiguous(q), _head_contiguous(k), _head_contiguous(v)
    rpb_k = None if rpb_k is None else rpb_k.contiguous()
    B, T, H, D = q.shape
    out, attn = q.new_empty(B, T, H, D), q.new_empty(B, T, H, ks)
    args = _args(q, k, v, ks, d, scale)
    args.rpb = None if rpb_k is None else rpb_k.data_ptr()
    args.out, args.aw = out.data_ptr(), attn.data_ptr()
    _library()[0].emotk_na_forward_f32(ctypes.byref(args))
    return out, attn


def _backward_impl(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn: torch.Tensor, go: torch.Tensor, ks: int,
                   d: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv [B, T, H, D], score gradients [B, T, H, k]) from the C backward."""
    q, k, v = _head_contiguous(q), _head_contiguous(k), _head_contiguous(v)
    attn, go = attn.contiguous(), go.to(torch.float32).contiguous()
    B, T, H, D = q.shape
    gq, gk, gv, gs = q.new_empty(B, T, H, D), q.new_empty(B, T, H, D), q.new_empty(B, T, H, D), q.new_empty(B, T, H, ks)
    args = _args(q, k, v, ks, d, scale)
    args.a, args.go = attn.data_ptr(), go.data_ptr()
    args.gs, args.gq, args.gk, args.gv = gs.data_ptr(), gq.data_ptr(), gk.data_ptr(), gv.data_ptr()
    _library()[0].emotk_na_backward_f32(ctypes.byref(args))
    return gq, gk, gv, gs


# The same two calls as PyTorch custom operators, so that ``torch.compile`` (``emotk train --compile``)
# keeps them in its graph instead of breaking it at the ctypes call; eager calls skip the dispatcher.
_forward_op = torch.library.custom_op("emotk::na_causal_forward", _forward_impl, mutates_args=())
_backward_op = torch.library.custom_op("emotk::na_causal_backward", _backward_impl, mutates_args=())


@_forward_op.register_fake
def _(q, k, v, rpb_k, ks, d, scale):
    B, T, H, D = q.shape
    return q.new_empty(B, T, H, D), q.new_empty(B, T, H, ks)


@_backward_op.register_fake
def _(q, k, v, attn, go, ks, d, scale):
    B, T, H, D = q.shape
    return q.new_empty(B, T, H, D), q.new_empty(B, T, H, D), q.new_empty(B, T, H, D), q.new_empty(B, T, H, ks)


class _NativeNA(torch.autograd.Function):
    """The C kernel under autograd: forward saves the attention weights [B, T, H, K]; the backward
    returns dq, dk, dv (contiguous) and the bias gradient summed over batch and time."""

    @staticmethod
    def forward(ctx, q, k, v, rpb_k, ks: int, d: int, scale: float):
        fwd = _forward_op if torch.compiler.is_compiling() else _forward_impl
        out, attn = fwd(q, k, v, rpb_k, ks, d, scale)
        ctx.save_for_backward(q, k, v, attn)
        ctx.cfg = (ks, d, scale)
        return out

    @staticmethod
    @once_differentiable  # no double backward: a graph through the C call would silently be zero
    def backward(ctx, grad_out):
        q, k, v, attn = ctx.saved_tensors
        ks, d, scale = ctx.cfg
        bwd = _backward_op if torch.compiler.is_compiling() else _backward_impl
        gq, gk, gv, gs = bwd(q, k, v, attn, grad_out, ks, d, scale)
        grad_rpb = gs.sum((0, 1)) if ctx.needs_input_grad[3] else None  # [H, K]
        return gq, gk, gv, grad_rpb, None, None, None


def na1d_native(q, k, v, kernel_size: int, dilation: int = 1, *, rpb=None, scale=None) -> torch.Tensor:
    """Causal dilated NA on float32 CPU tensors ``[B, T, heads, head_dim]`` through the C kernel
    (same semantics as ``emotk.models.na.na1d_torch``; ``rpb`` [heads, 2k−1], of which the causal
    window uses the first k columns). Raises RuntimeError where :func:`problem` names one."""
    why = problem(q, kernel_size)
    if why:
        raise RuntimeError(why)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    rpb_k = None if rpb is None else rpb[:, :kernel_size].to(torch.float32)  # (made contiguous by the impl)
    return _NativeNA.apply(q, k, v, rpb_k, kernel_size, dilation, float(scale))


__all__ = ["KMAX", "available", "build_info", "cache_dir", "exp", "na1d_native", "problem", "set_cache_dir"]
