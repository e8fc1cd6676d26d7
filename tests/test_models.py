"""The temporal model zoo: causality of every causal model, NAC-TCN's two NA modes, the paper's
parameter/MAC counts reproduced from the presets, true MAC counting, the catalog and the registry."""

import pytest
import torch
import torch.nn.functional as F

from emotk.errors import ModelError
from emotk.models import MODELS, PRESETS, build, find_preset
from emotk.models.counting import count_macs, count_macs_paper, count_params
from emotk.models.na import na1d_natten, natten_available
from emotk.models.tcn import NACBlock


D, T = 6, 80
SMALL = {  # tiny configurations of every model (name, options)
    "nactcn": dict(channels=[8, 8], kernel_size=3, dilation_base=2, heads=2),
    "nactcn-lagged": dict(channels=[8, 8], kernel_size=3, dilation_base=2, heads=2, na_mode="lagged"),
    "nactcn-always": dict(channels=[8, 8], kernel_size=3, heads=2, residual="always"),
    "nactcn-nores": dict(channels=[8], kernel_size=5, heads=1, residual="none"),
    "tcn": dict(channels=[8, 8], kernel_size=3),
    "tcn-bug": dict(channels=[8, 8, 8], kernel_size=3, dilation_bug=True),
    "tcan": dict(channels=[8, 8], kernel_size=3, key_dim=4),
    "gru": dict(hidden=8, layers=2),
    "lstm": dict(hidden=8, layers=2),
    "gru_attn": dict(hidden=8, layers=1, window=4),
    "lstm_attn": dict(hidden=8, layers=1, window=200),
    "lstm_attn-band": dict(hidden=8, layers=1, window=70),  # > 64 frames: banded dense path
    "transformer": dict(d_model=16, heads=2, layers=2, ff=32),
    "attn-causal": dict(heads=2, causal=True),
}


def make(key: str, head: str = "frame_linear", out_dim: int = 3, **extra):
    torch.manual_seed(0)
    name = key.split("-")[0]
    return build(name, in_dim=D, out_dim=out_dim, head=head, **{**SMALL[key], **extra}).eval()


@pytest.mark.parametrize("key", list(SMALL))
def test_causal_models_never_see_the_future(key):
    net = make(key)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, T, D, generator=g)
    with torch.no_grad():
        base = net(x)
        assert base.shape == (2, T, 3)
        for t in (0, 7, 19, 33, 71):
            x2 = x.clone()
            x2[:, t + 1:] = torch.randn(2, T - t - 1, D, generator=g) * 5
            out = net(x2)
            assert torch.allclose(out[:, :t + 1], base[:, :t + 1], atol=1e-6), f"{key} leaks the future into frame {t}"
            assert not torch.allclose(out[:, t + 1:], base[:, t + 1:], atol=1e-4)


def test_every_registered_causal_model_is_covered():
    causal = {name for name, info in MODELS.items() if info.causal and info.family == "temporal"}
    assert causal <= {k.split("-")[0] for k in SMALL}
    assert {"nactcn", "tcn", "tcan", "gru", "lstm", "gru_attn", "lstm_attn", "transformer"} <= causal
    assert not MODELS["attn"].causal


def test_attn_default_is_non_causal_and_the_batch_axis_bug_mixes_clips():
    x = torch.randn(3, 12, D)
    net = make("attn-causal", causal=False)
    x2 = x.clone()
    x2[:, 6:] += 3
    with torch.no_grad():
        assert not torch.allclose(net(x)[:, :6], net(x2)[:, :6])
        bug = make("attn-causal", causal=False, batch_axis_bug=True)
        x3 = x.clone()
        x3[1] += 3  # change clip 1 only
        assert not torch.allclose(bug(x)[0], bug(x3)[0])  # clip 0 changed: attention ran across the batch
        x4 = x.clone()
        x4[:, 6:] += 3
        assert torch.allclose(bug(x)[:, :6], bug(x4)[:, :6], atol=1e-6)  # …and never across time


def test_heads_shapes_through_the_trainers_build_call():
    x = torch.randn(2, 16, D)
    with torch.no_grad():
        assert make("nactcn", head="last", out_dim=8)(x).shape == (2, 8)
        assert make("tcn", head="frame_tanh", out_dim=2)(x).abs().max() <= 1
        assert make("gru_attn", head="none")(x).shape == (2, 16, 8)


