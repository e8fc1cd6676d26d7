"""Image CNNs of Miskow (2022): parameter counts against the published table, shapes, activations,
attention modules on hand-computed cases, the released code's BatchNorm over the height axis, MACs.

Expected values come from outside the code under test: the dissertation/README table (printed in
millions, 2 decimals), the released Keras code run under TensorFlow (exact counts, docs/reference
"miskow.md" §7), the issue's thousands figures, the ECA paper's kernel formula, and hand computations.
Large models are built on the meta device (shapes only), so counting them allocates nothing.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from emotk.errors import ModelError
from emotk.models import PRESETS, build, find_preset, sizes_of
from emotk.models.attention2d import CBAM, EfficientChannelAttention, SqueezeExcitation, eca_kernel_size, eca_kernel_size_miskow
from emotk.models.cnn import HeightBatchNorm2d, count_params_keras
from emotk.models.counting import count_macs

MODELS = ["vgg16", "vgg19", "resnet50", "resnet101", "resnet152", "resnetv2_50", "resnetv2_101", "resnetv2_152"]
ATTENTIONS = ["none", "se", "eca", "cbam"]

# The dissertation's Table 3.3 / the README (parameters in millions as printed; "64,71M" read as 64.71)
PRINTED_M = {
    "vgg16": (39.92, 39.95, 39.92, 39.95), "vgg19": (42.87, 45.26, 45.23, 45.26),
    "resnet50": (23.49, 26.02, 23.65, 26.02), "resnet101": (42.46, 47.24, 42.81, 47.24),
    "resnet152": (58.08, 64.71, 58.60, 64.71), "resnetv2_50": (23.48, 26.01, 23.64, 26.01),
    "resnetv2_101": (42.44, 47.22, 42.79, 47.22), "resnetv2_152": (58.05, 64.68, 58.57, 64.69),
}
# The released Keras code built under TensorFlow (count_params(), BatchNorm moving statistics included)
RELEASED_KERAS = {
    "vgg16": (39_916_231, 39_949_543, 39_920_839, 39_949_642),
    "vgg19": (45_225_927, 45_259_239, 45_230_535, 45_259_338),
    "resnet50": (23_490_739, 26_021_731, 23_651_251, 26_023_315),
    "resnet101": (42_457_367, 47_235_079, 42_809_367, 47_238_346),
    "resnet152": (58_078_731, 64_707_771, 58_595_595, 64_712_721),
    "resnetv2_50": (23_482_967, 26_013_959, 23_643_479, 26_015_543),
    "resnetv2_101": (42_440_891, 47_218_603, 42_792_891, 47_221_870),
    "resnetv2_152": (58_054_575, 64_683_615, 58_571_439, 64_688_565),
}
# BatchNorm moving statistics (Keras "non-trainable") of the released ResNets, per model
RELEASED_NON_TRAINABLE = {"resnet50": 598, "resnet101": 904, "resnet152": 1282,
                          "resnetv2_50": 488, "resnetv2_101": 794, "resnetv2_152": 1172}
# printed figures that are not the released model (the reference's second reading)
PRINTED_SLIPS = {("vgg19", "none"), ("resnetv2_50", "cbam")}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a busy 2-core machine, tiny convolutions spin-wait for a second thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def meta_build(name: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return build(name, **kw)


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# ------------------------------------------------------------------------------------------ counts


@pytest.mark.parametrize("model", MODELS)
def test_miskow_counts_equal_released_code_and_round_to_the_printed_table(model):
    for i, attention in enumerate(ATTENTIONS):
        net = meta_build(model, attention=attention, compat="miskow")
        keras = count_params_keras(net)
        assert keras == RELEASED_KERAS[model][i], (model, attention)
        assert net.paper_params() == keras
        printed = round(keras / 1e6, 2)
        if (model, attention) in PRINTED_SLIPS:
            assert printed != PRINTED_M[model][i]
        else:
            assert printed == PRINTED_M[model][i], (model, attention)
        torch_count = sum(p.numel() for p in net.parameters())  # PyTorch leaves the running statistics out
        assert keras - torch_count == RELEASED_NON_TRAINABLE.get(model, 0)


def test_issue_thousands_figures():
    """The issue's figures: ResNet-50 23,491k, +SE 26,022k, +ECA 23,651k, +CBAM 26,023k, v2-50 23,483k."""
    thousands = {("resnet50", "none"): 23_491, ("resnet50", "se"): 26_022, ("resnet50", "eca"): 23_651,
                 ("resnet50", "cbam"): 26_023, ("resnetv2_50", "none"): 23_483}
    for (model, attention), k in thousands.items():
        assert round(count_params_keras(meta_build(model, attention=attention, compat="miskow")) / 1e3) == k
    assert count_params_keras(meta_build("vgg16", compat="miskow")) == 39_916_231


