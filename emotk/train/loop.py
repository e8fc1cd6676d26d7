"""The training loop and its run directory.

``train_run(ws, TrainConfig(...))`` trains one (model, split part, seed) under a protocol
(:mod:`emotk.train.protocol`) and writes, atomically::

    config.json          the run's identity (every setting that changes a number) and everything else known
    checkpoint.pt        last epoch: stage, model, optimizer, scheduler, RNG states of every rank (to resume)
    best.pt              the selected weights so far (see "Selection")
    history.csv          one row per epoch (stage, train loss, selection metric, learning rate)
    metrics.json         metrics of the selected weights on the reported part, {"status": "finished", ...}
    predictions.parquet  per frame (frame tasks) or per clip, on the reported part

**Identity.** A run folder is ``<runs>/<dataset>/<model>-<size>-<hash>/<split>/<part>-seed<s>/``, where
``<hash>`` is a short sha256 of the resolved configuration: model, size and options, the resolved
protocol (every stage), the input streams and the fingerprints of every input file (manifest,
labels, features, split, prepare options), the precision, and the training code's format version. Folds and seeds
of one configuration share the ``<hash>`` folder; any other change is another folder. A finished run
is reused only on an equal hash; an unfinished one is continued from its last checkpoint (``resume``).
The hardware (device, number of processes) is recorded, not hashed.

**Selection.** The epoch (and anything else chosen) is chosen on a selection part, never on the
reported part, by default (``select_on: val``): the split's own validation part when the split also
has a test part to report on, else a part carved from the training part by subject (seeded by the
run's seed, ``val_fraction`` of the subjects). ``heldout`` selects on the reported part (the papers'
optimistic rule) and ``last`` takes the last epoch; both are printed in every report.

**Stages.** Each stage of the protocol builds its own optimizer and schedule over the parameters it
does not freeze and starts from the previous stage's selected weights. A checkpoint records the
stage, so a run killed inside any stage continues there; data order and augmentation depend on
(seed, stage, epoch, step) only and the checkpoint restores every RNG, so on CPU a resumed run ends
with exactly the metrics of an uninterrupted one.

Under torchrun the run is data-parallel (see :mod:`emotk.distributed`): ``batch_size`` is the
global batch, rank 0 writes every file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import platform
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from emotk import __version__, metrics
from emotk import distributed as ddp
from emotk.atomic import atomic_path, file_sha256, write_json, write_parquet
from emotk.datasets import get_dataset
from emotk.datasets.base import Task
from emotk.locks import output_lock
from emotk.report import write_confusion
from emotk.errors import EmotkError, RunError, SplitError
from emotk.models import MODELS, build, find_preset, model_info, na_cpu
from emotk.models.na import NeighborhoodAttention1d
from emotk.splits import check, read_split
from emotk.train import protocol as protocols
from emotk.train.augment import TTA_SETS, augment, step_seed
from emotk.train.data import SEQUENCE_STREAMS, WindowDataset, collate, load_labels, make_sources
from emotk.train.losses import LOSSES, check_loss_options
from emotk.workspace import Workspace

#: The summary metrics each task kind reports (what a protocol's ``metric`` may select on).
TASK_METRICS = {
    "clip_classification": metrics.REPORTED["classification"], "frame_classification": metrics.REPORTED["classification"],
    "clip_multilabel": metrics.REPORTED["multilabel"], "frame_regression": metrics.REPORTED["regression"],
}

#: Bumped whenever the training code changes what a configuration computes (part of every run's identity).
TRAIN_FORMAT = 2
PIXEL_STREAMS = ("crops", "image")


@dataclass
class TrainConfig:
    """One run as requested. ``overrides`` are dotted protocol keys (``stages.*.epochs``, ``seq_len``, …)."""

    model: str
    dataset: str
    split: str
    inputs: dict = field(default_factory=dict)  # stream → spec, e.g. {"frames": "regnet_y_400mf"} or {"crops": ""}
    fold: int | None = None  # k-fold part to hold out; None for an official split
    size: str | None = None
    seed: int = 1
    protocol: str | None = None  # a shipped name or a YAML path; None: the model family's (protocols.default_for)
    overrides: dict = field(default_factory=dict)
    device: str | None = None
    num_workers: int = 0
    amp: bool = True  # used on CUDA only
    compile: bool = False  # torch.compile the training step's model (CUDA graphs on CUDA: mode reduce-overhead)
    allow_leak: bool = False
    model_options: dict = field(default_factory=dict)
    runs_dir: str | None = None

    def __post_init__(self):
        if self.protocol is None:
            self.protocol = protocols.default_for(model_info(self.model).family)
        if self.size is None:  # name the preset actually used: run folders and tables say e.g. gru-sm
            preset = find_preset(self.model, None, self.dataset)
            self.size = preset.size if preset else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fingerprint(path: Path, full_limit: int = 64 << 20) -> str:
    """sha256 of a file; for files over ``full_limit`` of its size, first and last MiB (fast, still content-based)."""
    if not path.exists():
        return "missing"
    size = path.stat().st_size
    if size <= full_limit:
        return file_sha256(path)
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        h.update(fh.read(1 << 20))
        fh.seek(-(1 << 20), 2)
        h.update(fh.read(1 << 20))
    return h.hexdigest()


def _store_fingerprint(path: Path) -> str:
    """Fingerprint of a feature store: its merged file, or its part files' names while parts exist."""
    from emotk.features.store import parts_dir

    parts = sorted(p.name for p in parts_dir(path).glob("part-*.h5")) if parts_dir(path).is_dir() else []
    if not parts:
        return fingerprint(path)
    h = hashlib.sha256((fingerprint(path) if path.exists() else "").encode())
    for name in parts:
        h.update(name.encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------ the resolved run


@dataclass
class Resolved:
    """A request made concrete: protocol, inputs, identity, folder."""

    cfg: TrainConfig
    task: Task
    protocol: dict
    inputs: dict[str, str]
    fingerprints: dict[str, str]
    identity: dict
    config_hash: str
    out_dir: Path

    @property
    def seq_len(self) -> int:
        return self.protocol["seq_len"] or self.task.seq_len


def resolve_inputs(ws: Workspace, cfg: TrainConfig, proto: dict) -> dict[str, str]:
    """The streams a run reads: the request's, else the protocol's input kind (frames: the only cache;
    streams: the request's, else the protocol's default caches)."""
    if proto["input"] == "streams":
        # the streams the request names (a uni- or bi-modal run names one or two), else the protocol's
        inputs = dict(cfg.inputs) if cfg.inputs else dict(proto["inputs"])
        if not inputs:
            raise RunError("this run reads per-utterance streams but none is given: pass --input text=NAME, "
                           "--input audio=NAME and/or --input video=NAME (feature caches made by `emotk extract`).")
        unknown = [k for k in inputs if k not in SEQUENCE_STREAMS]
        if unknown:
            raise RunError(f"--input {unknown[0]}=… cannot be mixed with per-utterance streams "
                           f"({', '.join(SEQUENCE_STREAMS)}).")
        return inputs
    if cfg.inputs:
        return dict(cfg.inputs)
    if proto["input"] in ("crops", "image"):
        return {proto["input"]: ""}
    folder = ws.features_dir(cfg.dataset)
    names = sorted({p.stem for p in folder.glob("*.h5")} | {p.name[:-6] for p in folder.glob("*.parts")}) if folder.is_dir() else []
    if len(names) == 1:
        return {"frames": names[0]}
    if not names:
        raise RunError(f"no feature cache in {folder}: run `emotk extract --encoder regnet_y_400mf` first, "
                       "or train end to end from the face crops with --input crops.")
    raise RunError(f"several feature caches in {folder} ({', '.join(names)}): pass --input frames=NAME.")


def _precision(cfg: TrainConfig) -> str:
    device = ddp.resolve_device(cfg.device) if cfg.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return "amp-fp16" if cfg.amp and device.type == "cuda" else "fp32"


def dataset_task(ws: Workspace, dataset: str) -> Task:
    """The task a prepared dataset was prepared for (``dataset.json``: options such as CK+'s class count
    can change it), else the dataset's registered task."""
    spec_task = get_dataset(dataset).task
    path = ws.info_path(dataset)
    if not path.exists():
        return spec_task
    try:
        saved = json.loads(path.read_text()).get("task")
        return Task(**{**saved, "targets": tuple(saved["targets"])}) if saved else spec_task
    except (ValueError, TypeError, KeyError) as exc:
        raise RunError(f"{path}: its 'task' entry is unreadable ({exc}); run `emotk prepare {dataset}` again.") from None


def resolve(ws: Workspace, cfg: TrainConfig) -> Resolved:
    task = dataset_task(ws, cfg.dataset)
    model_info(cfg.model)  # unknown model: a clear error now
    overrides = dict(cfg.overrides)
    if cfg.inputs.keys() & set(SEQUENCE_STREAMS) or model_info(cfg.model).family == "multimodal":
        overrides["input"] = "streams"
    elif cfg.inputs:  # an explicit input decides the protocol's input kind
        overrides["input"] = next((k for k in ("crops", "image") if k in cfg.inputs), "frames")
    elif model_info(cfg.model).streams == ("image",):  # an image model reads the image store whatever the protocol
        overrides["input"] = "image"
    proto = protocols.resolve(cfg.protocol, cfg.dataset, overrides)
    if proto["metric"] is not None and proto["metric"] not in TASK_METRICS.get(task.kind, (proto["metric"],)):
        raise RunError(f"the protocol selects on {proto['metric']!r}, which a {task.kind} task ({cfg.dataset}) does not "
                       f"report; pass --set metric=NAME with one of {', '.join(TASK_METRICS[task.kind])} (or null: "
                       f"the dataset's {task.metric!r}).")
    if proto["input"] == "streams" and model_info(cfg.model).family != "multimodal":
        raise RunError(f"model {cfg.model!r} reads {', '.join(model_info(cfg.model).streams)}; the per-utterance streams "
                       f"({', '.join(SEQUENCE_STREAMS)}) are for the multimodal models "
                       f"({', '.join(sorted(m for m, i in MODELS.items() if i.family == 'multimodal'))}).")
    inputs = resolve_inputs(ws, cfg, proto)
    prints = {
        "manifest": fingerprint(ws.manifest_path(cfg.dataset)),
        "labels": fingerprint(ws.labels_path(cfg.dataset)),
        "prepare": fingerprint(ws.info_path(cfg.dataset)),
        "split": fingerprint(ws.split_path(cfg.dataset, cfg.split)),
    }
    for stream, spec in inputs.items():
        if stream == "frames" or stream in SEQUENCE_STREAMS:
            prints[f"features:{spec}"] = _store_fingerprint(ws.feature_path(cfg.dataset, spec))
    identity = {
        "model": cfg.model, "size": cfg.size, "dataset": cfg.dataset, "split": cfg.split,
        "model_options": cfg.model_options, "protocol": proto, "inputs": inputs, "fingerprints": prints,
        "precision": _precision(cfg), "train_format": TRAIN_FORMAT,
    }
    if cfg.compile:  # a compiled step may round differently: another configuration
        identity["compiled"] = True
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    root = Path(cfg.runs_dir) if cfg.runs_dir else ws.runs_dir()
    part = "official" if cfg.fold is None else f"fold{cfg.fold}"
    out_dir = root / cfg.dataset / f"{cfg.model}-{cfg.size or 'default'}-{digest}" / cfg.split / f"{part}-seed{cfg.seed}"
    return Resolved(cfg, task, proto, inputs, prints, identity, digest, out_dir)


def run_dir(ws: Workspace, cfg: TrainConfig) -> Path:
    return resolve(ws, cfg).out_dir


# ------------------------------------------------------------------------------------ parts and selection


@dataclass
class Parts:
    train: list[str]
    select: list[str] | None  # None: no selection (last epoch)
    report: list[str]
    rule: str  # val | heldout | last
    description: str  # e.g. "subject-k5: train folds minus 1 carved subject(s) → select; fold 2 reported"
    report_name: str  # "fold 2" | "validation" | "test"


def carve(ws: Workspace, dataset: str, pool: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split ``pool`` by subject: (rest, carved), ``fraction`` of the subjects carved (at least one), seeded."""
    manifest = ws.read_manifest(dataset).select("sample_id", "subject")
    subj = dict(zip(manifest["sample_id"].to_list(), manifest["subject"].to_list()))
    subjects = sorted({subj[s] for s in pool if s in subj})
    if len(subjects) < 2:
        raise SplitError(f"the training part has {len(subjects)} subject(s): no subject-disjoint validation part can be "
                         "carved from it. Use --select-on last (last epoch) or a split with a validation part.")
    n = min(len(subjects) - 1, max(1, round(fraction * len(subjects))))
    rng = random.Random(seed)
    rng.shuffle(subjects)
    chosen = set(subjects[:n])
    return [s for s in pool if subj.get(s) not in chosen], [s for s in pool if subj.get(s) in chosen]


def select_parts(ws: Workspace, cfg: TrainConfig, proto: dict | None = None) -> Parts:
    """Train / selection / reported sample ids of the split part, after the leakage check."""
    proto = proto or protocols.resolve(cfg.protocol, cfg.dataset, cfg.overrides)
    rule = proto["select_on"]
    split = read_split(ws, cfg.dataset, cfg.split)
    if not cfg.allow_leak:
        try:
            check(split, f"split {cfg.split!r}")
        except SplitError as exc:
            raise SplitError(f"{exc}\n(train refuses leaking splits; --allow-leak overrides)") from None
    own_val = None
    if "fold" in split.columns:
        folds = sorted(split["fold"].unique().to_list())
        if cfg.fold is None or cfg.fold not in folds:
            raise SplitError(f"split {cfg.split!r} has folds {folds}; pass --fold K (or --fold all).")
        pool = split.filter(pl.col("fold") != cfg.fold)["sample_id"].to_list()
        report = split.filter(pl.col("fold") == cfg.fold)["sample_id"].to_list()
        report_name = f"fold {cfg.fold}"
    else:
        if cfg.fold is not None:
            raise SplitError(f"split {cfg.split!r} is an official split (no folds); drop --fold.")
        pool = split.filter(pl.col("split") == "train")["sample_id"].to_list()
        val = split.filter(pl.col("split") == "validation")["sample_id"].to_list()
        test = split.filter(pl.col("split") == "test")["sample_id"].to_list()
        report, report_name = (test, "test") if test else (val, "validation")
        own_val = val if test else None
    if not pool or not report:
        raise SplitError(f"split {cfg.split!r} gives {len(pool)} training and {len(report)} reported samples; "
                         "both must be non-empty.")
    if rule == "heldout":
        train, select, how = pool, report, f"selected on the reported part ({report_name}) — the papers' optimistic rule"
    elif rule == "last":
        train, select, how = pool, None, "last epoch (no selection)"
    elif own_val:
        train, select, how = pool, own_val, "selected on the split's validation part"
    else:
        train, select = carve(ws, cfg.dataset, pool, proto["val_fraction"], cfg.seed)
        how = f"selected on {len(select)} training samples carved by subject ({proto['val_fraction']:g} of subjects, seed {cfg.seed})"
    return Parts(train, select, report, rule, f"{cfg.split}: {how}; {report_name} reported", report_name)


# ------------------------------------------------------------------------------------ checkpoints


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(),
             "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_checkpoint(path: Path, payload: dict) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    with atomic_path(path, ".pt") as tmp:
        tmp.write_bytes(buf.getvalue())


def load_checkpoint(path: Path, model_name: str | None = None) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file; all mean the same to the user
        raise RunError(f"{path} is not a readable emotk checkpoint ({str(exc)[:160]}); delete it to start over.") from None
    if model_name is not None and payload.get("model_name") != model_name:
        raise RunError(f"{path} holds a {payload.get('model_name')!r} model, not {model_name!r}; "
                       "use another run directory or delete the checkpoint.")
    return payload


# ------------------------------------------------------------------------------------ model


def build_model(run: Resolved, shapes: dict[str, tuple]) -> tuple[torch.nn.Module, tuple[str, ...]]:
    """The network of a run and the streams its forward takes, from the streams' shapes and the task."""
    cfg, proto = run.cfg, run.protocol
    if "crops" in run.inputs:
        from emotk.features.encoders import load_encoder
        from emotk.models.e2e import EndToEnd

        enc = proto["encoder"]
        encoder = load_encoder(enc["name"], enc["weights"], image_size=enc["image_size"])
        temporal = build(cfg.model, cfg.size, cfg.dataset, in_dim=encoder.dim, out_dim=run.task.out_dim,
                         head=run.task.head, **cfg.model_options)
        return EndToEnd(encoder.module.train(), temporal, enc["checkpointing"], enc["channels_last"]), ("crops",)
    info = model_info(cfg.model)
    if info.family == "multimodal":  # takes the subset of its streams the run gives, in its order
        streams = tuple(s for s in info.streams if s in shapes)
        if not streams:
            raise RunError(f"model {cfg.model!r} reads {', '.join(info.streams)}; give at least one with --input "
                           "(e.g. --input text=glove --input audio=mfcc).")
        net = build(cfg.model, cfg.size, cfg.dataset, out_dim=run.task.out_dim, head=run.task.head, streams=streams,
                    in_dims={s: shapes[s][-1] for s in streams}, in_lens={s: shapes[s][0] for s in streams},
                    **cfg.model_options)
        return net, streams
    streams = info.streams
    missing = [s for s in streams if s not in shapes]
    if missing:
        raise RunError(f"model {cfg.model!r} reads the stream(s) {missing}, which this run lacks; "
                       f"give them with --input (e.g. --input frames=NAME after `emotk extract`).")
    shape = shapes[streams[0]]
    dims = {"in_channels": shape[0], "image_size": shape[-1]} if streams[0] in PIXEL_STREAMS else {"in_dim": shape[-1]}
    net = build(cfg.model, cfg.size, cfg.dataset, out_dim=run.task.out_dim, head=run.task.head, **dims, **cfg.model_options)
    return net, streams


def compile_step(net: torch.nn.Module, device: torch.device):
    """``net`` through ``torch.compile`` for the training step: CUDA graphs on CUDA (``reduce-overhead``:
    the step is not launch-bound), the default inductor mode on the CPU. Windows have a fixed length, so
    it compiles once per batch shape (a smaller last batch once more) and stage."""
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    return torch.compile(net, mode=mode, dynamic=False)


def _forward(net, inputs: list, compiled: bool):
    """``net(*inputs)``; with ``--compile``, a failure of the compiler itself (torch._dynamo / _inductor)
    is one clear error instead of a compiler traceback."""
    try:
        return net(*inputs)
    except Exception as exc:
        if compiled and type(exc).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise RunError(f"--compile: torch.compile could not compile this model here ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); train without --compile.") from None
        raise


def _macs(model, shape: tuple, seq_len: int | None, shapes: dict | None = None, streams=()) -> int | None:
    """True MACs of one forward pass at the paper's sequence length (for the report's MACs column);
    ``seq_len`` None: one item of ``shape`` (an image); several ``streams``: one item of each."""
    from emotk.models.counting import count_macs

    try:
        if len(streams) > 1 or (streams and streams[0] in SEQUENCE_STREAMS):
            inputs = tuple(torch.zeros(1, *shapes[s]) for s in streams)
            return int(count_macs(model, None, None, inputs=inputs))
        return int(count_macs(model, shape if len(shape) > 1 else shape[0], seq_len))
    except Exception:  # counting is informative only; never fail a run over it
        return None


def na_kernels(model: torch.nn.Module, device: torch.device, seq_len: int) -> list[str] | None:
    """The neighborhood-attention kernels this process runs the model's NA layers on (recorded with the
    run: "native" and "torch" agree to float32 rounding, not bit for bit); None without NA layers."""
    found = set()
    for layer in model.modules():
        if isinstance(layer, NeighborhoodAttention1d):
            backend, _ = layer.explain_backend(torch.empty(1, max(1, seq_len), layer.dim, device=device))
            found.add(f"native ({na_cpu.build_info()})" if backend == "native" else backend)
    return sorted(found) or None


def _note_na_kernel_change(saved_config: Path, now: list[str] | None) -> None:
    """On resume: say so when the run started on other NA kernels (compared by name, not by build path)."""
    before = json.loads(saved_config.read_text()).get("na_kernels") if saved_config.exists() else None
    names = [k.split(" ")[0] for k in before or []], [k.split(" ")[0] for k in now or []]
    if before and now and names[0] != names[1]:
        print(f"note: this run started on the NA kernels {before} and continues on {now}; they agree to float32 "
              "rounding, so the resumed run is not bit-identical to an uninterrupted one (pass --na-backend to pin "
              "one).", file=sys.stderr)


def _matches(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def apply_freeze(model: torch.nn.Module, prefixes: list[str]) -> None:
    """Parameters under the prefixes get no gradient (the rest do); their modules are kept in eval mode."""
    names = {n for n, _ in model.named_modules()}
    unknown = [p for p in prefixes if p not in names]
    if unknown:
        top = sorted({n.split(".")[0] for n in names if n})
        raise RunError(f"freeze: the model has no module {unknown[0]!r}; its top-level modules: {', '.join(top)}.")
    for name, p in model.named_parameters():
        p.requires_grad_(not _matches(name, prefixes))


def set_train_mode(model: torch.nn.Module, frozen: list[str]) -> None:
    model.train()
    for name, m in model.named_modules():
        if name and _matches(name, frozen):
            m.eval()


def make_optimizer(model: torch.nn.Module, stage: dict) -> torch.optim.Optimizer:
    opt = stage["optimizer"]
    base_lr, base_wd = opt["lr"], opt["weight_decay"]
    groups: dict[str, list] = {k: [] for k in stage["groups"]}
    rest = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = next((k for k in stage["groups"] if _matches(name, [k])), None)
        (groups[key] if key else rest).append(p)
    param_groups = [{"params": rest, "lr": base_lr, "weight_decay": base_wd}] if rest else []
    for key, params in groups.items():
        g = stage["groups"][key]
        if not params:
            raise RunError(f"stage {stage['name']!r}: group {key!r} matches no trainable parameter of the model.")
        lr = g.get("lr", base_lr * g.get("lr_scale", 1.0))
        param_groups.append({"params": params, "lr": lr, "weight_decay": g.get("weight_decay", base_wd)})
    if not param_groups:
        raise RunError(f"stage {stage['name']!r} freezes every parameter: nothing to train.")
    extra = {k: opt[k] for k in ("eps",) if k in opt}
    if opt["name"] == "sgd":
        return torch.optim.SGD(param_groups, lr=base_lr, momentum=opt.get("momentum", 0.0),
                               nesterov=opt.get("nesterov", False), weight_decay=base_wd)
    if "betas" in opt:
        extra["betas"] = tuple(opt["betas"])
    cls = torch.optim.AdamW if opt["name"] == "adamw" else torch.optim.Adam
    return cls(param_groups, lr=base_lr, weight_decay=base_wd, **extra)


def lr_factor(schedule: dict, base_lr: float, steps_per_epoch: int, epochs: int):
    """The schedule as a function of the stage's step → multiplier of each group's learning rate."""
    per = steps_per_epoch if schedule["per"] == "epoch" else 1
    total = epochs * steps_per_epoch
    warm = schedule["warmup_steps"] or round(schedule["warmup_epochs"] * steps_per_epoch)
    floor = schedule.get("eta_min_factor", schedule.get("eta_min", 0.0) / base_lr)
    name = schedule["name"]
    if "t0_epochs" in schedule:
        t0 = max(1, round(schedule["t0_epochs"] * steps_per_epoch / per))
    else:
        t0 = schedule.get("t0", 1)

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        t = (step // per) if per > 1 else step
        if name in ("none", "plateau"):
            return 1.0
        if name == "cosine":
            span = max(1, (total // per) if per > 1 else total)
            return floor + (1 - floor) * (1 + math.cos(math.pi * min(t, span) / span)) / 2
        if name == "cosine_restarts":
            ti, tc = t0, t
            while tc >= ti:
                tc -= ti
                ti *= schedule["t_mult"]
            return floor + (1 - floor) * (1 + math.cos(math.pi * tc / ti)) / 2
        if name == "step":
            return schedule["gamma"] ** (t // schedule["step_size"])
        raise RunError(f"unknown schedule {name!r}")

    return factor


# ------------------------------------------------------------------------------------ prediction and scoring


def to_device(batch: dict, device) -> dict:
    """A batch on ``device``; pixel streams (uint8) become floats in [0, 1] there."""
    out = {}
    for k, v in batch.items():
        v = v.to(device, non_blocking=True)
        if k in PIXEL_STREAMS:
            v = v.float().div_(255)
        out[k] = v
    return out


def predict(model, loader, device, streams, amp: bool, tta: str = "none", classify: bool = False):
    """Model outputs, targets and validity for every window of ``loader``, on the CPU (TTA views averaged)."""
    views = TTA_SETS.get(tta).views
    pixel = [s for s in streams if s in PIXEL_STREAMS]
    if len(views) > 1 and not pixel:
        raise RunError(f"TTA {tta!r} transforms images; this run reads {', '.join(streams)} (no pixels).")
    model.eval()
    outs, ys, valids = [], [], []
    with torch.inference_mode():
        for batch in loader:
            b = to_device(batch, device)
            acc = None
            for view in views:
                inputs = [view(b[s]) if s in pixel else b[s] for s in streams]
                with torch.autocast("cuda", enabled=amp and device.type == "cuda"):
                    out = model(*inputs).float()
                out = out.softmax(-1) if classify and len(views) > 1 else out
                acc = out if acc is None else acc + out
            out = acc / len(views)
            if classify and len(views) > 1:
                out = out.clamp_min(1e-12).log()  # averaged probabilities, as log-probabilities (argmax unchanged)
            outs.append(out.cpu())
            ys.append(batch["y"])
            valids.append(batch["valid"])
    return outs, ys, valids


def predict_sharded(model, dataset, batch_size: int, device, streams, amp: bool, info: ddp.DistInfo,
                    num_workers: int = 0, tta: str = "none", classify: bool = False):
    """:func:`predict` over ``dataset`` split contiguously across ranks, gathered in order on every rank."""
    if not info.distributed:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
        return predict(model, loader, device, streams, amp, tta, classify)
    sizes = ddp.shard_sizes(len(dataset), info.world_size)
    start = sum(sizes[:info.rank])
    part = Subset(dataset, range(start, start + sizes[info.rank]))
    loader = DataLoader(part, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    mine = predict(model, loader, device, streams, amp, tta, classify) if len(part) else ([], [], [])
    outs, ys, valids = [], [], []
    for o, y, v in ddp.gather_objects(mine):
        outs += o
        ys += y
        valids += v
    return outs, ys, valids


def score(task: Task, dataset: WindowDataset, outs, ys, valids) -> tuple[dict, pl.DataFrame]:
    """Metrics of the task and a predictions table (per frame or per clip)."""
    out, y, valid = torch.cat(outs), torch.cat(ys), torch.cat(valids)
    if not bool(valid.any()):
        raise RunError("no frame of the part being scored is valid (every frame lacks a label or an input: unreadable "
                       "crops or features?); see failures.csv and check the raw files are still in place.")
    w = dataset.windows
    sids = np.asarray(dataset.sample_ids)[w.sample]
    if task.kind == "frame_regression":
        v = valid.numpy()
        pred, true = out.numpy()[v], y.numpy()[v]
        frame_sid = np.repeat(sids[:, None], v.shape[1], axis=1)[v]
        report = metrics.regression_report(true, pred, names=task.targets, groups=frame_sid)
        table = {"sample_id": frame_sid, "frame": w.frames[v]}
        for j, name in enumerate(task.targets):
            table[f"pred_{name}"], table[f"true_{name}"] = pred[:, j], true[:, j]
        return report, pl.DataFrame(table)
    if task.kind == "clip_multilabel":
        probs = torch.sigmoid(out).numpy()
        report = metrics.multilabel_report(y.numpy(), probs, names=task.targets)
        table = {"sample_id": sids}
        for j, name in enumerate(task.targets):
            table[f"prob_{name}"], table[f"true_{name}"] = probs[:, j], y.numpy()[:, j]
        return report, pl.DataFrame(table)
    if task.kind == "clip_classification":
        logits = out
        if logits.dim() == 3:
            m = valid.float().unsqueeze(-1)
            logits = (logits * m).sum(1) / m.sum(1).clamp(min=1)
        true = y.view(-1).long().numpy()
        report = metrics.classification_report(true, logits.numpy(), num_classes=task.n_classes or None)
        return report, pl.DataFrame({"sample_id": sids, "pred": logits.argmax(-1).numpy(), "true": true})
    if task.kind == "frame_classification":
        v = valid.numpy()
        logits, true = out.numpy()[v], y.numpy()[v][:, 0].astype(int)
        report = metrics.classification_report(true, logits, num_classes=task.n_classes or None)
        frame_sid = np.repeat(sids[:, None], v.shape[1], axis=1)[v]
        return report, pl.DataFrame({"sample_id": frame_sid, "frame": w.frames[v], "pred": logits.argmax(-1), "true": true})
    raise RunError(f"no scorer for task kind {task.kind!r}")


def class_names(ws: Workspace, dataset: str, task: Task) -> list[str]:
    """Names of the task's classes: the manifest's ``label_name`` per class id where it has one, else the ids."""
    names = [str(k) for k in range(task.n_classes)]
    manifest = ws.read_manifest(dataset)
    label = task.targets[0]
    if "label_name" in manifest.columns and label in manifest.columns:
        for k, name in manifest.select(label, "label_name").unique().drop_nulls().iter_rows():
            if 0 <= int(k) < len(names):
                names[int(k)] = str(name)
    return names


def make_dataset(ws: Workspace, run: Resolved, ids: list[str], what: str) -> WindowDataset:
    image_size = run.protocol["encoder"]["image_size"] if "crops" in run.inputs else None
    sources, rows = make_sources(ws, run.cfg.dataset, run.inputs, ids, what, image_size, run.protocol["lengths"])
    labels = load_labels(ws, run.cfg.dataset, rows, run.task)
    return WindowDataset(sources, labels, run.task, run.seq_len, run.protocol["frame_stride"], ids)


# ------------------------------------------------------------------------------------ the run


def _decide(run: Resolved, resume: bool) -> tuple[str, dict | None]:
    """('finished', metrics) | ('resume', None) | ('fresh', None); raises RunError when a run cannot continue."""
    out_dir = run.out_dir
    metrics_path = out_dir / "metrics.json"
    if metrics_path.exists():
        try:
            done = json.loads(metrics_path.read_text())
        except ValueError:
            done = {}
        if done.get("status") == "finished":
            return "finished", done
    ckpt_path = out_dir / "checkpoint.pt"
    if not ckpt_path.exists():
        return "fresh", None
    if not resume:
        raise RunError(f"{out_dir} holds an unfinished run. Drop --no-resume to continue it, or delete the folder to start over.")
    load_checkpoint(ckpt_path, run.cfg.model)  # a checkpoint of another model or an unreadable one: RunError now
    saved_path = out_dir / "config.json"
    if saved_path.exists():
        try:
            saved = json.loads(saved_path.read_text())
        except ValueError:
            raise RunError(f"{saved_path} is not valid JSON; delete the run folder {out_dir} to start over.") from None
        if json.dumps(saved.get("identity"), sort_keys=True, default=str) != json.dumps(run.identity, sort_keys=True, default=str):
            raise RunError(f"{out_dir} holds a run of another configuration (its config.json differs); delete the folder.")
    return "resume", None


def _safe(fn):
    """fn()'s result, or the EmotkError it raised (to broadcast it to every rank)."""
    try:
        return fn()
    except EmotkError as exc:
        return exc


def _broadcast_or_raise(value):
    value = ddp.broadcast_object(value)
    if isinstance(value, EmotkError):
        raise value
    return value


def train_run(ws: Workspace, cfg: TrainConfig, resume: bool = True, progress: bool = True) -> dict:
    """Train one run; returns the contents of metrics.json. Finished runs (same identity) are returned untouched.

    An unfinished run (checkpoint.pt present) is continued when ``resume`` (the default); with
    ``resume=False`` it is an error. Under torchrun every rank calls this.
    """
    info = ddp.init(cfg.device)
    run = _broadcast_or_raise(_safe(lambda: resolve(ws, cfg)) if info.is_main else None)
    run.cfg = cfg
    mode, done = _broadcast_or_raise(_safe(lambda: _decide(run, resume)) if info.is_main else None)
    if mode == "finished":
        return done
    with _run_lock(run.out_dir, info):
        return _train(ws, run, mode, info, progress)


def _run_lock(out_dir: Path, info: ddp.DistInfo):
    """An advisory lock on the run folder (rank 0): two processes never train the same identity at once."""
    if not info.is_main:
        return nullcontext()
    out_dir.mkdir(parents=True, exist_ok=True)
    return output_lock(out_dir / "run", what="training run")


def _train(ws: Workspace, run: Resolved, mode: str, info: ddp.DistInfo, progress: bool) -> dict:
    cfg, task, proto = run.cfg, run.task, run.protocol
    out_dir = run.out_dir
    ckpt_path, metrics_path = out_dir / "checkpoint.pt", out_dir / "metrics.json"
    if mode == "resume":  # another process may have finished it while this one waited for the lock
        mode, done = _decide(run, True)
        if mode == "finished":
            return done
    parts = select_parts(ws, cfg, proto)
    seed_everything(cfg.seed)
    train_set = make_dataset(ws, run, parts.train, f"split {cfg.split!r} (training part)")
    select_set = make_dataset(ws, run, parts.select, f"split {cfg.split!r} (selection part)") if parts.select else None
    report_set = (select_set if parts.select is parts.report and select_set is not None
                  else make_dataset(ws, run, parts.report, f"split {cfg.split!r} ({parts.report_name})"))

    device = ddp.device_for(info, cfg.device)
    amp = cfg.amp and device.type == "cuda"
    shapes = {k: src.shape for k, src in train_set.sources.items()}
    model, streams = build_model(run, shapes)  # same seed on every rank: same initial weights
    na_cpu.set_cache_dir(ws.root / "cache" / "kernels")  # where the native NA kernel is built (first use)
    if info.distributed and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if "crops" in run.inputs and device.type == "cuda" and proto["encoder"]["channels_last"]:
        model.encoder.to(memory_format=torch.channels_last)
    if info.rank > 0:  # dropout masks differ across ranks (rank 0 keeps the single-process stream)
        torch.manual_seed(cfg.seed + 1_000_003 * info.rank)
    primary = proto["metric"] or task.metric
    higher = metrics.higher_is_better(primary)
    preset = find_preset(cfg.model, cfg.size, cfg.dataset)
    macs_len = preset.seq_len if preset and preset.seq_len else run.seq_len
    in_shape = shapes[streams[0]]
    config = {
        **asdict(cfg), "identity": run.identity, "config_hash": run.config_hash, "run_dir": str(out_dir),
        "protocol_name": proto["name"], "protocol_resolved": proto, "select_on": parts.rule,
        "protocol": parts.description, "reported_part": parts.report_name, "metric": primary, "task": asdict(task),
        "inputs": run.inputs, "fingerprints": run.fingerprints, "seq_len": run.seq_len, "streams": list(streams),
        "params": sum(p.numel() for p in model.parameters()),
        "macs": _macs(model, in_shape, None if streams[0] == "image" else macs_len, shapes, streams), "macs_seq_len": macs_len,
        "preset": None if preset is None else {"size": preset.size, "dataset": preset.dataset, "config": preset.config},
        "n_train_samples": len(parts.train), "n_select_samples": len(parts.select or []),
        "n_report_samples": len(parts.report), "n_train_windows": len(train_set),
        "report_left_out": report_set.left_out,
        "versions": {"emotk": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "emotk_version": __version__, "device": str(device), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "world_size": info.world_size, "backend": info.backend,
        "na_kernels": na_kernels(model, device, macs_len or run.seq_len or 1),
    }
    state = None
    if mode == "resume":
        state = load_checkpoint(ckpt_path, cfg.model)
        if info.is_main:
            _note_na_kernel_change(out_dir / "config.json", config["na_kernels"])
    elif info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "best.pt").unlink(missing_ok=True)  # left by a run killed before its first checkpoint
        write_json(out_dir / "config.json", config)
    history = state["history"] if state else []
    start_stage = state["stage"] if state else 0
    show = progress and info.is_main
    eval_batch = 64
    classify = task.kind.endswith("classification")

    def evaluate(ds, loss_fn, loss_opts) -> tuple[float, float]:
        """(task metric, loss) on ``ds``."""
        outs, ys, valids = predict_sharded(model, ds, eval_batch, device, streams, amp, info, cfg.num_workers,
                                           classify=classify)
        report, _ = score(task, ds, outs, ys, valids)
        with torch.no_grad():
            loss = float(loss_fn(torch.cat(outs), torch.cat(ys), torch.cat(valids), **loss_opts))
        value, loss = ddp.broadcast_object((report[primary], loss))
        if value is None or not math.isfinite(value) or not math.isfinite(loss):
            raise RunError(f"the {primary} on the selection part is {value} (loss {loss}) at epoch {len(history) + 1}: "
                           "the model or its inputs are broken (non-finite features?). The run is not marked finished.")
        return value, loss

    selected = None  # weights the next stage starts from (the previous stage's selection)
    if start_stage > 0:
        selected = load_checkpoint(out_dir / "stage_start.pt", cfg.model)["model"] if (out_dir / "stage_start.pt").exists() else None
    for si in range(start_stage, len(proto["stages"])):
        stage = proto["stages"][si]
        resuming = state is not None and state["stage"] == si
        if not resuming and selected is not None:
            model.load_state_dict(selected)
        if not resuming and si > 0 and info.is_main:
            save_checkpoint(out_dir / "stage_start.pt", {"model": {k: v.cpu() for k, v in model.state_dict().items()},
                                                         "model_name": cfg.model, "stage": si})
        apply_freeze(model, stage["freeze"])
        net = model  # wrapped per stage: DDP registers the parameters that need a gradient when it is built
        if info.distributed:
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile:  # the training forward only (evaluation stays eager); fixed window shapes: no recompiles
            net = compile_step(net, device)
        optimizer = make_optimizer(model, stage)
        sampler = ddp.GlobalBatchSampler(train_set, stage["batch_size"], num_replicas=info.world_size, rank=info.rank,
                                         seed=cfg.seed * 100_003 + si)  # data order depends on (seed, stage, epoch) only
        steps = len(sampler.global_batches())
        factor = lr_factor(stage["schedule"], stage["optimizer"]["lr"], steps, stage["epochs"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        plateau_on_loss = stage["schedule"]["monitor"] == "loss"
        plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max" if higher and not plateau_on_loss else "min",
                                                              factor=stage["schedule"]["factor"],
                                                              patience=stage["schedule"]["patience"])
                   if stage["schedule"]["name"] == "plateau" else None)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        loss_fn = LOSSES[task.kind]
        loss_opts = check_loss_options(loss_fn, stage["loss"], f"stage {stage['name']!r}")
        es = stage["early_stopping"]
        # the epoch is selected on the selection part's task metric or loss (select_by); early stopping
        # watches its own monitor (e.g. Keras-style: stop on the loss, keep the best accuracy)
        sel_up = higher and proto["select_by"] == "metric"
        stop_up = es is not None and higher and es["monitor"] == "metric"
        best, best_epoch, best_state, start_epoch = (-math.inf if sel_up else math.inf), -1, None, 0
        stop_best, bad = (-math.inf if stop_up else math.inf), 0
        if resuming:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if plateau is not None and state.get("plateau"):
                plateau.load_state_dict(state["plateau"])
            if amp and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_epoch, best, best_epoch = state["epoch"] + 1, state["best"], state["best_epoch"]
            stop_best, bad = state["stop_best"], state["bad"]
            ranks = state.get("rng_ranks") or [state["rng"]]
            _set_rng_state(ranks[info.rank] if len(ranks) == info.world_size else ranks[0])
            if (out_dir / "best.pt").exists():
                saved = load_checkpoint(out_dir / "best.pt", cfg.model)
                best_state = saved["model"] if saved.get("stage") == si else None
            state = None
        stopped = False
        for epoch in range(start_epoch, stage["epochs"]):
            if stopped:
                break
            sampler.set_epoch(epoch)
            sizes = sampler.real_sizes()
            loader = DataLoader(train_set, batch_sampler=sampler.local_batches(), collate_fn=collate,
                                num_workers=cfg.num_workers,  # workers' seeds from (seed, epoch), not the global RNG
                                generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            set_train_mode(net, stage["freeze"])
            total, n = 0.0, 0
            bar = tqdm(loader, desc=f"{cfg.model} {stage['name']} epoch {epoch + 1}/{stage['epochs']}", leave=False, disable=not show)
            for step, batch in enumerate(bar):
                b = to_device(batch, device)
                inputs = []
                for s in streams:
                    x = b[s]
                    if s in PIXEL_STREAMS and stage["augment"]:
                        x = augment(x, stage["augment"], step_seed(cfg.seed, si, epoch, step * info.world_size + info.rank))
                    inputs.append(x)
                with torch.autocast("cuda", enabled=amp):
                    out = _forward(net, inputs, cfg.compile)
                out = ddp.gather_batch(out, sizes[step], info.rank, keep_grad=True)
                y = ddp.gather_batch(b["y"], sizes[step], info.rank, keep_grad=False)
                valid = ddp.gather_batch(b["valid"], sizes[step], info.rank, keep_grad=False)
                loss = loss_fn(out, y, valid, **loss_opts)  # the global batch's loss, as in one process
                if not torch.isfinite(loss):
                    raise RunError(f"the training loss is {float(loss.detach())} at stage {stage['name']!r} epoch {epoch + 1} step "
                                   f"{step + 1}: check the inputs (non-finite features or labels) or lower the learning "
                                   "rate. The run is not marked finished.")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss * info.world_size).backward()  # DDP averages: × world size gives the sum
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                total += float(loss.detach()) * len(y)
                n += len(y)
                bar.set_postfix(loss=f"{total / max(n, 1):.4f}")
            lr = optimizer.param_groups[0]["lr"]
            row = {"epoch": len(history) + 1, "stage": stage["name"], "stage_epoch": epoch + 1,
                   "train_loss": total / max(n, 1), "val_loss": None, f"val_{primary}": None, "lr": lr}
            improved = False
            if select_set is not None:
                metric_value, row["val_loss"] = evaluate(select_set, loss_fn, loss_opts)
                row[f"val_{primary}"] = metric_value
                value = row["val_loss"] if proto["select_by"] == "loss" else metric_value
                improved = value > best if sel_up else value < best
                if improved:
                    best, best_epoch = value, len(history) + 1
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                if es is not None:
                    watched = row["val_loss"] if es["monitor"] == "loss" else metric_value
                    if watched > stop_best + es["min_delta"] if stop_up else watched < stop_best - es["min_delta"]:
                        stop_best, bad = watched, 0
                    else:
                        bad += 1
                if plateau is not None:
                    plateau.step(row["val_loss"] if plateau_on_loss else metric_value)
                stopped = es is not None and bad >= es["patience"]
            history.append(row)
            rngs = ddp.gather_objects(_rng_state())
            if info.is_main:
                if improved:
                    save_checkpoint(out_dir / "best.pt", {"model": best_state, "model_name": cfg.model,
                                                          "stage": si, "epoch": epoch})
                _write_history(out_dir / "history.csv", history)
                save_checkpoint(ckpt_path, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "plateau": plateau.state_dict() if plateau is not None else None,
                    "scaler": scaler.state_dict() if amp else None, "stage": si,
                    "epoch": stage["epochs"] - 1 if stopped else epoch, "best": best, "best_epoch": best_epoch,
                    "stop_best": stop_best, "bad": bad, "history": history, "rng": rngs[0], "rng_ranks": rngs, "model_name": cfg.model,
                    "world_size": info.world_size,
                })
            if show:
                shown = "" if row[f"val_{primary}"] is None else f"  select {primary} {row[f'val_{primary}']:.4f}"
                tqdm.write(f"{stage['name']} epoch {epoch + 1}: train loss {row['train_loss']:.4f}{shown}"
                           + ("  (early stop)" if stopped else ""))
        restore = parts.select is not None and (es is None or es["restore_best"])
        if restore and best_state is not None:
            model.load_state_dict(best_state)
        selected = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if info.is_main:
            save_checkpoint(out_dir / "best.pt", {"model": selected, "model_name": cfg.model, "stage": si,
                                                  "epoch": best_epoch if restore else len(history)})
        last_best_epoch = best_epoch if restore and best_state is not None else len(history)
    report, table = score(task, report_set, *predict_sharded(model, report_set, eval_batch, device, streams, amp, info,
                                                             cfg.num_workers, classify=classify))
    bad_metrics = [k for k, v in report.items() if v is None or (isinstance(v, float) and not math.isfinite(v))]
    if primary in bad_metrics:
        raise RunError(f"the {primary} on the reported part is not finite ({report[primary]}); the run is not marked "
                       "finished. Check the inputs (non-finite features?) and the labels of that part.")
    if report_set.left_out and info.is_main:
        print(f"note: {len(report_set.left_out)} of the {len(parts.report)} samples of the reported part have no "
              f"observed input in some stream (e.g. {report_set.left_out[0]!r}: no face crop, empty transcript, …) and "
              "are not scored; metrics.json counts them (left_out), failures.csv says why.", file=sys.stderr)
    result = {"status": "finished", "best_epoch": last_best_epoch, "select_on": parts.rule, "metric": primary,
              "left_out": len(report_set.left_out),
              "reported_part": parts.report_name, "metrics": report, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if info.is_main:
        write_parquet(out_dir / "predictions.parquet", table)
        if task.kind.endswith("classification"):
            write_confusion(out_dir, table["true"].to_numpy(), table["pred"].to_numpy(), class_names(ws, cfg.dataset, task))
        write_json(metrics_path, result)
    ddp.barrier()  # every rank leaves after rank 0 has written the run's files
    return result


def _write_history(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