def test_tcn_dilations_and_the_released_dilation_bug():
    assert [b.dilation for b in make("tcn").network] == [1, 2]
    assert [b.conv1.dilation[0] for b in make("tcn-bug").network] == [1, 1, 1]
    assert [b.na.dilation for b in make("nactcn", dilation_base=4, channels=[8] * 3).network] == [1, 4, 16]


def test_residual_options():
    blocks = make("nactcn-always").network
    assert all(b.downsample is not None for b in blocks)
    auto = make("nactcn").network
    assert auto[0].downsample is not None and auto[1].downsample is None
    assert make("nactcn-nores").network[0].use_residual is False


@pytest.mark.skipif(not natten_available(), reason="NATTEN not installed (optional accelerator: pip install --no-build-isolation natten==0.21.7, see docs/models.md)")
def test_lagged_mode_reproduces_the_released_block():
    """Released block: conv → ReLU → left-pad (k−1)d → NATTEN NA (centred) → chomp → ReLU → + 1×1 res → ReLU."""
    torch.manual_seed(0)
    k, d, C = 3, 4, 16
    block = NACBlock(D, C, k, d, heads=2, na_mode="lagged", residual="always", pos_bias=False).eval()
    x = torch.randn(2, D, 30)
    p = (k - 1) * d
    with torch.no_grad():
        y = F.relu(F.conv1d(F.pad(x, (p, p)), block.conv1.weight, block.conv1.bias, dilation=d)[..., :-p])
        z = F.pad(y, (p, 0)).transpose(1, 2)
        na = block.na
        q, kk, v = na.qkv(z).view(2, 30 + p, 3, 2, C // 2).unbind(2)
        a = na1d_natten(q, kk, v, k, d, causal=False).reshape(2, 30 + p, C)
        a = F.relu(na.proj(a)[:, :-p].transpose(1, 2))
        released = F.relu(a + block.downsample(x))
        assert (block(x) - released).abs().max() <= 1e-5


def test_lagged_attention_branch_lags_by_half_a_window():
    torch.manual_seed(0)
    k, d = 5, 2
    block = NACBlock(8, 8, k, d, na_mode="lagged").eval()
    causal = NACBlock(8, 8, k, d, na_mode="causal").eval()
    causal.load_state_dict(block.state_dict())
    y = torch.randn(1, 8, 50)
    lag = (k - 1) * d // 2
    t = 40
    y2 = y.clone()
    y2[..., t - lag + 1:] += 5
    with torch.no_grad():
        assert torch.allclose(block.attend(y)[..., t], block.attend(y2)[..., t], atol=1e-6)
        assert not torch.allclose(causal.attend(y)[..., t], causal.attend(y2)[..., t])


# ---------------------------------------------------------------------------- the paper's counts
# Expected values come from two sources independent of emotk's code: the numbers printed in the
# NAC-TCN paper (Mehta & Yang 2023, Tables 1–3), and parameter / MAC formulas written out here layer
# by layer from the architecture (docs/models.md): a wrong layer, bias, residual or count rule fails.

PRINTED = {  # (model, size, dataset): (params, MMac) as printed in the paper
    ("nactcn", "sm", "affwild2"): (1.24e6, 381), ("nactcn", "lg", "affwild2"): (10.12e6, 3230),
    ("nactcn", "sm", "emoreact"): (1.5e6, 453), ("nactcn", "lg", "emoreact"): (7.8e6, 2500),
    ("nactcn", "sm", "afewva"): (204e3, 17), ("nactcn", "lg", "afewva"): (988e3, 84),
    ("gru", "sm", "affwild2"): (4.66e6, 597), ("lstm", "sm", "affwild2"): (6.21e6, 797),
    ("gru", "sm", "emoreact"): (1.62e6, 208), ("lstm", "sm", "emoreact"): (2.16e6, 277),
    ("tcn", "sm", "affwild2"): (13.95e6, 3079),
}
NAC = {  # the presets' architectures (docs/models.md): in_dim, channels, kernel, dilation base, T counted
    ("nactcn", "sm", "affwild2"): (440, [128] * 5, 7, 2, 128), ("nactcn", "lg", "affwild2"): (440, [440] * 4, 9, 2, 128),
    ("nactcn", "sm", "emoreact"): (784, [128] * 3, 9, 4, 128), ("nactcn", "lg", "emoreact"): (784, [440] * 3, 7, 4, 128),
    ("nactcn", "sm", "afewva"): (440, [32] * 3, 11, 2, 32), ("nactcn", "lg", "afewva"): (440, [128] * 2, 11, 2, 32),
}


def linear_params(n_in, n_out):
    return n_in * n_out + n_out


def wn_conv_params(c_in, c_out, k):  # weight_norm: v [c_out, c_in, k], g [c_out, 1, 1], bias [c_out]
    return c_out * c_in * k + 2 * c_out


def na_params(C, heads, k):  # qkv Linear(C, 3C), proj Linear(C, C), relative positional bias [heads, 2k−1]
    return linear_params(C, 3 * C) + linear_params(C, C) + heads * (2 * k - 1)


def nactcn_params(in_dim, chans, k, heads=1):
    """One conv + one NA per block; a 1×1 residual conv only where the channels change."""
    total, c_in = 0, in_dim
    for C in chans:
        total += wn_conv_params(c_in, C, k) + na_params(C, heads, k) + (linear_params(c_in, C) if c_in != C else 0)
        c_in = C
    return total


def tcn_params(in_dim, chans, k):
    """Bai's block: two weight-normed convs, 1×1 residual conv where the channels change."""
    total, c_in = 0, in_dim
    for C in chans:
        total += wn_conv_params(c_in, C, k) + wn_conv_params(C, C, k) + (linear_params(c_in, C) if c_in != C else 0)
        c_in = C
    return total


def rnn_params(gates, in_dim, H, layers):  # per layer: W_ih, W_hh and two bias vectors per gate
    return sum(gates * (H * (in_dim if i == 0 else H) + H * H + 2 * H) for i in range(layers))


def nactcn_macs_paper(in_dim, chans, k, base, T):
    """ptflops on the released NAC-TCN (docs/models.md "How counts map to the paper"): Conv1d = outputs ×
    (C_in·k + 1) on the T+p frames before the chomp, Linear = inputs × out + out, ReLU = outputs; conv1,
    relu1, the NA linears and relu2 counted twice; the 1×1 residual and the final ReLU once; no NA core."""
    total, c_in = 0, in_dim
    for i, C in enumerate(chans):
        L = T + (k - 1) * base ** i
        conv = L * C * (c_in * k + 1)
        na = (L * C * 3 * C + 3 * C) + (L * C * C + C)
        relu = T * C
        total += 2 * (conv + na + 2 * relu) + relu + (T * C * (c_in + 1) if c_in != C else 0)
        c_in = C
    return total


def rnn_macs_paper(gates, in_dim, H, layers, T, out_dim):
    """ptflops' RNN rule per layer and step: the weight products, its element-wise gate terms (GRU 7H,
    LSTM 10H) and both biases; then the per-frame Linear(H, out_dim) head."""
    extra = {3: 7 * H, 4: 10 * H}[gates]
    per_step = sum(gates * H * ((in_dim if i == 0 else H) + H) + extra + 2 * gates * H for i in range(layers))
    return per_step * T + T * H * out_dim + out_dim


def paper_model(m, s, d):
    p = PRESETS[(m, s, d)]
    return p, build(m, s, d, **p.paper_count)


def test_the_paper_parameter_counts_are_reproduced_exactly():
    expected = {key: nactcn_params(in_dim, chans, k) for key, (in_dim, chans, k, _, _) in NAC.items()}
    expected[("gru", "sm", "affwild2")] = rnn_params(3, 440, 440, 4) + linear_params(440, 2)
    expected[("lstm", "sm", "affwild2")] = rnn_params(4, 440, 440, 4) + linear_params(440, 2)
    expected[("gru", "sm", "emoreact")] = rnn_params(3, 784, 440, 1) + linear_params(440, 8)
    expected[("lstm", "sm", "emoreact")] = rnn_params(4, 784, 440, 1) + linear_params(440, 8)
    expected[("tcn", "sm", "affwild2")] = tcn_params(440, [440] * 4, 9) + linear_params(440, 2)
    for key, n in expected.items():
        p, net = paper_model(*key)
        assert count_params(net) == n, key
        printed = PRINTED[key][0]
        if key == ("nactcn", "lg", "affwild2"):  # documented as not reproduced: nearest clean configuration
            assert p.params_paper is None and 0.004 < abs(n / printed - 1) < 0.005
        else:
            assert p.params_paper == n, key
            assert abs(n / printed - 1) < 0.005, (key, n, printed)  # rounds to the printed figure
    for key in PAPER_CLAIMS:  # no preset claims an exact count that is not checked above
        assert key in expected, key


# image models' claims are checked in tests/test_image_models.py (Keras counts, the dissertation's table),
# the multimodal ones in tests/test_selfcross.py (the released code's measured counts)
PAPER_CLAIMS = [(m, s, d) for (m, s, d), p in sorted(PRESETS.items(), key=str)
                if p.params_paper is not None and MODELS[m].family not in ("image", "multimodal")]


def test_the_paper_mac_counts_are_reproduced_within_2_percent():
    expected = {key: nactcn_macs_paper(in_dim, chans, k, base, T) for key, (in_dim, chans, k, base, T) in NAC.items()}
    expected[("gru", "sm", "affwild2")] = rnn_macs_paper(3, 440, 440, 4, 128, 2)
    expected[("lstm", "sm", "affwild2")] = rnn_macs_paper(4, 440, 440, 4, 128, 2)
    for key, macs in expected.items():
        p, net = paper_model(*key)
        assert count_macs_paper(net, p.config["in_dim"], p.seq_len) == macs, key
    assert expected[("nactcn", "sm", "emoreact")] == 453_948_416  # hand-derived (docs/models.md: 453.9)
    reproduced = {("nactcn", "sm", "emoreact"), ("nactcn", "lg", "emoreact"), ("nactcn", "sm", "affwild2"),
                  ("nactcn", "lg", "afewva"), ("gru", "sm", "affwild2"), ("lstm", "sm", "affwild2")}
    claimed = {k for k, p in PRESETS.items() if p.macs_reproduced}
    assert reproduced <= claimed
    for key in reproduced:
        assert abs(expected[key] / 1e6 / PRINTED[key][1] - 1) <= 0.02, (key, expected[key], PRINTED[key][1])
    sm_afewva = ("nactcn", "sm", "afewva")  # documented miss: 17.6 vs the printed 17 (3.5 %), not claimed
    assert sm_afewva not in claimed and abs(expected[sm_afewva] / 1e6 / PRINTED[sm_afewva][1] - 1) > 0.02
    assert ("nactcn", "lg", "affwild2") not in claimed  # its configuration is unresolved (params differ)
    for key in claimed - reproduced:  # other claims (TCN with the dilation bug, EmoReact RNNs): the printed figure
        p, net = paper_model(*key)
        mmac = count_macs_paper(net, p.config["in_dim"], p.seq_len) / 1e6
        printed = PRINTED[key][1] if key in PRINTED else p.macs_published
        assert abs(mmac / printed - 1) <= 0.02, (key, mmac, printed)


def test_true_macs_count_the_attention_core():
    # nactcn 6→[8], k 3, 2 heads, T 10: conv 1440 + qkv 1920 + proj 640 + NA core 480 + 1×1 480 + head 160
    torch.manual_seed(0)
    net = build("nactcn", in_dim=6, out_dim=2, head="frame_linear", channels=[8], kernel_size=3, heads=2)
    assert count_macs(net, 6, 10) == 5120
    lagged = build("nactcn", in_dim=6, out_dim=2, head="frame_linear", channels=[8], kernel_size=3, heads=2,
                   na_mode="lagged")
    assert count_macs(lagged, 6, 10) == 1440 + 12 * 8 * 32 + 2 * 12 * 3 * 8 + 480 + 160  # NA runs on T+p=12
    lstm = build("lstm", in_dim=6, out_dim=2, head="frame_linear", hidden=8, layers=1)
    assert count_macs(lstm, 6, 10) == 10 * 4 * 8 * (6 + 8) + 10 * 8 * 2
    tr = build("transformer", in_dim=8, out_dim=2, head="frame_linear", heads=2, layers=1, ff=16, positions=False)
    Tt = 10
    assert count_macs(tr, 8, Tt) == Tt * 8 * 24 + Tt * 8 * 8 + 2 * Tt * Tt * 8 + 2 * Tt * 8 * 16 + Tt * 8 * 2


def test_model_table():
    pytest.importorskip("polars")
    from emotk.models.catalog import COLUMNS, model_table

    table = model_table("afewva")
    assert table.columns[:8] == ["model", "size", "dataset", "seq_len", "params", "params_paper", "macs", "macs_paper"]
    assert table.columns == COLUMNS
    assert set(table["model"]) >= {"nactcn", "tcn", "tcan", "gru", "lstm", "attn", "gru_attn", "lstm_attn",
                                   "transformer"}
    sm = table.filter((table["model"] == "nactcn") & (table["size"] == "sm")).row(0, named=True)
    assert sm["dataset"] == "afewva" and sm["seq_len"] == 32
    backbone = nactcn_params(440, [32] * 3, 11)
    assert sm["params_paper"] == backbone and sm["params_published"] == 204_000
    assert sm["params"] == backbone + linear_params(32, 3)  # with the 3-class mood head
    assert sm["macs_paper"] == round(nactcn_macs_paper(440, [32] * 3, 11, 2, 32) / 1e6, 1)
    assert sm["macs_published"] == 17.0
    assert 5 < sm["macs"] < sm["macs_paper"] / 2  # true MACs: no double counting
    lg = table.filter((table["model"] == "nactcn") & (table["size"] == "lg")).row(0, named=True)
    assert lg["reproduced"] == "params+macs"
    gru = table.filter(table["model"] == "gru").row(0, named=True)
    assert gru["dataset"] == "afewva" and gru["params_paper"] is None  # fallback preset, no paper figure


# ---------------------------------------------------------------------------- registry and training


def test_presets_of_every_dataset_and_size():
    for ds in ("affwild2", "emoreact", "afewva"):
        for size in ("sm", "lg"):
            p = find_preset("nactcn", size, ds)
            assert p.dataset == ds and p.seq_len == (32 if ds == "afewva" else 128)
            assert "head" not in p.config and "out_dim" not in p.config
    assert find_preset("nactcn", "sm", "iemocap").dataset is None  # generic fallback
    net = build("nactcn", "sm", "emoreact", in_dim=512, out_dim=8, head="last")  # trainer's call, other encoder
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 20, 512)).shape == (2, 8)


