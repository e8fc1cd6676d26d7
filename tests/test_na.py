"""emotk's neighborhood attention: against a dense masked reference, an independent window model,
NATTEN's own forward pass, gradients, causality and the layer's backend selection."""

import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from emotk.errors import ModelError
from emotk.models import na as na_module
from emotk.models.na import (IMPLS, NeighborhoodAttention1d, causal_window, centred_window, compiled_problem,
                             dense_reference, na1d, na1d_natten, na1d_torch, natten_available)

CASES = [  # (T, k, d, heads, head_dim) — includes T < k·d and even k
    (20, 3, 2, 2, 8),
    (7, 3, 4, 1, 8),
    (33, 5, 3, 2, 8),
    (5, 4, 2, 1, 16),
    (64, 7, 8, 4, 16),
    (3, 9, 2, 2, 8),
    (40, 1, 1, 1, 8),
]


def qkv(B, T, H, D, dtype=torch.float32, grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, T, H, D, generator=g, dtype=dtype).requires_grad_(grad) for _ in range(3)]


def window_by_hand(T, k, d, causal):
    """Neighbour sets written independently of emotk's code (loops over frames)."""
    sets = []
    for t in range(T):
        if causal:
            sets.append({t - j * d for j in range(k) if t - j * d >= 0})
            continue
        group = list(range(t % d, T, d))
        g = group.index(t)
        if len(group) <= k:
            sets.append(set(group))
            continue
        start = min(max(g - k // 2, 0), len(group) - k)
        sets.append(set(group[start:start + k]))
    return sets


def loop_reference(q, k, v, ks, d, causal, rpb=None):
    """Attention frame by frame over the hand-made neighbour sets (float64)."""
    B, T, H, D = q.shape
    out = torch.zeros_like(q)
    for t, nb in enumerate(window_by_hand(T, ks, d, causal)):
        nb = sorted(nb)
        s = torch.einsum("bhc,bjhc->bhj", q[:, t], k[:, nb]) * D ** -0.5
        if rpb is not None:
            s = s + torch.stack([rpb[:, (j - t) // d + ks - 1] for j in nb], -1)
        out[:, t] = torch.einsum("bhj,bjhc->bhc", s.softmax(-1), v[:, nb])
    return out


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T,k,d,H,D", CASES)
def test_matches_dense_masked_attention(T, k, d, H, D, causal):
    q, kk, v = qkv(2, T, H, D)
    rpb = torch.randn(H, 2 * k - 1)
    for impl in [i for i in IMPLS if i != "compiled"] if causal else ("auto", "gather"):
        for bias in (None, rpb):
            ours = na1d_torch(q, kk, v, k, d, causal=causal, rpb=bias, impl=impl)
            assert ours.shape == q.shape
            assert (ours - dense_reference(q, kk, v, k, d, causal=causal, rpb=bias)).abs().max() <= 1e-5


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T,k,d,H,D", CASES[:5])
def test_matches_frame_by_frame_reference(T, k, d, H, D, causal):
    q, kk, v = qkv(2, T, H, D, dtype=torch.float64)
    rpb = torch.randn(H, 2 * k - 1, dtype=torch.float64)
    ours = na1d_torch(q, kk, v, k, d, causal=causal, rpb=rpb)
    assert torch.allclose(ours, loop_reference(q, kk, v, k, d, causal, rpb), atol=1e-10)


def test_centred_window_geometry_is_natten_like():
    # T=21, k=3, d=2: group of even frames has 11 members; frame 0 shifts right, frame 20 shifts left
    index, slot, valid = centred_window(21, 3, 2)
    assert index[0].tolist() == [0, 2, 4] and index[1].tolist() == [1, 3, 5]
    assert index[10].tolist() == [8, 10, 12]
    assert index[19].tolist() == [15, 17, 19] and index[20].tolist() == [16, 18, 20]
    assert slot[0].tolist() == [2, 3, 4] and slot[10].tolist() == [1, 2, 3] and slot[20].tolist() == [0, 1, 2]
    assert bool(valid.all())
    index, slot, valid = causal_window(10, 3, 4)
    assert index[9].tolist() == [1, 5, 9] and slot[9].tolist() == [0, 1, 2] and valid[9].all()
    assert valid[5].tolist() == [False, True, True] and valid[0].tolist() == [False, False, True]


@pytest.mark.parametrize("causal", [True, False])
def test_gradients_match_dense_reference(causal):
    for T, k, d, H, D in [(20, 3, 2, 2, 8), (9, 4, 3, 1, 8), (30, 5, 2, 2, 4)]:
        q, kk, v = qkv(2, T, H, D, dtype=torch.float64, grad=True)
        rpb = torch.randn(H, 2 * k - 1, dtype=torch.float64, requires_grad=True)
        g = torch.randn(2, T, H, D, dtype=torch.float64)
        ref = torch.autograd.grad(dense_reference(q, kk, v, k, d, causal=causal, rpb=rpb), (q, kk, v, rpb), g)
        for impl in ("shift", "gather") if causal else ("gather",):
            out = na1d_torch(q, kk, v, k, d, causal=causal, rpb=rpb, impl=impl)
            for a, b in zip(torch.autograd.grad(out, (q, kk, v, rpb), g), ref):
                assert torch.allclose(a, b, atol=1e-10), impl


def test_gradcheck_causal():
    q, kk, v = qkv(1, 11, 2, 3, dtype=torch.float64, grad=True)
    rpb = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c, r: na1d_torch(a, b, c, 3, 2, causal=True, rpb=r, impl="shift"),
                                    (q, kk, v, rpb), fast_mode=True)


def test_causal_rpb_uses_only_the_first_k_slots():
    q, kk, v = qkv(2, 25, 2, 8, grad=True)
    rpb = torch.zeros(2, 9, requires_grad=True)
    na1d_torch(q, kk, v, 5, 3, causal=True, rpb=rpb).square().sum().backward()
    assert rpb.grad[:, :5].abs().sum() > 0
    assert rpb.grad[:, 5:].abs().sum() == 0


@pytest.mark.parametrize("impl", ["shift", "gather"])
@pytest.mark.parametrize("T,k,d", [(30, 3, 4), (64, 7, 8), (17, 5, 1), (12, 1, 3)])
def test_never_looks_at_the_future(T, k, d, impl):
    q, kk, v = qkv(1, T, 2, 8)
    rpb = torch.randn(2, 2 * k - 1)
    base = na1d_torch(q, kk, v, k, d, causal=True, rpb=rpb, impl=impl)
    for t in range(0, T - 1, 3):
        q2, k2, v2 = (x.clone() for x in (q, kk, v))
        for x in (q2, k2, v2):
            x[:, t + 1:] = torch.randn_like(x[:, t + 1:]) * 10
        out = na1d_torch(q2, k2, v2, k, d, causal=True, rpb=rpb, impl=impl)
        assert torch.equal(out[:, :t + 1], base[:, :t + 1])
        assert not torch.allclose(out[:, t + 1:], base[:, t + 1:])


def test_half_precision_runs_softmax_in_fp32():
    q, kk, v = qkv(2, 40, 2, 16)
    ref = na1d_torch(q, kk, v, 5, 3)
    half = na1d_torch(*(x.bfloat16() for x in (q, kk, v)), 5, 3)
    assert half.dtype == torch.bfloat16
    assert (half.float() - ref).abs().max() < 0.05


# ---------------------------------------------------------------------------- CPU speed paths


def test_cached_mask_bias_is_per_shape_device_and_dtype():
    a = na_module._causal_mask_bias(20, 3, 2, "cpu", torch.float32)
    assert a is na_module._causal_mask_bias(20, 3, 2, "cpu", torch.float32)  # cached, not rebuilt per call
    others = [na_module._causal_mask_bias(21, 3, 2, "cpu", torch.float32),
              na_module._causal_mask_bias(20, 3, 4, "cpu", torch.float32),
              na_module._causal_mask_bias(20, 3, 2, "cpu", torch.float64),
              na_module._causal_mask_bias(20, 3, 2, "meta", torch.float32)]
    assert all(o is not a for o in others)
    assert others[0].shape == (3, 21, 1) and others[2].dtype == torch.float64 and others[3].device.type == "meta"
    # by hand: slot i of frame t is t − (2−i)·2; −inf exactly where that is before frame 0
    for t in range(20):
        for i in range(3):
            assert (a[i, t, 0].item() == float("-inf")) == (t - (2 - i) * 2 < 0)
    inf_d4 = others[1] == float("-inf")
    assert int(inf_d4.sum()) == 8 + 4  # d = 4: slot 0 misses frames 0..7, slot 1 frames 0..3


def test_caches_built_under_inference_mode_still_train():
    q, kk, v = qkv(1, 23, 2, 8, seed=3)
    with torch.inference_mode():  # first use of these shapes: caches are filled here
        for impl in ("shift", "gather"):
            na1d_torch(q, kk, v, 3, 5, causal=True, impl=impl)
        na1d_torch(q, kk, v, 3, 5, causal=False)
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, kk, v))
    for impl, causal in (("shift", True), ("gather", True), ("gather", False)):
        na1d_torch(qg, kg, vg, 3, 5, causal=causal, impl=impl).sum().backward()
    assert all(torch.isfinite(x.grad).all() for x in (qg, kg, vg))


def test_shift_path_is_bit_identical_from_call_to_call():
    q, kk, v = qkv(2, 50, 2, 8, grad=True, seed=4)
    rpb = torch.randn(2, 9)
    g = torch.randn(2, 50, 2, 8)
    runs = []
    for _ in range(2):
        out = na1d_torch(q, kk, v, 5, 3, rpb=rpb)
        runs.append((out, *torch.autograd.grad(out, (q, kk, v), g)))
    assert all(torch.equal(a, b) for a, b in zip(*runs))


def test_compiled_path_equals_the_reference_and_repeats_exactly():
    """impl="compiled" (torch.compile where a compiler works, else the same functions eagerly) against
    the float64 dense reference, forward and every gradient; two calls give identical bits."""
    torch.manual_seed(0)
    B, T, H, D, k, d = 2, 37, 2, 8, 5, 3  # the first (k−1)·d = 12 frames miss neighbours
    q, kk, v = qkv(B, T, H, D, grad=True, seed=5)
    rpb = torch.randn(H, 2 * k - 1, requires_grad=True)
    g = torch.randn(B, T, H, D)
    dbl = [x.detach().double().requires_grad_() for x in (q, kk, v, rpb)]
    ref = dense_reference(*dbl[:3], k, d, causal=True, rpb=dbl[3])
    ref_grads = torch.autograd.grad(ref, dbl, g.double())
    runs = []
    for _ in range(2):
        out = na1d_torch(q, kk, v, k, d, causal=True, rpb=rpb, impl="compiled")
        runs.append((out, *torch.autograd.grad(out, (q, kk, v, rpb), g)))
    assert (runs[0][0].double() - ref).abs().max() <= 1e-5
    for a, b in zip(runs[0][1:], ref_grads):
        assert (a.double() - b).abs().max() <= 1e-4
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert compiled_problem() is None, compiled_problem()  # gcc is on the project's machines
    layer = NeighborhoodAttention1d(16, num_heads=2, kernel_size=k, dilation=d, backend="compiled")
    assert layer.explain_backend(torch.randn(B, T, 16)) == ("compiled", "requested 'compiled'")


def test_auto_never_picks_a_cuda_kernel_on_cpu_and_triton_refuses_cpu_without_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    layer = NeighborhoodAttention1d(16, num_heads=2, kernel_size=3, dilation=2)
    x = torch.randn(2, 20, 16)
    backend, why = layer.explain_backend(x)
    assert backend in ("native", "torch") and "CPU" in why  # native when a C compiler works (test_na_native)
    layer.backend = "triton"
    with pytest.raises(ModelError, match="(?i)triton.*CUDA"):
        layer(x)
    with pytest.raises(ModelError, match="causal only"):
        NeighborhoodAttention1d(16, num_heads=2, kernel_size=3, dilation=2, causal=False, backend="triton")(x)
    with pytest.raises(ModelError, match="Triton"):
        na1d(*qkv(1, 20, 2, 8), 3, 2, backend="triton")


TRITON_LAYER = textwrap.dedent("""
    import json, torch
    from emotk.models.na import NeighborhoodAttention1d
    torch.manual_seed(0)
    layer = NeighborhoodAttention1d(16, num_heads=2, kernel_size=3, dilation=2, backend="triton")
    x = torch.randn(2, 11, 16, requires_grad=True)
    y = layer(x)
    gx, grpb = torch.autograd.grad(y.square().sum(), (x, layer.rpb))
    layer.backend = "torch"
    y2 = layer(x)
    gx2, grpb2 = torch.autograd.grad(y2.square().sum(), (x, layer.rpb))
    layer.backend = "auto"
    print(json.dumps({"y": (y - y2).abs().max().item(), "gx": (gx - gx2).abs().max().item(),
                      "grpb": (grpb - grpb2).abs().max().item(), "auto": layer.explain_backend(x)[0]}))
""")


def test_layer_runs_the_triton_kernel_under_the_interpreter():
    """backend="triton" wires emotk.models.na_triton into the layer (forward, backward, rpb); Triton's
    CPU interpreter runs the kernels in a subprocess (TRITON_INTERPRET=1 before triton is imported)."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run([sys.executable, "-c", TRITON_LAYER], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["y"] <= 1e-5 and got["gx"] <= 1e-4 and got["grpb"] <= 1e-4, got
    assert got["auto"] in ("native", "torch")  # auto never picks the interpreter: the CPU stays on a CPU kernel


# ---------------------------------------------------------------------------- NATTEN cross-check

natten_only = pytest.mark.skipif(not natten_available(), reason="NATTEN not installed (optional accelerator: pip install --no-build-isolation natten==0.21.7, see docs/models.md)")


@natten_only
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("T,k,d,H,D", [(20, 3, 2, 2, 8), (24, 4, 3, 1, 16), (33, 5, 3, 2, 8), (64, 7, 8, 4, 16),
                                       (21, 3, 2, 2, 8), (56, 7, 8, 1, 32)])
def test_matches_natten_forward(T, k, d, H, D, causal):
    q, kk, v = qkv(2, T, H, D)
    ours = na1d_torch(q, kk, v, k, d, causal=causal)
    theirs = na1d_natten(q, kk, v, k, d, causal=causal)
    assert (ours - theirs).abs().max() <= 1e-5


@natten_only
def test_layer_backends_agree_and_auto_uses_natten_on_cuda_only():
    torch.manual_seed(0)
    layer = NeighborhoodAttention1d(32, num_heads=2, kernel_size=5, dilation=3, pos_bias=False, backend="auto")
    x = torch.randn(2, 40, 32)
    assert layer.resolve_backend(x) in ("native", "torch")  # auto uses NATTEN on CUDA only
    with torch.no_grad():
        auto = layer(x)
        layer.backend = "natten"
        assert layer.resolve_backend(x) == "natten"
        nat = layer(x)
    assert (auto - nat).abs().max() <= 1e-5
    with pytest.raises(ModelError, match="no backward pass on CPU"):
        layer(x.requires_grad_())


def test_layer_parameters_and_refusals():
    layer = NeighborhoodAttention1d(128, num_heads=2, kernel_size=7, dilation=4)
    assert sum(p.numel() for p in layer.parameters()) == 4 * 128 ** 2 + 4 * 128 + 2 * 13
    assert sum(p.numel() for p in NeighborhoodAttention1d(64, 1, 9, pos_bias=False).parameters()) == 4 * 64 ** 2 + 4 * 64
    x = torch.randn(1, 50, 128)
    layer.backend = "natten"
    with pytest.raises(ModelError, match="positional bias"):
        layer(x)
    with pytest.raises(ModelError, match="divisible"):
        NeighborhoodAttention1d(10, num_heads=3)
    with pytest.raises(ModelError, match="backend"):
        NeighborhoodAttention1d(8, backend="cuda")


def test_layer_trains_with_torch_backend():
    torch.manual_seed(0)
    layer = NeighborhoodAttention1d(16, num_heads=2, kernel_size=3, dilation=2, backend="torch")
    x, y = torch.randn(4, 30, 16), torch.randn(4, 30, 16)
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = (layer(x) - y).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer(x)  # no warnings on the plain torch path


# ---------------------------------------------------------------------------- CUDA (when present)

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@cuda_only
@pytest.mark.parametrize("causal", [True, False])
def test_cuda_forward_and_backward_match_dense(causal):
    for T, k, d, H, D in [(64, 7, 8, 2, 32), (33, 5, 3, 2, 8), (5, 4, 2, 1, 16)]:
        q, kk, v = (x.cuda().requires_grad_() for x in qkv(2, T, H, D))
        rpb = torch.randn(H, 2 * k - 1, device="cuda", requires_grad=True)
        g = torch.randn(2, T, H, D, device="cuda")
        outs, grads = [], []
        for fn in (na1d_torch, dense_reference):
            out = fn(q, kk, v, k, d, causal=causal, rpb=rpb)
            outs.append(out)
            grads.append(torch.autograd.grad(out, (q, kk, v, rpb), g))
        assert (outs[0] - outs[1]).abs().max() <= 1e-4
        for a, b in zip(*grads):
            assert (a - b).abs().max() <= 1e-3


@cuda_only
def test_cuda_auto_backend_names_triton():
    x = torch.randn(2, 64, 64, device="cuda")
    causal = NeighborhoodAttention1d(64, num_heads=2, kernel_size=7, dilation=4).cuda()
    lagged = NeighborhoodAttention1d(64, num_heads=2, kernel_size=7, dilation=4, causal=False).cuda()
    backend, why = causal.explain_backend(x)
    assert backend == "triton" or (backend == "torch" and "triton" in why), why
    backend, why = lagged.explain_backend(x)
    assert backend in ("torch", "natten") and "triton" in why and "causal only" in why, why


@cuda_only
def test_cuda_layer_under_autocast():
    layer = NeighborhoodAttention1d(64, num_heads=2, kernel_size=7, dilation=4, backend="torch").cuda()
    assert layer.resolve_backend(torch.randn(1, 64, 64, device="cuda")) == "torch"
    x = torch.randn(4, 100, 64, device="cuda", requires_grad=True)
    with torch.autocast("cuda", dtype=torch.float16):
        y = layer(x)
    assert y.dtype == torch.float16
    y.float().square().mean().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(layer.rpb.grad).all()
    ref = layer(x.detach())
    assert (y.float() - ref).abs().max() < 0.05
