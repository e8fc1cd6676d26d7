"""The training loop and its run directory.

``train_run(ws, TrainConfig(...))`` trains one (model, split part, seed) and writes, atomically::

    config.json          every option, input file fingerprints, versions, the protocol
    checkpoint.pt        last epoch: model, optimizer, scheduler, RNG states of every rank (for resuming)
    best.pt              the epoch with the best validation score
    history.csv          one row per epoch
    metrics.json         held-out metrics of best.pt, {"status": "finished", ...}
    predictions.parquet  per frame (frame tasks) or per clip

Resuming: a run directory holding ``checkpoint.pt`` but no finished ``metrics.json`` is continued
from its last epoch automatically (``resume=True``, the default; ``emotk train --no-resume`` refuses
instead), provided its saved configuration matches the request (options that change results, and
the fingerprints of the input files); otherwise :class:`RunError` says what differs. Data order
depends on (seed, epoch) only, and the checkpoint restores model, optimizer, scheduler, GradScaler
and the Python/NumPy/torch (CPU and CUDA) RNG states of every rank, so on CPU a resumed run ends
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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from emotk import __version__, metrics
from emotk.atomic import atomic_path, file_sha256, write_json, write_parquet
from emotk.datasets import get_dataset
from emotk.datasets.base import Task
from emotk.errors import EmotkError, RunError, SplitError
from emotk.models import build, find_preset
from emotk.splits import check, read_split
from emotk import distributed as ddp
from emotk.train.data import WINDOW_BUILDERS, WindowDataset, collate, load_samples
from emotk.train.losses import LOSSES
from emotk.workspace import Workspace


@dataclass
class TrainConfig:
    model: str
    dataset: str
    features: str
    split: str
    fold: int | None = None  # k-fold part to hold out; None for an official split
    size: str | None = None
    seed: int = 1
    epochs: int = 10
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.0
    seq_len: int | None = None  # None: the dataset task's default
    device: str | None = None
    num_workers: int = 0
    amp: bool = True  # used on CUDA only
    allow_leak: bool = False
    model_options: dict = field(default_factory=dict)
    runs_dir: str | None = None

    def __post_init__(self):
        if self.size is None:  # name the preset actually used: run folders and tables say e.g. gru-sm
            preset = find_preset(self.model, None, self.dataset)
            self.size = preset.size if preset else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_dir(ws: Workspace, cfg: TrainConfig) -> Path:
    root = Path(cfg.runs_dir) if cfg.runs_dir else ws.runs_dir()
    part = "official" if cfg.fold is None else f"fold{cfg.fold}"
    return root / cfg.dataset / f"{cfg.model}-{cfg.size or 'default'}" / cfg.split / f"{part}-seed{cfg.seed}"


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


def select_parts(ws: Workspace, cfg: TrainConfig) -> tuple[list[str], list[str], str]:
    """Train and validation sample ids of the split part, after the leakage check; and the protocol name."""
    split = read_split(ws, cfg.dataset, cfg.split)
    if not cfg.allow_leak:
        try:
            check(split, f"split {cfg.split!r}")
        except SplitError as exc:
            raise SplitError(f"{exc}\n(train refuses leaking splits; --allow-leak overrides)") from None
    if "fold" in split.columns:
        folds = sorted(split["fold"].unique().to_list())
        if cfg.fold is None or cfg.fold not in folds:
            raise SplitError(f"split {cfg.split!r} has folds {folds}; pass --fold K (or --fold all).")
        train = split.filter(pl.col("fold") != cfg.fold)["sample_id"].to_list()
        val = split.filter(pl.col("fold") == cfg.fold)["sample_id"].to_list()
        protocol = f"{cfg.split}: subject {len(folds)}-fold, held-out fold"
    else:
        if cfg.fold is not None:
            raise SplitError(f"split {cfg.split!r} is an official split (no folds); drop --fold.")
        train = split.filter(pl.col("split") == "train")["sample_id"].to_list()
        val = split.filter(pl.col("split") == "validation")["sample_id"].to_list()
        protocol = f"{cfg.split}: train → validation"
    if not train or not val:
        raise SplitError(f"split {cfg.split!r} gives {len(train)} training and {len(val)} validation samples; both must be non-empty.")
    return train, val, protocol


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
    except Exception as exc:
        raise RunError(f"{path} is not a readable emotk checkpoint ({str(exc)[:160]}); delete it to start over.") from None
    if model_name is not None and payload.get("model_name") != model_name:
        raise RunError(f"{path} holds a {payload.get('model_name')!r} model, not {model_name!r}; "
                       "use another run directory or delete the checkpoint.")
    return payload


def predict(model, loader, device, task: Task, amp: bool) -> tuple[list, list, list]:
    """Model outputs, targets and validity for every window of ``loader``, on the CPU."""
    model.eval()
    outs, ys, valids = [], [], []
    with torch.inference_mode():
        for x, y, valid, _ in loader:
            with torch.autocast("cuda", enabled=amp and device.type == "cuda"):
                out = model(x.to(device))
            outs.append(out.float().cpu())
            ys.append(y)
            valids.append(valid)
    return outs, ys, valids


def predict_sharded(model, dataset, batch_size: int, device, task: Task, amp: bool, info: ddp.DistInfo,
                    num_workers: int = 0) -> tuple[list, list, list]:
    """:func:`predict` over ``dataset`` split contiguously across ranks, gathered in order on every rank."""
    if not info.distributed:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
        return predict(model, loader, device, task, amp)
    sizes = ddp.shard_sizes(len(dataset), info.world_size)
    start = sum(sizes[:info.rank])
    part = Subset(dataset, range(start, start + sizes[info.rank]))
    loader = DataLoader(part, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers)
    mine = predict(model, loader, device, task, amp) if len(part) else ([], [], [])
    outs, ys, valids = [], [], []
    for o, y, v in ddp.gather_objects(mine):
        outs += o
        ys += y
        valids += v
    return outs, ys, valids


def score(task: Task, dataset: WindowDataset, outs, ys, valids) -> tuple[dict, pl.DataFrame]:
    """Metrics of the task and a predictions table (per frame or per clip)."""
    out, y, valid = torch.cat(outs), torch.cat(ys), torch.cat(valids)
    w = dataset.windows
    sids = np.asarray(dataset.samples.ids)[w.sample]
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


def _out_dim(task: Task) -> int:
    return task.n_classes if task.kind.endswith("classification") else len(task.targets)


def _macs(model, in_dim: int, seq_len: int) -> int | None:
    """True MACs of one forward pass at the paper's sequence length (for the report's MACs column)."""
    from emotk.models.counting import count_macs

    try:
        return int(count_macs(model, in_dim, seq_len))
    except Exception:  # counting is informative only; never fail a run over it
        return None


def build_model(cfg: TrainConfig, task: Task, in_dim: int):
    return build(cfg.model, cfg.size, cfg.dataset, in_dim=in_dim, out_dim=_out_dim(task), head=task.head, **cfg.model_options)


#: Options whose change makes a saved checkpoint a different experiment (checked before resuming).
RESUME_KEYS = ("model", "dataset", "features", "split", "fold", "size", "seed", "epochs", "batch_size", "lr",
               "weight_decay", "seq_len", "model_options")


def _resume_conflicts(saved: dict, config: dict) -> list[str]:
    diffs = [f"{k}: run has {saved.get(k)!r}, asked {config.get(k)!r}" for k in RESUME_KEYS
             if json.dumps(saved.get(k), sort_keys=True) != json.dumps(config.get(k), sort_keys=True)]
    for k, v in config["inputs"].items():
        if saved.get("inputs", {}).get(k) != v:
            diffs.append(f"input file {k} changed since the run started")
    return diffs


def _decide(out_dir: Path, cfg: TrainConfig, config: dict, resume: bool) -> tuple[str, dict | None]:
    """('finished', metrics) | ('resume', None) | ('fresh', None); raises RunError when a run cannot continue."""
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
    load_checkpoint(ckpt_path, cfg.model)  # a checkpoint of another model or an unreadable one: RunError now
    saved_path = out_dir / "config.json"
    if saved_path.exists():
        try:
            saved = json.loads(saved_path.read_text())
        except ValueError:
            raise RunError(f"{saved_path} is not valid JSON; delete the run folder {out_dir} to start over.") from None
        diffs = _resume_conflicts(saved, config)
        if diffs:
            raise RunError(f"{out_dir} holds an unfinished run with other settings ({'; '.join(diffs)}). "
                           "Run with its settings to continue it, pass --runs DIR to train elsewhere, "
                           "or delete the folder to start over.")
    return "resume", None


def train_run(ws: Workspace, cfg: TrainConfig, resume: bool = True, progress: bool = True) -> dict:
    """Train one run; returns the contents of metrics.json. Finished runs are returned untouched.

    An unfinished run (checkpoint.pt present) is continued when ``resume`` (the default) and its saved
    settings match; with ``resume=False`` it is an error. Under torchrun every rank calls this.
    """
    info = ddp.init(cfg.device)
    out_dir = run_dir(ws, cfg)
    ckpt_path = out_dir / "checkpoint.pt"
    metrics_path = out_dir / "metrics.json"
    task = get_dataset(cfg.dataset).task
    seq_len = cfg.seq_len or task.seq_len
    inputs = {
        "manifest": fingerprint(ws.manifest_path(cfg.dataset)),
        "labels": fingerprint(ws.labels_path(cfg.dataset)),
        "features": _store_fingerprint(ws.feature_path(cfg.dataset, cfg.features)),
        "split": fingerprint(ws.split_path(cfg.dataset, cfg.split)),
    }
    request = {**asdict(cfg), "seq_len": seq_len, "inputs": inputs}
    # rank 0 decides (finished / resume / fresh) and every rank follows; an error is raised on every rank
    decision = ddp.broadcast_object(_safe(lambda: _decide(out_dir, cfg, request, resume)) if info.is_main else None)
    if isinstance(decision, EmotkError):
        raise decision
    mode, done = decision
    if mode == "finished":
        return done

    train_ids, val_ids, protocol = select_parts(ws, cfg)
    seed_everything(cfg.seed)
    build_windows = WINDOW_BUILDERS[task.kind]
    train_samples = load_samples(ws, cfg.dataset, cfg.features, train_ids, task)
    val_samples = load_samples(ws, cfg.dataset, cfg.features, val_ids, task)
    train_set = WindowDataset(train_samples, build_windows(train_samples, seq_len), task)
    val_set = WindowDataset(val_samples, build_windows(val_samples, seq_len), task)

    device = ddp.device_for(info, cfg.device)
    amp = cfg.amp and device.type == "cuda"
    model = build_model(cfg, task, train_samples.dim)  # same seed on every rank: same initial weights
    if info.distributed and device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    net = model
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if info.rank > 0:  # dropout masks differ across ranks (rank 0 keeps the single-process stream)
        torch.manual_seed(cfg.seed + 1_000_003 * info.rank)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = LOSSES[task.kind]
    primary = task.metric
    preset = find_preset(cfg.model, cfg.size, cfg.dataset)

    config = {
        **asdict(cfg), "run_dir": str(out_dir), "protocol": protocol, "metric": primary, "task": asdict(task),
        "seq_len": seq_len, "params": sum(p.numel() for p in model.parameters()),
        "macs": _macs(model, train_samples.dim, preset.seq_len if preset and preset.seq_len else seq_len),
        "macs_seq_len": preset.seq_len if preset and preset.seq_len else seq_len,
        "preset": None if preset is None else {"size": preset.size, "dataset": preset.dataset, "config": preset.config},
        "n_train_samples": len(train_ids), "n_val_samples": len(val_ids),
        "n_train_windows": len(train_set), "n_val_windows": len(val_set),
        "inputs": inputs,
        "versions": {"emotk": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "emotk_version": __version__, "device": str(device), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "world_size": info.world_size, "backend": info.backend,
        "global_batch_size": cfg.batch_size,
    }
    start_epoch, best, best_epoch, history = 0, -math.inf, -1, []
    best_state = None
    if mode == "resume":
        state = load_checkpoint(ckpt_path, cfg.model)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if amp and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, best, best_epoch, history = state["epoch"] + 1, state["best"], state["best_epoch"], state["history"]
        ranks = state.get("rng_ranks") or [state["rng"]]
        _set_rng_state(ranks[info.rank] if len(ranks) == info.world_size else ranks[0])
        if (out_dir / "best.pt").exists():
            best_state = load_checkpoint(out_dir / "best.pt", cfg.model)["model"]
    elif info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "best.pt").unlink(missing_ok=True)  # left by a run killed before its first checkpoint
        write_json(out_dir / "config.json", config)

    sampler = ddp.GlobalBatchSampler(train_set, cfg.batch_size, num_replicas=info.world_size, rank=info.rank,
                                     seed=cfg.seed * 100_003)  # data order depends on (seed, epoch) only
    val_batch = max(cfg.batch_size, 64)
    show = progress and info.is_main
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(epoch)
        sizes = sampler.real_sizes()
        train_loader = DataLoader(train_set, batch_sampler=sampler.local_batches(), collate_fn=collate,
                                  num_workers=cfg.num_workers,  # workers' seeds from (seed, epoch), not the global RNG
                                  generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
        net.train()
        total, n = 0.0, 0
        bar = tqdm(train_loader, desc=f"{cfg.model} epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not show)
        for step, (x, y, valid, _) in enumerate(bar):
            x, y, valid = x.to(device), y.to(device), valid.to(device)
            with torch.autocast("cuda", enabled=amp):
                out = net(x)
            out = ddp.gather_batch(out, sizes[step], info.rank, keep_grad=True)
            y = ddp.gather_batch(y, sizes[step], info.rank, keep_grad=False)
            valid = ddp.gather_batch(valid, sizes[step], info.rank, keep_grad=False)
            loss = loss_fn(out, y, valid)  # the global batch's loss, as in one process
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss * info.world_size).backward()  # DDP averages: × world size gives the sum
            scaler.step(optimizer)
            scaler.update()
            total += float(loss.detach()) * len(y)
            n += len(y)
            bar.set_postfix(loss=f"{total / max(n, 1):.4f}")
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        report, _ = score(task, val_set, *predict_sharded(model, val_set, val_batch, device, task, amp, info, cfg.num_workers))
        value = ddp.broadcast_object(report[primary])
        history.append({"epoch": epoch + 1, "train_loss": total / max(n, 1), f"val_{primary}": value, "lr": lr})
        improved = not math.isnan(value) and value > best
        if improved:
            best, best_epoch = value, epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        rngs = ddp.gather_objects(_rng_state())
        if info.is_main:
            if improved:
                save_checkpoint(out_dir / "best.pt", {"model": best_state, "model_name": cfg.model, "epoch": epoch})
            _write_history(out_dir / "history.csv", history)
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if amp else None,
                "epoch": epoch, "best": best, "best_epoch": best_epoch, "history": history, "rng": rngs[0],
                "rng_ranks": rngs, "model_name": cfg.model, "world_size": info.world_size,
            })
        if show:
            tqdm.write(f"epoch {epoch + 1}: train loss {total / max(n, 1):.4f}  val {primary} {value:.4f}")

    if best_state is not None:
        model.load_state_dict(best_state)
    report, table = score(task, val_set, *predict_sharded(model, val_set, val_batch, device, task, amp, info, cfg.num_workers))
    result = {"status": "finished", "best_epoch": best_epoch, "metric": primary, "metrics": report,
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if info.is_main:
        write_parquet(out_dir / "predictions.parquet", table)
        write_json(metrics_path, result)
    ddp.barrier()  # every rank leaves after rank 0 has written the run's files
    return result


def _safe(fn):
    """fn()'s result, or the EmotkError it raised (to broadcast it to every rank)."""
    try:
        return fn()
    except EmotkError as exc:
        return exc


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


def _write_history(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
