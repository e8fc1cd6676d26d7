"""The fused Triton causal NA kernels: forward and every gradient against the dense masked reference
(float64 autograd), causality, and when the kernel refuses to run.

The kernels run for real under Triton's CPU interpreter in one subprocess (``TRITON_INTERPRET=1`` is
set in its environment before triton is imported, so this process's imports are unaffected); it
prints a JSON verdict that the tests below read. On a CUDA machine the compiled kernels are compared
with emotk's torch path in fp32, fp16 and bf16.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from emotk.models.na_triton import na1d_triton, triton_problem

# name: (B, T, heads, head_dim, k, d, rpb, block_t, dtype, layout) — layout "qkv": q, k, v are views of
# one [B, T, 3, heads, head_dim] tensor (the NA layer's strides); "sep": three contiguous tensors.
CASES = {
    "T13_D8_k3_d1_rpb_blocks4": (2, 13, 2, 8, 3, 1, True, 4, "float32", "sep"),
    "T13_D12_k3_d5_kd>T": (2, 13, 2, 12, 3, 5, False, None, "float32", "qkv"),
    "T40_D12_k3_d4_rpb_blocks16": (2, 40, 2, 12, 3, 4, True, 16, "float32", "qkv"),
    "T40_D8_k3_d1": (2, 40, 2, 8, 3, 1, False, 8, "float32", "sep"),
    "T13_D8_k4_d2_rpb_even_k": (1, 13, 2, 8, 4, 2, True, None, "float32", "sep"),
    "T9_D8_k1": (1, 9, 1, 8, 1, 1, True, None, "float32", "sep"),
    "T13_D8_k3_d2_rpb_fp16": (2, 13, 2, 8, 3, 2, True, 8, "float16", "qkv"),
    "T13_D8_k3_d2_rpb_bf16": (2, 13, 2, 8, 3, 2, True, 8, "bfloat16", "qkv"),
}
TOL = {"float32": 1e-5, "float16": 4e-3, "bfloat16": 3e-2}  # output rounding of each dtype, values ≈ 1–4

SCRIPT = textwrap.dedent("""
    import json, os, sys
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import torch
    from emotk.models.na import dense_reference
    from emotk.models.na_triton import na1d_triton, triton_problem

    cases = json.loads(sys.argv[1])
    verdict = {}

    def inputs(B, T, H, D, dtype, layout, seed):
        g = torch.Generator().manual_seed(seed)
        if layout == "qkv":
            x = torch.randn(B, T, 3, H, D, generator=g).to(dtype).requires_grad_()
            return x, list(x.unbind(2))
        qkv = [torch.randn(B, T, H, D, generator=g).to(dtype).requires_grad_() for _ in range(3)]
        return qkv, qkv

    def grads(out, leaves, go):
        return torch.autograd.grad(out, leaves, go, allow_unused=True)

    def err(a, b):
        return float((a.double() - b.double()).abs().max())

    for name, (B, T, H, D, ks, d, use_rpb, bt, dt, layout) in cases.items():
        dtype = getattr(torch, dt)
        leaves, (q, k, v) = inputs(B, T, H, D, dtype, layout, seed=len(name))
        leaves = leaves if isinstance(leaves, list) else [leaves]
        g = torch.Generator().manual_seed(7)
        rpb = (torch.randn(H, 2 * ks - 1, generator=g) * 0.5).requires_grad_() if use_rpb else None
        scale = 0.3 if ks == 4 else None
        out = na1d_triton(q, k, v, ks, d, rpb=rpb, scale=scale, block_t=bt)
        go = torch.randn(out.shape, generator=g).to(dtype)
        wrt = leaves + ([rpb] if use_rpb else [])
        got = grads(out, wrt, go)
        # reference: float64 dense masked attention on the same (rounded) inputs
        ref_leaves = [x.detach().double().requires_grad_() for x in leaves]
        rq, rk, rv = ref_leaves[0].unbind(2) if layout == "qkv" else ref_leaves
        rr = rpb.detach().double().requires_grad_() if use_rpb else None
        ref = dense_reference(rq, rk, rv, ks, d, rpb=rr, scale=scale)
        want = grads(ref, ref_leaves + ([rr] if use_rpb else []), go.double())
        names = (["dqkv"] if layout == "qkv" else ["dq", "dk", "dv"]) + (["drpb"] if use_rpb else [])
        res = {"out": err(out, ref), "dtype": str(out.dtype).split(".")[-1],
               "grad_dtype": str(got[0].dtype).split(".")[-1]}
        res.update({n: err(a, b) for n, a, b in zip(names, got, want)})
        if use_rpb:  # columns k..2k-2 belong to non-causal offsets: exactly zero gradient
            res["drpb_unused"] = float(got[-1][:, ks:].abs().max()) if ks > 1 else 0.0
        verdict[name] = res

    # causality: new values in frames > t0 leave outputs ≤ t0 bit-identical, and give them no gradient
    B, T, H, D, ks, d, t0 = 2, 40, 2, 12, 3, 4, 17
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(B, T, H, D, generator=g).requires_grad_() for _ in range(3))
    rpb = torch.randn(H, 2 * ks - 1, generator=g)
    out = na1d_triton(q, k, v, ks, d, rpb=rpb, block_t=8)
    q2, k2, v2 = (x.detach().clone() for x in (q, k, v))
    for x in (q2, k2, v2):
        x[:, t0 + 1:] = torch.randn(B, T - t0 - 1, H, D, generator=g) * 10
    out2 = na1d_triton(q2, k2, v2, ks, d, rpb=rpb, block_t=8)
    gq, gk, gv = torch.autograd.grad(out[:, :t0 + 1].sum(), (q, k, v))
    verdict["causality"] = {
        "past_changed": float((out[:, :t0 + 1] - out2[:, :t0 + 1]).abs().max()),
        "future_changed": float((out[:, t0 + 1:] - out2[:, t0 + 1:]).abs().max()),
        "future_grad": float(max(x[:, t0 + 1:].abs().max() for x in (gq, gk, gv))),
        "past_grad": float(min(x[:, :t0 + 1].abs().max() for x in (gq, gk, gv))),
    }

    x = torch.zeros(1, 5, 1, 8)
    verdict["problems"] = {
        "cpu_fp32": triton_problem(x, 3, 1, None),
        "fp64": triton_problem(x.double(), 3, 1, None),
        "head_dim_600": triton_problem(torch.zeros(1, 5, 1, 600), 3, 1, None),
        "3d": triton_problem(torch.zeros(5, 1, 8), 3, 1, None),
        "bad_rpb": triton_problem(x, 3, 1, torch.zeros(1, 4)),
        "dilation_0": triton_problem(x, 3, 0, None),
    }
    print("VERDICT " + json.dumps(verdict))