def test_channel_batchnorm_counts_by_default():
    """BatchNorm over channels (the dissertation's method): the reference's counts for it."""
    assert count_params_keras(meta_build("resnet50")) == 23_595_783
    assert count_params_keras(meta_build("resnet101")) == 42_666_247
    assert count_params_keras(meta_build("resnetv2_50")) == 23_572_871
    # ECA per channel: k weights per module (ECA paper's kernel), not C·k
    assert count_params_keras(meta_build("vgg16", attention="eca")) == 39_916_231 + 5  # C = 512 → k = 5


def test_presets_carry_the_published_table():
    assert sizes_of("resnet50") == ["base", "cbam", "eca", "se"]
    assert find_preset("resnet50", None, "fer2013").config["attention"] == "none"  # default: no attention
    for model in MODELS:
        for i, (attention, size) in enumerate(zip(ATTENTIONS, ["base", "se", "eca", "cbam"])):
            preset = PRESETS[(model, size, None)]
            assert preset.config["attention"] == attention
            assert preset.params_published == pytest.approx(PRINTED_M[model][i] * 1e6)
            exact = None if (model, attention) in PRINTED_SLIPS else RELEASED_KERAS[model][i]
            assert preset.params_paper == exact and preset.paper_count == {"compat": "miskow"}
    acc = PRESETS[("vgg19", "cbam", None)].extra["accuracy_published"]
    assert acc == {"ckplus": 92.31, "jaffe": 77.78, "fer2013": 64.07}


# ------------------------------------------------------------------------------------------ shapes


@pytest.mark.parametrize("i,model", list(enumerate(MODELS)))
def test_output_shapes(i, model):
    """Every model, both modes, each attention in turn: ``[B, C, S, S]`` → ``[B, out_dim]``."""
    for j, compat in enumerate((None, "miskow")):
        attention = ATTENTIONS[(i + 2 * j) % 4]
        net = build(model, attention=attention, compat=compat, in_channels=3, image_size=40, out_dim=5, init="torch")
        with torch.no_grad():
            assert net(torch.rand(2, 3, 40, 40)).shape == (2, 5), (compat, attention)


@pytest.mark.parametrize("model", ["vgg16", "resnet50", "resnetv2_50"])
def test_real_forward_and_backward(model):
    torch.manual_seed(0)
    net = build(model, attention="cbam", image_size=32, out_dim=7)
    x = torch.rand(3, 1, 32, 32)
    y = net(x)
    assert y.shape == (3, 7) and torch.isfinite(y).all()
    F.cross_entropy(y, torch.tensor([0, 3, 6])).backward()
    assert all(p.grad is not None for p in net.parameters())


def test_miskow_model_is_tied_to_its_image_size():
    net = build("resnetv2_50", compat="miskow", image_size=32)
    with pytest.raises(ModelError, match="height"):
        net(torch.rand(2, 1, 48, 48))
    with pytest.raises(ModelError, match="image_size=40"):
        build("vgg16", image_size=32)(torch.rand(1, 1, 40, 40))


def test_bad_options_are_model_errors():
    for kw in ({"attention": "sk"}, {"compat": "keras"}, {"head": "frame_tanh"}, {"activation": "gelu"},
               {"attention": "eca", "eca_kernel": 4}, {"pooling": "sum"}, {"init": "he"}):
        name = "resnet50" if "pooling" in kw else "vgg16"
        with pytest.raises(ModelError):
            meta_build(name, **kw)


# ------------------------------------------------------------------------------------------ activations


def test_elu_by_default_relu_by_option():
    elu, relu = build("vgg16", image_size=32), build("vgg16", image_size=32, activation="relu")
    kinds = lambda net: [type(m) for m in net.modules() if isinstance(m, (nn.ELU, nn.ReLU))]  # noqa: E731
    assert kinds(elu) == [nn.ELU] * 15 and kinds(relu) == [nn.ReLU] * 15  # 13 convs + 2 dense
    relu.load_state_dict(elu.state_dict())  # same weights: only the activation differs
    x = torch.rand(2, 1, 32, 32)
    assert not torch.allclose(elu(x), relu(x))
    block = meta_build("resnet50", activation="relu").blocks[0]
    assert isinstance(block.act, nn.ReLU) and isinstance(meta_build("resnet50").blocks[0].act, nn.ELU)
    # the first activation of VGG computes ELU: e^v − 1 below zero
    v = torch.tensor([-1.0, 2.0])
    assert torch.allclose(elu.features[1](v), torch.tensor([math.exp(-1) - 1, 2.0]))


