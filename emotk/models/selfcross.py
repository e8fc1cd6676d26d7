"""Self- vs cross-attention fusion models of Rajan, Brutti & Cavallaro (ICASSP 2022): ``self_attn``, ``cross_attn``.

Per utterance, one zero-padded sequence per stream (canonical order text, audio, video):

- encoder per stream: text = dropout (training only) → BiGRU; audio / video = Conv1d with the **time
  steps as channels** and kernel 1 (a learned re-mixing of the time axis, audio 1000→500, video 32→25)
  → BiGRU. Output ``[B, L', 2·hidden]``.
- ``self_attn``: one ``nn.MultiheadAttention`` per stream (q = k = v = that stream) → mean over time.
- ``cross_attn``: one attention per ordered pair of distinct streams (query = target, key = value =
  source) → mean over the query's time; three streams give the released order a2t, v2t, t2v, a2v, t2a, v2a.
- fusion over the stacked vectors: ``pooling="stat"`` (default) = unbiased std and mean over the
  items, concatenated **std first** (the released code's actual order) → Linear(4·hidden, hidden) →
  Linear(hidden, out_dim), no activation in between. ``pooling="mean"`` (the slides' "noSP" ablation as
  emotk reads it) = mean only → Linear(2·hidden, hidden); ``pooling="concat"`` = all items concatenated.
  With one item (uni-modal ``self_attn``) the std is undefined: ``stat`` falls back to mean-only pooling.

No residuals, norms, feed-forward layers or padding masks (as released). docs/selfcross.md has the details.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emotk.errors import ModelError
from emotk.models.registry import Preset, register_model, register_preset

STREAMS = ("text", "audio", "video")
SHORT = {"text": "t", "audio": "a", "video": "v"}
PAPER_DIMS = {"text": 300, "audio": 120, "video": 2048}  # GloVe-300, 120-d MFCC frames, ResNet-101 pool
PAPER_LENS = {"text": 128, "audio": 1000, "video": 32}  # tokens, 10 ms frames, frames at 3 fps
PAPER_TIME_OUT = {"text": None, "audio": 500, "video": 25}  # the kernel-1 time convs (None: no conv)
# (source, target) pairs in the released TVAModel_Cross order: a2t, v2t, t2v, a2v, t2a, v2a
RELEASED_PAIRS = (("audio", "text"), ("video", "text"), ("text", "video"), ("audio", "video"),
                  ("text", "audio"), ("video", "audio"))
POOLINGS = ("stat", "mean", "concat")
FRAME_HEADS = ("frame_tanh", "frame_linear", "none")


class StreamEncoder(nn.Module):
    """[B, L, D] → [B, L', 2·hidden]: optional dropout on the input, optional time conv, BiGRU."""

    def __init__(self, name: str, in_dim: int, in_len: int, time_out: int | None, hidden: int,
                 input_dropout: float, rnn: str):
        super().__init__()
        self.name, self.in_len, self.input_dropout = name, in_len, input_dropout
        self.conv = nn.Conv1d(in_len, time_out, kernel_size=1) if time_out else None
        cell = {"gru": nn.GRU, "lstm": nn.LSTM}[rnn]
        self.rnn = cell(in_dim, hidden, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is not None and x.shape[1] != self.in_len:
            raise ModelError(f"stream {self.name!r} has {x.shape[1]} steps but the model's time convolution "
                             f"expects exactly {self.in_len} (zero-pad or truncate to the protocol's `lengths`).")
        if self.input_dropout:
            x = F.dropout(x, p=self.input_dropout, training=self.training)
        if self.conv is not None:
            x = self.conv(x)  # channels = time steps: [B, L, D] → [B, L', D]
        y, _ = self.rnn(x)
        return y


def stat_pool(items: torch.Tensor) -> torch.Tensor:
    """[B, N, C] → [B, 2C]: unbiased std over the N items, then their mean (std first, as released)."""
    std, mean = torch.std_mean(items, dim=1)
    return torch.cat((std, mean), dim=1)


class SelfCrossModel(nn.Module):
    """Encoders, attention blocks (``self`` and/or ``cross``), pooling over their vectors, two linears."""

    def __init__(self, streams, in_dims, in_lens, out_dim, hidden, heads, attn_dropout, text_dropout,
                 time_out, pooling, rnn, use_self: bool, use_cross: bool):
        super().__init__()
        self.streams = tuple(streams)
        width = 2 * hidden
        self.encoders = nn.ModuleDict({
            s: StreamEncoder(s, in_dims[s], in_lens[s], time_out.get(s), hidden,
                             text_dropout if s == "text" else 0.0, rnn) for s in self.streams})

        def mha():
            return nn.MultiheadAttention(width, heads, dropout=attn_dropout, batch_first=True)

        self.self_attn = nn.ModuleDict({s: mha() for s in self.streams}) if use_self else None
        self.pairs = [(src, tgt) for src, tgt in RELEASED_PAIRS if src in self.streams and tgt in self.streams]
        self.cross_attn = nn.ModuleDict({pair_name(*p): mha() for p in self.pairs}) if use_cross else None
        n_items = (len(self.streams) if use_self else 0) + (len(self.pairs) if use_cross else 0)
        self.pooling = "mean" if pooling == "stat" and n_items == 1 else pooling
        fused = {"stat": 2 * width, "mean": width, "concat": n_items * width}[self.pooling]
        self.concat_linear = nn.Linear(fused, hidden)
        self.classifier = nn.Linear(hidden, out_dim)

    def items(self, *xs: torch.Tensor) -> torch.Tensor:
        """[B, N, 2·hidden]: the self vectors (stream order), then the cross vectors (released pair order)."""
        if len(xs) != len(self.streams):
            raise ModelError(f"the model takes {len(self.streams)} streams ({', '.join(self.streams)}), got {len(xs)} inputs.")
        h = {s: self.encoders[s](x) for s, x in zip(self.streams, xs)}
        out = []
        if self.self_attn is not None:
            for s in self.streams:
                y, _ = self.self_attn[s](h[s], h[s], h[s], need_weights=False)
                out.append(y.mean(dim=1))
        if self.cross_attn is not None:
            for src, tgt in self.pairs:
                y, _ = self.cross_attn[pair_name(src, tgt)](h[tgt], h[src], h[src], need_weights=False)
                out.append(y.mean(dim=1))  # over the query's (target's) time axis
        return torch.stack(out, dim=1)

    def pool(self, items: torch.Tensor) -> torch.Tensor:
        if self.pooling == "stat":
            return stat_pool(items)
        if self.pooling == "mean":
            return items.mean(dim=1)
        return items.flatten(1)

    def embed(self, *xs: torch.Tensor) -> torch.Tensor:
        """The hidden-wide utterance embedding (the released code's second output)."""
        return self.concat_linear(self.pool(self.items(*xs)))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(*xs))

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor, ...]:
        """Zeros of every stream at its configured length and width, on the model's device (for counting)."""
        p = next(self.parameters())
        return tuple(torch.zeros(batch, self.encoders[s].in_len, self.encoders[s].rnn.input_size,
                                 device=p.device, dtype=p.dtype) for s in self.streams)


