"""emotk's native CPU kernel for causal dilated neighborhood attention (emotk/models/na_cpu.c), built
with the machine's C compiler: against the frame-by-frame float64 reference and the dense masked
reference (forward and every gradient), its exp against math.exp, determinism across calls and
thread counts, NaN propagation, the layer's backend choice, and building without or with a broken
compiler, from a damaged cache file and by two processes at once."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from emotk.errors import ModelError
from emotk.models import na_cpu
from emotk.models.na import NeighborhoodAttention1d, dense_reference, na1d, na1d_torch
from tests.test_na import CASES, loop_reference, qkv

pytestmark = pytest.mark.skipif(not na_cpu.available(), reason=f"native kernel: {na_cpu.build_info()}")

# (T, k, d, heads, head_dim): the test_na cases plus head dims on and off the unrolled sizes (16/32/64/128)
NATIVE_CASES = CASES + [(50, 7, 8, 2, 64), (19, 3, 2, 3, 20), (12, 2, 5, 1, 3), (30, 4, 1, 2, 128), (26, 5, 2, 1, 40)]


@pytest.mark.parametrize("T,k,d,H,D", NATIVE_CASES)
def test_forward_matches_the_frame_by_frame_reference(T, k, d, H, D):
    q, kk, v = qkv(2, T, H, D)
    rpb = torch.randn(H, 2 * k - 1, generator=torch.Generator().manual_seed(1))
    ours = na_cpu.na1d_native(q, kk, v, k, d, rpb=rpb)
    ref = loop_reference(q.double(), kk.double(), v.double(), k, d, True, rpb=rpb.double())
    assert ours.dtype == torch.float32
    assert (ours.double() - ref).abs().max() <= 2e-6
    plain = na_cpu.na1d_native(q, kk, v, k, d)
    assert (plain.double() - loop_reference(q.double(), kk.double(), v.double(), k, d, True)).abs().max() <= 2e-6


@pytest.mark.parametrize("T,k,d,H,D", [(33, 5, 3, 2, 8), (50, 7, 8, 2, 64), (19, 3, 2, 3, 20), (3, 9, 2, 2, 8)])
def test_gradients_match_the_dense_reference_in_float64(T, k, d, H, D):
    q, kk, v = qkv(2, T, H, D, grad=True)
    rpb = (0.5 * torch.randn(H, 2 * k - 1, generator=torch.Generator().manual_seed(2))).requires_grad_()
    g = torch.randn(2, T, H, D, generator=torch.Generator().manual_seed(3))
    out = na_cpu.na1d_native(q, kk, v, k, d, rpb=rpb)
    ours = torch.autograd.grad(out, (q, kk, v, rpb), g)
    leaves = [x.detach().double().requires_grad_() for x in (q, kk, v, rpb)]
    ref_out = dense_reference(*leaves[:3], k, d, rpb=leaves[3])
    refs = torch.autograd.grad(ref_out, leaves, g.double())
    for name, a, b in zip(("q", "k", "v", "rpb"), ours, refs):
        assert (a.double() - b).abs().max() <= 2e-5 * max(1.0, b.abs().max().item()), name
    assert ours[3][:, k:].abs().max() == 0  # a causal window uses only the first k bias columns


def test_reads_qkv_views_in_place_and_repeats_exactly_for_any_thread_count():
    torch.manual_seed(0)
    packed = torch.randn(3, 40, 3, 2, 32, requires_grad=True)  # [B, T, 3, H, D]: one qkv projection
    q, kk, v = packed.unbind(2)
    rpb = torch.randn(2, 9, requires_grad=True)
    g = torch.randn(3, 40, 2, 32)
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 2, 1):
            torch.set_num_threads(n)
            out = na_cpu.na1d_native(q, kk, v, 5, 4, rpb=rpb)
            runs.append((out, *torch.autograd.grad(out, (packed, rpb), g)))
    finally:
        torch.set_num_threads(threads)
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))
    copies = [x.detach().contiguous() for x in (q, kk, v)]
    assert torch.equal(na_cpu.na1d_native(*copies, 5, 4, rpb=rpb), runs[0][0])


def test_exp_is_within_two_ulp_of_math_exp():
    xs = [-87.0 + 87.0 * i / 4000 for i in range(4001)] + [-1e-7, -0.3465, -0.3466, -10.5, -45.25]
    ours = na_cpu.exp(torch.tensor(xs, dtype=torch.float32))
    for x, y in zip(torch.tensor(xs, dtype=torch.float32).tolist(), ours.tolist()):
        ref = math.exp(x)  # the float32 input, in double
        assert abs(y - ref) <= 2 * 2.0 ** -24 * ref, (x, y, ref)
    special = na_cpu.exp(torch.tensor([float("-inf"), -100.0, -88.0, float("nan"), 0.0]))
    assert special[:3].tolist() == [0.0, 0.0, 0.0] and math.isnan(special[3]) and special[4] == 1.0


def test_nan_and_inf_inputs_propagate_like_the_torch_path():
    q, kk, v = qkv(1, 30, 2, 16)
    q[0, 10, 1, 3] = float("nan")
    kk[0, 4, 0, 0] = float("inf")
    ours = na_cpu.na1d_native(q, kk, v, 3, 2)
    theirs = na1d_torch(q, kk, v, 3, 2, impl="shift")
    assert torch.equal(ours.isnan(), theirs.isnan()) and ours.isnan().any()
    fine = ~theirs.isnan()
    assert (ours[fine] - theirs[fine]).abs().max() <= 1e-5


def test_what_it_refuses_and_how_the_layer_chooses():
    x = torch.randn(2, 20, 16)
    layer = NeighborhoodAttention1d(16, num_heads=2, kernel_size=3, dilation=2)
    assert layer.explain_backend(x) == ("native", "auto on the CPU: emotk's native kernel can run on this input")
    backend, why = layer.explain_backend(x.double())
    assert backend == "torch" and "float32 only" in why
    assert na_cpu.problem(torch.empty(1, 5, 1, 4), 65) == "the native kernel takes kernel sizes up to 64 (got 65)"
    lagged = NeighborhoodAttention1d(16, num_heads=2, kernel_size=3, dilation=2, causal=False)
    assert lagged.explain_backend(x)[0] == "torch"
    lagged.backend = "native"
    with pytest.raises(ModelError, match="causal only"):
        lagged(x)
    with pytest.raises(ModelError, match="float32 only"):
        na1d(*qkv(1, 20, 2, 8, dtype=torch.float64), 3, 2, backend="native")
    with pytest.raises(RuntimeError, match="float32 only"):
        na_cpu.na1d_native(*qkv(1, 20, 2, 8, dtype=torch.float64), 3, 2)


def test_layer_on_native_equals_the_torch_backend_and_trains():
    torch.manual_seed(0)
    layer = NeighborhoodAttention1d(32, num_heads=2, kernel_size=5, dilation=3)
    x = torch.randn(3, 40, 32, requires_grad=True)
    params = [x, *layer.parameters()]
    outs = {}
    for backend in ("native", "torch"):
        layer.backend = backend
        y = layer(x)
        outs[backend] = (y, *torch.autograd.grad(y.square().sum(), params))
    for a, b in zip(outs["native"], outs["torch"]):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())
    layer.backend = "auto"
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    target = torch.randn(3, 40, 32)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = (layer(x.detach()) - target).square().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


# ------------------------------------------------------------------------ building the kernel

PROBE = textwrap.dedent("""
    import json, warnings, torch
    from emotk.models import na_cpu
    from emotk.models.na import NeighborhoodAttention1d
    layer = NeighborhoodAttention1d(16, num_heads=2, kernel_size=3, dilation=2)
    x = torch.randn(2, 20, 16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend, why = layer.explain_backend(x)
        layer(x); layer(x)
    layer.backend = "torch"
    same = torch.equal(layer(x), layer(x))
    print(json.dumps({"backend": backend, "why": why, "info": na_cpu.build_info(), "same": same,
                      "warnings": [str(w.message) for w in caught]}))
""")


def _probe(cache, **env_changes) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "EMOTK_KERNEL_CACHE")}
    env.update({"EMOTK_KERNEL_CACHE": str(cache), **env_changes})
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_without_a_working_compiler_auto_warns_once_and_runs_torch(tmp_path):
    missing = _probe(tmp_path / "a", CC=str(tmp_path / "no-such-cc"))
    assert missing["backend"] == "torch" and "no C compiler found" in missing["why"]
    assert len([w for w in missing["warnings"] if "native CPU NA kernel is not available" in w]) == 1
    broken = tmp_path / "broken-cc"
    broken.write_text("#!/bin/sh\necho 'broken-cc: this compiler refuses everything' >&2\nexit 1\n")
    broken.chmod(0o755)
    said = _probe(tmp_path / "b", CC=str(broken))
    assert said["backend"] == "torch" and "could not build na_cpu.c: broken-cc: this compiler refuses everything" in said["why"]
    assert not list((tmp_path / "b").glob("*.so"))  # nothing half-written left behind


def test_two_processes_build_one_cached_library_and_a_damaged_one_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("CC", "EMOTK_KERNEL_CACHE")}
    env["EMOTK_KERNEL_CACHE"] = str(cache)
    procs = [subprocess.Popen([sys.executable, "-c", PROBE], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    assert all(r["backend"] == "native" and not r["warnings"] for r in results)
    (lib,) = cache.glob("na_cpu-*.so")
    assert not [p for p in cache.iterdir() if p != lib]  # no temporary files left
    stamp = lib.stat().st_mtime_ns
    again = _probe(cache)
    assert again["backend"] == "native" and lib.stat().st_mtime_ns == stamp  # reused, not rebuilt
    lib.write_bytes(b"not a shared library")
    rebuilt = _probe(cache)
    assert rebuilt["backend"] == "native" and str(lib) in rebuilt["info"] and lib.stat().st_size > 1000


def test_torch_compile_keeps_the_kernel_in_one_graph():
    torch.manual_seed(0)
    layer = NeighborhoodAttention1d(32, num_heads=2, kernel_size=3, dilation=2)
    x = torch.randn(2, 24, 32, requires_grad=True)
    assert torch._dynamo.explain(layer)(x).graph_break_count == 0
    eager = layer(x)
    eager_grads = torch.autograd.grad(eager.square().sum(), (x, layer.rpb))
    compiled = torch.compile(layer, dynamic=False)(x)
    grads = torch.autograd.grad(compiled.square().sum(), (x, layer.rpb))
    assert (compiled - eager).abs().max() <= 1e-5
    for a, b in zip(grads, eager_grads):
        assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())


def test_a_second_derivative_is_refused_not_silently_zero():
    q, kk, v = qkv(1, 10, 1, 8, grad=True)
    loss = na_cpu.na1d_native(q, kk, v, 3, 1).square().sum() + q.pow(3).sum()  # g keeps a graph via q³
    (g,) = torch.autograd.grad(loss, q, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()