# ------------------------------------------------------------------------------------------ attention


def test_se_hand_computed():
    se = SqueezeExcitation(2, reduction=2)  # hidden 1
    with torch.no_grad():
        se.fc1.weight.copy_(torch.tensor([[1.0, -1.0]]))
        se.fc1.bias.zero_()
        se.fc2.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        se.fc2.bias.copy_(torch.tensor([0.0, 1.0]))
    x = torch.stack([torch.full((2, 2), 3.0), torch.full((2, 2), 1.0)])[None]  # channel means 3, 1
    # fc1: 3 − 1 = 2 → ReLU 2; fc2: [4, −2 + 1] → gates σ(4), σ(−1)
    out = se(x)
    assert torch.allclose(out[0, 0], torch.full((2, 2), 3 * 0.9820137900379085))
    assert torch.allclose(out[0, 1], torch.full((2, 2), 1 * 0.2689414213699951))
    assert sum(p.numel() for p in SqueezeExcitation(512, 16).parameters()) == 33_312  # the reference's +SE on VGG


def test_eca_kernel_formulas():
    # ECA paper: k = |log2(C)/γ + b/γ|_odd, γ = 2, b = 1 (t = int(...), even t → t + 1)
    assert [eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 5, 7]
    # released code: int(log2(C) + 1/2), made odd
    assert [eca_kernel_size_miskow(c) for c in (256, 512, 1024, 2048)] == [9, 9, 11, 11]


def test_eca_per_channel_hand_computed():
    eca = EfficientChannelAttention(3, 3)
    with torch.no_grad():
        eca.conv.weight.copy_(torch.tensor([[[0.5, 1.0, -1.0]]]))
    x = torch.arange(1.0, 4.0)[None, :, None, None].expand(1, 3, 2, 2).contiguous()  # channel means 1, 2, 3
    # zero-padded cross-correlation along channels: c0: 1 − 2 = −1; c1: 0.5 + 2 − 3 = −0.5; c2: 1 + 3 = 4
    gates = torch.tensor([0.2689414213699951, 0.3775406687981454, 0.9820137900379085])
    assert torch.allclose(eca(x), x * gates[None, :, None, None])
    assert sum(p.numel() for p in eca.parameters()) == 3


def test_eca_scalar_gate_of_the_released_code():
    eca = EfficientChannelAttention(3, 3, scalar_gate=True)
    assert sum(p.numel() for p in eca.parameters()) == 9  # C·k
    with torch.no_grad():
        eca.conv.weight.fill_(100.0)  # off-centre taps only ever meet zero padding
        eca.conv.weight[0, :, 1] = torch.tensor([1.0, -1.0, 0.5])
    x = torch.arange(1.0, 4.0)[None, :, None, None].expand(2, 3, 2, 2).contiguous()
    gate = sigmoid(1 * 1 - 1 * 2 + 0.5 * 3)  # one gate for every channel
    assert torch.allclose(eca(x), x * gate)


@pytest.mark.parametrize("from_input", [False, True])
def test_cbam_hand_computed(from_input):
    cbam = CBAM(2, reduction=2, kernel_size=3, spatial_from_input=from_input)
    with torch.no_grad():
        cbam.fc1.weight.copy_(torch.tensor([[1.0, 0.0]]))  # hidden = channel 0's pooled value
        cbam.fc1.bias.zero_()
        cbam.fc2.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        cbam.fc2.bias.zero_()
        cbam.spatial.weight.zero_()
        cbam.spatial.weight[0, :, 1, 1] = torch.tensor([1.0, 1.0])  # centre taps: mean map + max map
        cbam.spatial.bias.fill_(-1.0)
    x = torch.tensor([[[[2.0, 0.0]], [[4.0, 2.0]]]])  # [1, 2, 1, 2]
    # channel gate: MLP(avg) + MLP(max) for channel 0's avg 1 and max 2 → [1 + 2, −1 − 2]
    g = [sigmoid(3.0), sigmoid(-3.0)]
    refined = [[2 * g[0], 0.0], [4 * g[1], 2 * g[1]]]
    src = [[2.0, 0.0], [4.0, 2.0]] if from_input else refined
    spatial = [sigmoid((src[0][w] + src[1][w]) / 2 + max(src[0][w], src[1][w]) - 1) for w in range(2)]
    expected = torch.tensor([[[[refined[c][w] * spatial[w] for w in range(2)]] for c in range(2)]])
    assert torch.allclose(cbam(x), expected, atol=1e-6)
    assert sum(p.numel() for p in CBAM(512, 16, 7).parameters()) == 33_411  # the reference's +CBAM on VGG