def pair_name(src: str, tgt: str) -> str:
    """``a2t`` for audio (key/value) → text (query)."""
    return f"{SHORT[src]}2{SHORT[tgt]}"


def _check_streams(name: str, streams, minimum: int) -> tuple[str, ...]:
    streams = tuple(streams)
    unknown = [s for s in streams if s not in STREAMS]
    if unknown or not streams or len(set(streams)) != len(streams):
        raise ModelError(f"{name}: streams must be distinct names among {', '.join(STREAMS)}, got {list(streams)}.")
    if len(streams) < minimum:
        raise ModelError(f"{name} needs at least {minimum} streams (cross attention pairs two modalities), "
                         f"got {list(streams)}; use self_attn for one stream.")
    return tuple(s for s in STREAMS if s in streams)  # canonical order, as the trainer passes them


def _build(name, *, streams, in_dims, in_lens, out_dim, head, hidden, heads, attn_dropout, text_dropout,
           time_out, pooling, rnn, use_self, use_cross, minimum) -> SelfCrossModel:
    streams = _check_streams(name, streams, minimum)
    if head in FRAME_HEADS:
        raise ModelError(f"{name} predicts one vector per utterance; head {head!r} is per-frame. "
                         "Use it on an utterance-level classification task.")
    if pooling not in POOLINGS:
        raise ModelError(f"{name}: pooling {pooling!r} is not one of {', '.join(POOLINGS)}.")
    if rnn not in ("gru", "lstm"):
        raise ModelError(f"{name}: rnn {rnn!r} is not one of gru, lstm.")
    if hidden < 1 or heads < 1 or (2 * hidden) % heads:
        raise ModelError(f"{name}: 2·hidden ({2 * hidden}) must be a positive multiple of heads ({heads}).")
    dims = {**PAPER_DIMS, **(in_dims or {})}
    lens = {**PAPER_LENS, **(in_lens or {})}
    touts = {**PAPER_TIME_OUT, **(time_out or {})}
    for s in streams:
        if not isinstance(lens.get(s), int) or lens[s] < 1 or (touts.get(s) is not None and touts[s] < 1):
            raise ModelError(f"{name}: stream {s!r} needs a positive length (in_lens) and time_out, "
                             f"got {lens.get(s)!r} and {touts.get(s)!r}.")
    return SelfCrossModel(streams, dims, lens, out_dim, hidden, heads, attn_dropout, text_dropout, touts,
                          pooling, rnn, use_self, use_cross)