def test_bad_options_are_clear_errors():
    with pytest.raises(ModelError, match="no option"):
        build("nactcn", "sm", "affwild2", na_modus="lagged")
    with pytest.raises(ModelError, match="na_mode"):
        build("nactcn", na_mode="future")
    with pytest.raises(ModelError, match="no size"):
        build("nactcn", "xl", "affwild2")
    with pytest.raises(ModelError, match="unknown head"):
        build("gru", head="softmax")
    with pytest.raises(ModelError, match="NATTEN|positional bias"):
        net = build("nactcn", in_dim=D, channels=[8], na_backend="natten")
        net(torch.randn(1, 12, D))


@pytest.mark.parametrize("mode", ["causal", "lagged"])
def test_nactcn_trains(mode):
    torch.manual_seed(0)
    net = build("nactcn", in_dim=D, out_dim=2, head="frame_tanh", channels=[16, 16], kernel_size=3, heads=2,
                dropout=0.0, na_mode=mode)
    x = torch.randn(8, 24, D)
    y = torch.tanh(x[..., :2].cumsum(1) / 4)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        opt.zero_grad()
        loss = F.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("key", ["nactcn", "nactcn-lagged", "tcn", "tcan", "gru_attn", "lstm_attn-band", "transformer"])
def test_models_on_cuda_match_cpu_and_train_with_amp(key):
    net = make(key)
    x = torch.randn(3, T, D)
    with torch.no_grad():
        cpu = net(x)
        net.cuda()
        gpu = net(x.cuda()).cpu()
    assert (cpu - gpu).abs().max() <= 1e-3
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        loss = net(x.cuda()).float().square().mean()
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in net.parameters())