def test_attention_placement():
    vgg = build("vgg16", attention="se", image_size=32)
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():  # VGG: x + att(x) on the last pooled map, then the classifier
        feats = vgg.features(x)
        assert torch.allclose(vgg(x), vgg.classifier(feats + vgg.attention(feats)))
    r50 = meta_build("resnet50", attention="eca")
    v2 = meta_build("resnetv2_50", attention="cbam")
    assert all(isinstance(b.attention, EfficientChannelAttention) for b in r50.blocks) and len(r50.blocks) == 16
    assert all(isinstance(b.attention, CBAM) for b in v2.blocks)
    assert [b.attention.kernel_size for b in meta_build("resnet50", attention="eca", compat="miskow").blocks] == \
        [9] * 7 + [11] * 9  # channels 256, 512 → 9; 1024, 2048 → 11


# ------------------------------------------------------------------------------------------ BatchNorm


def test_height_batchnorm_normalises_each_row_over_batch_channels_width():
    torch.manual_seed(0)
    bn = HeightBatchNorm2d(4)
    x = torch.randn(3, 5, 4, 6) * torch.arange(1.0, 5.0)[None, None, :, None] + 2.0
    y = bn.train()(x)
    mean = x.mean(dim=(0, 1, 3), keepdim=True)
    var = x.var(dim=(0, 1, 3), unbiased=False, keepdim=True)
    assert torch.allclose(y, (x - mean) / torch.sqrt(var + 1.001e-5), atol=1e-5)
    assert not torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(5), atol=1e-3)  # channels are not normalised
    # multi-GPU runs convert BatchNorms to SyncBatchNorm: the inner layer is converted, the transpose stays
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(HeightBatchNorm2d(4)))
    assert isinstance(synced[0], HeightBatchNorm2d) and isinstance(synced[0].bn, nn.SyncBatchNorm)
    assert synced[0].bn.num_features == 4


def test_miskow_batchnorm_sizes_follow_the_height():
    net = meta_build("resnet50", compat="miskow")
    assert isinstance(net.bn1, HeightBatchNorm2d) and net.bn1.bn.weight.numel() == 24  # 48 px → 24 after the stem
    assert net.blocks[0].bn1.bn.weight.numel() == 12 and net.blocks[-1].bn3.bn.weight.numel() == 2
    default = meta_build("resnet50")
    assert type(default.bn1) is nn.BatchNorm2d and default.bn1.weight.numel() == 64


# ------------------------------------------------------------------------------------------ MACs


def _flop_macs(net: nn.Module, shape) -> int:
    fc = FlopCounterMode(display=False)
    with fc:
        net(torch.zeros(1, *shape, device="meta"))
    return fc.get_total_flops() // 2


def test_vgg16_macs_equal_the_hand_formula():
    # VGG16 on 48×48×1: 3×3 convs at sizes 48, 24, 12, 6, 3 → MACs = H·W·C_out·C_in·9 each; FC 2048-4096-4096-7
    layers = [(48, 1, 64), (48, 64, 64), (24, 64, 128), (24, 128, 128), (12, 128, 256), (12, 256, 256),
              (12, 256, 256), (6, 256, 512), (6, 512, 512), (6, 512, 512), (3, 512, 512), (3, 512, 512), (3, 512, 512)]
    convs = sum(s * s * cout * cin * 9 for s, cin, cout in layers)
    dense = 2048 * 4096 + 4096 * 4096 + 4096 * 7
    net = meta_build("vgg16")
    assert _flop_macs(net, (1, 48, 48)) == convs + dense
    # SE adds its two linear layers (512·32 + 32·512); ECA (paper) one k=5 conv over 512 channels
    assert _flop_macs(meta_build("vgg16", attention="se"), (1, 48, 48)) == convs + dense + 2 * 512 * 32
    assert _flop_macs(meta_build("vgg16", attention="eca"), (1, 48, 48)) == convs + dense + 512 * 5
    # emotk's counter on one image (C, H, W), seq_len None
    assert count_macs(net, (1, 48, 48), None) == convs + dense
