"""Parameter and MAC counts of temporal models, ours and the NAC-TCN paper's convention.

- :func:`count_params`: every distinct parameter of the module (``model.parameters()``).
- :func:`count_macs`: true multiply-accumulates of one forward pass of batch 1 at length T:
  ``torch.utils.flop_counter`` for matmuls/convs/RNNs (FLOPs / 2), plus the attention cores it cannot
  see: CPU scaled-dot-product attention (a formula registered for it here) and emotk's gathered
  neighborhood / local attention (each such module reports ``core_macs`` through a forward hook).
  Element-wise work (biases, activations, softmax, norms) is not counted.
- :func:`count_macs_paper`: what the paper's tool (ptflops, "pytorch flops counter") reports for the
  released code: per-module rules for Conv1d, Linear, ReLU, GRU/LSTM, MultiheadAttention, LayerNorm,
  and for NAC-TCN / TCN blocks their ``paper_macs`` (which includes ptflops' double counting of modules
  registered twice, see docs/models.md, "How counts map to the paper"). Attention cores of functional calls are invisible
  to ptflops and so not counted.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from torch import nn

# --------------------------------------------------------------------------------------------------
# true MACs


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs (2·MACs) of q·kᵀ and a·v for ``[B, H, L, E]`` inputs."""
    b, h, lq, e = query_shape
    s, ev = key_shape[-2], value_shape[-1]
    return 2 * b * h * lq * s * (e + ev)


def _custom_flop_mapping() -> dict:
    ops = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            ops[op] = _sdpa_cpu_flops
    return ops


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _example(model: nn.Module, in_dim: int | tuple[int, ...], seq_len: int | None, batch: int) -> torch.Tensor:
    """Zeros ``[batch, seq_len, in_dim]`` (or ``[batch, seq_len, *in_dim]`` for a per-frame shape, e.g. crops;
    ``[batch, *in_dim]`` when ``seq_len`` is None, e.g. one image ``(C, H, W)``)."""
    p = next(model.parameters(), None)
    device = p.device if p is not None else "cpu"
    shape = tuple(in_dim) if isinstance(in_dim, (tuple, list)) else (in_dim,)
    return torch.zeros(batch, *((seq_len,) if seq_len is not None else ()), *shape, device=device)


def rnn_macs(m: nn.RNNBase, batch: int, steps: int) -> int:
    """Matmul MACs of a GRU/LSTM/RNN forward: gates·H·(input + H) per layer, step and direction."""
    gates = 3 if isinstance(m, nn.GRU) else 4 if isinstance(m, nn.LSTM) else 1
    dirs = 2 if m.bidirectional else 1
    H, total = m.hidden_size, 0
    for layer in range(m.num_layers):
        width = m.input_size if layer == 0 else H * dirs
        total += gates * H * (width + (m.proj_size or H))
    return total * dirs * batch * steps


def count_macs(model: nn.Module, in_dim, seq_len: int | None, batch: int = 1, inputs: tuple | None = None) -> int:
    """True MACs of ``model(x)`` for ``x = [batch, seq_len, in_dim]`` (see the module docstring), or of
    ``model(*inputs)`` when ``inputs`` are given (multi-stream models)."""
    from torch.utils.flop_counter import FlopCounterMode

    fc = FlopCounterMode(display=False, custom_mapping=_custom_flop_mapping())
    extra = [0]  # MACs the flop counter cannot see
    before: dict[int, int] = {}

    def core_hook(module, inputs, output):
        extra[0] += int(module.core_macs(inputs, output))

    def rnn_pre(module, inputs):
        before[id(module)] = fc.get_total_flops()

    def rnn_post(module, inputs, output):
        # CPU LSTMs run as one oneDNN op the counter ignores: replace whatever it saw by the exact count
        seen = fc.get_total_flops() - before.pop(id(module))
        x = inputs[0]
        b, t = (x.shape[0], x.shape[1]) if module.batch_first else (x.shape[1], x.shape[0])
        extra[0] += rnn_macs(module, b, t) - seen // 2

    was_training = model.training
    model.eval()
    handles = []
    for m in model.modules():
        if callable(getattr(m, "core_macs", None)):
            handles.append(m.register_forward_hook(core_hook))
        if isinstance(m, nn.RNNBase):
            handles += [m.register_forward_pre_hook(rnn_pre), m.register_forward_hook(rnn_post)]
    try:
        xs = tuple(inputs) if inputs is not None else (_example(model, in_dim, seq_len, batch),)
        # grad enabled: keeps PyTorch off its fused inference fast paths, which the counter cannot see
        with torch.enable_grad(), fc:
            model(*xs)
        flops = fc.get_total_flops()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return flops // 2 + extra[0]


