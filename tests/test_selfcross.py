"""self_attn / cross_attn (Rajan et al., ICASSP 2022): the released code's parameter counts, std-first
statistical pooling, the cross model's query/key pairing, text dropout, 1/2/3 streams, the no-SP option,
training, and the selfcross protocol file. Expected counts come from running the released code
(docs/selfcross.md), not from this module."""

import pytest
import torch

from emotk.errors import ModelError
from emotk.models import PRESETS, build
from emotk.models.counting import count_params
from emotk.models.selfcross import stat_pool

ALL = ("text", "audio", "video")
DIMS = {"text": 5, "audio": 3, "video": 6}
LENS = {"text": 7, "audio": 9, "video": 4}
SMALL = dict(in_dims=DIMS, in_lens=LENS, hidden=4, heads=2, time_out={"audio": 5, "video": 3})
H2 = 8  # 2 · hidden


def tiny(name, streams=ALL, out_dim=3, seed=0, **extra):
    torch.manual_seed(seed)
    return build(name, streams=streams, out_dim=out_dim, head="logits", **{**SMALL, **extra})


def inputs(streams=ALL, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, LENS[s], DIMS[s], generator=g) for s in streams]


# ---------------------------------------------------------------- the paper's configuration


def paper(name, **extra):
    with torch.device("meta"):  # shapes only: counting needs no forward pass
        return build(name, "base", **extra)


def test_parameter_counts_equal_the_released_code():
    assert count_params(paper("self_attn")) == 1_645_892
    assert count_params(paper("cross_attn")) == 1_820_132
    assert PRESETS[("self_attn", "base", None)].params_paper == 1_645_892
    assert PRESETS[("cross_attn", "base", None)].params_paper == 1_820_132
    # the slides' Cross+Self: the cross model plus the self model's three attentions
    assert count_params(paper("cross_attn", with_self=True)) == 1_820_132 + 3 * 58_080


def test_component_counts_equal_the_released_code():
    net = paper("cross_attn")
    enc = net.encoders
    assert [count_params(enc[s].rnn) for s in ("text", "video", "audio")] == [130_320, 759_600, 65_520]
    assert enc["text"].conv is None
    assert count_params(enc["video"].conv) == 825 and count_params(enc["audio"].conv) == 500_500
    assert [count_params(m) for m in net.cross_attn.values()] == [58_080] * 6
    assert count_params(net.concat_linear) == 14_460 and count_params(net.classifier) == 427
    selfnet = paper("self_attn")
    assert [count_params(m) for m in selfnet.self_attn.values()] == [58_080] * 3


def test_released_pair_order_and_names():
    assert list(paper("cross_attn").cross_attn) == ["a2t", "v2t", "t2v", "a2v", "t2a", "v2a"]
    assert list(tiny("cross_attn", streams=("text", "audio")).cross_attn) == ["a2t", "t2a"]
    assert list(tiny("cross_attn", streams=("audio", "video")).cross_attn) == ["a2v", "v2a"]


# ---------------------------------------------------------------- pooling


def test_stat_pool_is_unbiased_std_then_mean():
    items = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]]])  # 3 items of width 2
    # by hand: mean (3, 6); squared deviations (4+0+4, 16+0+16) / (3-1) → std (2, 4)
    assert torch.allclose(stat_pool(items), torch.tensor([[2.0, 4.0, 3.0, 6.0]]))


def _linear_input(net, xs):
    seen = {}

    def keep(module, args, output):  # returns None: the output is left as it is
        seen["x"] = args[0].detach()

    handle = net.concat_linear.register_forward_hook(keep)
    with torch.no_grad():
        net(*xs)
    handle.remove()
    return seen["x"]


@pytest.mark.parametrize("name", ["self_attn", "cross_attn"])
def test_model_pools_std_first(name):
    net = tiny(name).eval()
    xs = inputs()
    with torch.no_grad():
        items = net.items(*xs)
    n = items.shape[1]
    assert n == (3 if name == "self_attn" else 6)
    mean = items.sum(1) / n
    std = ((items - mean[:, None]) ** 2).sum(1).div(n - 1).sqrt()
    assert torch.allclose(_linear_input(net, xs), torch.cat([std, mean], 1), atol=1e-6)
    assert net.concat_linear.in_features == 2 * H2


@pytest.mark.parametrize("name", ["self_attn", "cross_attn"])
def test_no_statistical_pooling_options(name):
    xs = inputs()
    net = tiny(name, pooling="mean").eval()
    assert net.concat_linear.in_features == H2
    with torch.no_grad():
        items = net.items(*xs)
    assert torch.allclose(_linear_input(net, xs), items.mean(1), atol=1e-6)
    cat = tiny(name, pooling="concat").eval()
    assert cat.concat_linear.in_features == items.shape[1] * H2
    with torch.no_grad():
        assert torch.allclose(_linear_input(cat, xs), cat.items(*xs).flatten(1), atol=1e-6)
    with pytest.raises(ModelError, match="pooling"):
        tiny(name, pooling="max")


# ---------------------------------------------------------------- attention wiring


def _cross_outputs(net, xs):
    outs = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, k=k: outs.__setitem__(k, o[0].detach()))
             for k, m in net.cross_attn.items()]
    with torch.no_grad():
        net(*xs)
    for h in hooks:
        h.remove()
    return outs