""")


@pytest.fixture(scope="module")
def verdict():
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(CASES)], env=env, capture_output=True,
                          text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("VERDICT ")]
    assert proc.returncode == 0 and lines, f"interpreter run failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("VERDICT "):])


@pytest.mark.parametrize("name", list(CASES))
def test_forward_and_gradients_match_dense_reference(verdict, name):
    res = verdict[name]
    dt = CASES[name][8]
    assert res["dtype"] == dt and res["grad_dtype"] == dt
    tol = TOL[dt]
    for key, value in res.items():
        if key in ("dtype", "grad_dtype"):
            continue
        limit = 0.0 if key == "drpb_unused" else tol * (4 if key == "drpb" else 1)  # drpb sums B·T terms
        assert value <= limit, f"{name}: {key} differs from the dense reference by {value:.3g} (> {limit:g})"


def test_causal_future_frames_change_nothing(verdict):
    c = verdict["causality"]
    assert c["past_changed"] == 0.0 and c["future_grad"] == 0.0
    assert c["future_changed"] > 0.1 and c["past_grad"] > 0.0  # the check can see a change


def test_triton_problem_under_interpreter(verdict):
    p = verdict["problems"]
    assert p["cpu_fp32"] is None
    for key in ("fp64", "head_dim_600", "3d", "bad_rpb", "dilation_0"):
        assert isinstance(p[key], str) and p[key], key


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="needs the compiled (non-interpreted) path")
def test_cpu_tensor_is_refused_with_a_reason():
    q = torch.zeros(1, 5, 2, 8)
    why = triton_problem(q, 3, 1, None)
    assert isinstance(why, str) and "CUDA" in why
    with pytest.raises(ValueError, match="CUDA"):
        na1d_triton(q, q, q, 3, 1)


def test_module_imports_without_triton():
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch\n"
            "from emotk.models.na_triton import triton_problem\n"
            "print(triton_problem(torch.zeros(1, 4, 1, 8), 3, 1, None))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "triton" in proc.stdout.lower() and proc.stdout.strip() != "None"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 4e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("T,ks,d,use_rpb", [(256, 7, 8, True), (37, 3, 16, False), (1000, 5, 3, True)])
def test_cuda_matches_torch_path(dtype, tol, T, ks, d, use_rpb):
    from emotk.models.na import na1d_torch

    assert triton_problem(torch.zeros(1, 1, 1, 8, device="cuda", dtype=dtype), ks, d, None) is None
    g = torch.Generator(device="cuda").manual_seed(0)
    B, H, D = 3, 2, 40
    x = torch.randn(B, T, 3, H, D, device="cuda", generator=g).to(dtype).requires_grad_()
    rpb = (torch.randn(H, 2 * ks - 1, device="cuda", generator=g) * 0.5).requires_grad_() if use_rpb else None
    go = torch.randn(B, T, H, D, device="cuda", generator=g).to(dtype)
    out = na1d_triton(*x.unbind(2), ks, d, rpb=rpb)
    got = torch.autograd.grad(out, [x] + ([rpb] if use_rpb else []), go)
    xr = x.detach().float().requires_grad_()
    rr = rpb.detach().requires_grad_() if use_rpb else None
    ref = na1d_torch(*xr.unbind(2), ks, d, causal=True, rpb=rr)
    want = torch.autograd.grad(ref, [xr] + ([rr] if use_rpb else []), go.float())
    assert out.dtype == dtype and got[0].dtype == dtype
    assert (out.float() - ref).abs().max() <= tol
    assert (got[0].float() - want[0]).abs().max() <= tol * 2
    if use_rpb:  # summed over B·T terms: relative check
        assert (got[1] - want[1]).abs().max() <= tol * 2 * max(1.0, float(want[1].abs().max()))