@register_model("self_attn", family="multimodal", streams=STREAMS,
                description="per-modality BiGRU + self-attention, statistical pooling (Rajan et al., ICASSP 2022)")
def self_attn(*, streams=STREAMS, in_dims: dict | None = None, in_lens: dict | None = None, out_dim: int = 7,
              head: str = "logits", hidden: int = 60, heads: int = 6, attn_dropout: float = 0.1,
              text_dropout: float = 0.25, time_out: dict | None = None, pooling: str = "stat",
              rnn: str = "gru") -> nn.Module:
    return _build("self_attn", streams=streams, in_dims=in_dims, in_lens=in_lens, out_dim=out_dim, head=head,
                  hidden=hidden, heads=heads, attn_dropout=attn_dropout, text_dropout=text_dropout,
                  time_out=time_out, pooling=pooling, rnn=rnn, use_self=True, use_cross=False, minimum=1)


@register_model("cross_attn", family="multimodal", streams=STREAMS,
                description="per-modality BiGRU + pairwise cross-attention, statistical pooling (Rajan et al., ICASSP 2022)")
def cross_attn(*, streams=STREAMS, in_dims: dict | None = None, in_lens: dict | None = None, out_dim: int = 7,
               head: str = "logits", hidden: int = 60, heads: int = 6, attn_dropout: float = 0.1,
               text_dropout: float = 0.25, time_out: dict | None = None, pooling: str = "stat",
               rnn: str = "gru", with_self: bool = False) -> nn.Module:
    return _build("cross_attn", streams=streams, in_dims=in_dims, in_lens=in_lens, out_dim=out_dim, head=head,
                  hidden=hidden, heads=heads, attn_dropout=attn_dropout, text_dropout=text_dropout,
                  time_out=time_out, pooling=pooling, rnn=rnn, use_self=bool(with_self), use_cross=True, minimum=2)



def _paper() -> dict:
    """The paper's configuration (a fresh copy per preset)."""
    return dict(streams=list(STREAMS), in_dims=dict(PAPER_DIMS), in_lens=dict(PAPER_LENS), out_dim=7)


_SOURCE = ("IEMOCAP 7 classes, text 128x300 GloVe, audio 1000x120, video 32x2048; count measured on the "
           "released code (smartcameras/SelfCrossAttn models.py)")
register_preset(Preset(
    "self_attn", "base", None, _paper(), params_paper=1_645_892, params_published=None,
    note=f"tri-modal self-attention + statistical pooling; {_SOURCE}",
    extra={"in_dims": dict(PAPER_DIMS), "in_lens": dict(PAPER_LENS), "streams": STREAMS},
))
register_preset(Preset(
    "cross_attn", "base", None, _paper(), params_paper=1_820_132, params_published=None,
    note=f"tri-modal cross-attention (6 pairs) + statistical pooling; {_SOURCE}",
    extra={"in_dims": dict(PAPER_DIMS), "in_lens": dict(PAPER_LENS), "streams": STREAMS},
))


def example_inputs(model: SelfCrossModel, batch: int = 1) -> tuple[torch.Tensor, ...]:
    """``model.example_inputs(batch)``: zero inputs of the model's streams (for counting MACs)."""
    return model.example_inputs(batch)