def test_cross_attention_reads_the_pairs_it_names():
    net = tiny("cross_attn").eval()
    xs = inputs()
    base = _cross_outputs(net, xs)
    # query = target: the output is as long as the target's encoded sequence (text 7, audio 5, video 3)
    steps = {"t": 7, "a": 5, "v": 3}
    for k, y in base.items():
        assert y.shape == (2, steps[k[-1]], H2), k
    changed = list(xs)
    changed[1] = xs[1] + torch.randn_like(xs[1])  # a different audio input
    after = _cross_outputs(net, changed)
    for k in base:
        reads_audio = "a" in k  # a2t, a2v (keys/values) and t2a, v2a (queries)
        assert torch.allclose(base[k], after[k]) != reads_audio, k
    assert {k for k in base if not torch.allclose(base[k], after[k])} == {"a2t", "a2v", "t2a", "v2a"}


def test_self_attention_keeps_modalities_apart_until_pooling():
    net = tiny("self_attn").eval()
    xs = inputs()
    with torch.no_grad():
        a = net.items(*xs)
        changed = list(xs)
        changed[2] = torch.zeros_like(xs[2])  # video zeroed
        b = net.items(*changed)
    assert torch.equal(a[:, :2], b[:, :2]) and not torch.allclose(a[:, 2], b[:, 2])


def test_text_dropout_only_in_training():
    xs = inputs()
    net = tiny("self_attn", attn_dropout=0.0)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(*xs), net(*xs))
        net.train()
        torch.manual_seed(3)
        one = net(*xs)
        torch.manual_seed(4)
        two = net(*xs)
    assert not torch.allclose(one, two)  # text dropout 0.25 is the only randomness left
    quiet = tiny("self_attn", attn_dropout=0.0, text_dropout=0.0).train()
    with torch.no_grad():
        torch.manual_seed(3)
        one = quiet(*xs)
        torch.manual_seed(4)
        assert torch.equal(one, quiet(*xs))


# ---------------------------------------------------------------- streams, shapes, errors


@pytest.mark.parametrize("streams", [("text",), ("audio",), ("video",), ("text", "audio"), ("text", "video"),
                                     ("audio", "video"), ALL])
def test_shapes_for_one_two_three_streams(streams):
    xs = inputs(streams)
    s = tiny("self_attn", streams=streams).eval()
    with torch.no_grad():
        assert s(*xs).shape == (2, 3)
    if len(streams) == 1:  # std over one item is undefined: mean-only pooling into a 2·hidden linear
        assert s.pooling == "mean" and s.concat_linear.in_features == H2
    else:
        c = tiny("cross_attn", streams=streams).eval()
        assert len(c.cross_attn) == len(streams) * (len(streams) - 1)
        with torch.no_grad():
            assert c(*xs).shape == (2, 3)
        both = tiny("cross_attn", streams=streams, with_self=True).eval()
        with torch.no_grad():
            assert both.items(*xs).shape[1] == len(streams) ** 2  # n self + n(n-1) cross vectors


def test_user_errors_are_model_errors():
    with pytest.raises(ModelError, match="at least 2 streams"):
        tiny("cross_attn", streams=("text",))
    with pytest.raises(ModelError, match="per-frame"):
        build("self_attn", streams=ALL, head="frame_tanh", out_dim=2, **SMALL)
    with pytest.raises(ModelError, match="streams must be"):
        tiny("self_attn", streams=("text", "mfcc"))
    net = tiny("self_attn")
    xs = inputs()
    xs[1] = xs[1][:, :-1]  # audio one step short of the configured length
    with pytest.raises(ModelError, match="'audio' has 8 steps.*exactly 9"):
        net(*xs)


def test_streams_are_taken_in_canonical_order():
    net = tiny("self_attn", streams=("video", "text"))
    assert net.streams == ("text", "video")
    assert [tuple(x.shape) for x in net.example_inputs(2)] == [(2, 7, 5), (2, 4, 6)]


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("name", ["self_attn", "cross_attn"])
def test_training_steps_reduce_the_loss(name):
    net = tiny(name, attn_dropout=0.0, text_dropout=0.0).train()
    xs = inputs(batch=6)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(net(*xs), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# ---------------------------------------------------------------- protocol


def test_selfcross_protocol_is_the_released_recipe():
    from emotk.train import protocol as P

    data, path = P.load("selfcross")
    p = P.validate(data, str(path))
    assert p["lengths"] == {"text": 128, "audio": 1000, "video": 32}
    assert p["select_on"] == "val" and p["metric"] == "ua"
    (stage,) = p["stages"]
    assert stage["batch_size"] == 32 and stage["epochs"] == 300
    assert stage["optimizer"]["name"] == "adam" and stage["optimizer"]["lr"] == 1e-3
    assert stage["optimizer"]["weight_decay"] == 0.0
    sch = stage["schedule"]
    assert (sch["name"], sch["factor"], sch["patience"], sch["monitor"]) == ("plateau", 0.1, 10, "loss")
    assert stage["early_stopping"]["patience"] == 10 and stage["early_stopping"]["monitor"] == "metric"