# --------------------------------------------------------------------------------------------------
# the paper's convention (ptflops 0.7 rules, re-implemented)


def _numel(t) -> int:
    return int(t.numel()) if isinstance(t, torch.Tensor) else 0


def _first(x):
    return x[0] if isinstance(x, (tuple, list)) else x


def _conv_rule(m: nn.Conv1d, inputs, output) -> int:
    out = _first(output)
    per_pos = m.kernel_size[0] * m.in_channels * m.out_channels // m.groups
    active = out.shape[0] * out.shape[-1]
    return per_pos * active + (m.out_channels * active if m.bias is not None else 0)


def _linear_rule(m: nn.Linear, inputs, output) -> int:
    out = _first(output)
    return _numel(inputs[0]) * out.shape[-1] + (out.shape[-1] if m.bias is not None else 0)


def _act_rule(m, inputs, output) -> int:
    return _numel(_first(output))


def _layernorm_rule(m: nn.LayerNorm, inputs, output) -> int:
    n = _numel(inputs[0])
    return 2 * n if m.elementwise_affine else n


def _rnn_rule(m: nn.RNNBase, inputs, output) -> int:
    x = inputs[0]
    batch, steps = x.shape[0], x.shape[1]  # ptflops reads dims 0 and 1 whatever batch_first says
    H = m.hidden_size
    total = 0
    for i in range(m.num_layers):
        w_ih, w_hh = getattr(m, f"weight_ih_l{i}"), getattr(m, f"weight_hh_l{i}")
        f = w_ih.shape[0] * w_ih.shape[1] + w_hh.shape[0] * w_hh.shape[1]
        if isinstance(m, nn.GRU):
            f += H + 3 * H + 3 * H
        elif isinstance(m, nn.LSTM):
            f += 4 * H + 3 * H + 3 * H
        else:
            f += H
        if m.bias:
            f += getattr(m, f"bias_ih_l{i}").shape[0] + getattr(m, f"bias_hh_l{i}").shape[0]
        total += f
    total *= batch * steps
    return total * (2 if m.bidirectional else 1)


def _mha_rule(m: nn.MultiheadAttention, inputs, output) -> int:
    q, k, v = inputs[0], inputs[1], inputs[2]
    if m.batch_first:
        batch, lq, lk, lv = q.shape[0], q.shape[1], k.shape[1], v.shape[1]
    else:
        batch, lq, lk, lv = q.shape[1], q.shape[0], k.shape[0], v.shape[0]
    E, h = m.embed_dim, m.num_heads
    flops = lq * E + lq * E * E + lk * E * E + lv * E * E
    if m.in_proj_bias is not None:
        flops += (lq + lk + lv) * E
    flops += h * (lq * lk * (E // h) + lq * lk + lq * lk * (E // h))
    flops += lq * E * (E + 1)
    return flops * batch


_RULES = (
    (nn.Conv1d, _conv_rule),
    (nn.Linear, _linear_rule),
    ((nn.ReLU, nn.ReLU6, nn.ELU, nn.LeakyReLU, nn.PReLU), _act_rule),
    (nn.LayerNorm, _layernorm_rule),
    ((nn.GRU, nn.LSTM, nn.RNN), _rnn_rule),
    (nn.MultiheadAttention, _mha_rule),
)


def _paper_rule(m: nn.Module):
    own = getattr(m, "paper_macs", None)
    if callable(own):
        return lambda mod, i, o: own(i, o)
    for types, rule in _RULES:
        if isinstance(m, types):
            return rule
    return None


def count_macs_paper(model: nn.Module, in_dim: int, seq_len: int, batch: int = 1) -> int:
    """MACs as the NAC-TCN paper's ptflops run reports them for this model (batch 1 by default)."""
    total = [0]
    with ExitStack() as stack:

        def attach(module: nn.Module) -> None:
            rule = _paper_rule(module)
            if rule is None:
                for child in module.children():
                    attach(child)
                return

            def hook(mod, inputs, output, rule=rule):
                total[0] += int(rule(mod, inputs, output))

            stack.callback(module.register_forward_hook(hook).remove)

        attach(model)
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                model(_example(model, in_dim, seq_len, batch))
        finally:
            model.train(was_training)
    return total[0]
