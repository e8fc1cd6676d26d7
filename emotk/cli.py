"""The ``emotk`` command line: parses options and calls the library; user errors exit 2 without a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from emotk.errors import EmotkError

app = typer.Typer(
    help="emotk: emotion-recognition research from raw datasets to paper tables.\n\n"
         "Stages: prepare → extract → split → train → report. Try `emotk demo`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)

WorkspaceOpt = typer.Option(None, "--workspace", "-w", envvar="EMOTK_WORKSPACE",
                            help="Workspace folder [default: ./emotk-data].")
DatasetOpt = typer.Option(None, "--dataset", "-d", help="Dataset in the workspace (implied when only one is prepared).")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bars.")


def _ws(path: Optional[Path]):
    from emotk.workspace import Workspace

    return Workspace.open(path)


def _table(frame, fmt: str = "table") -> str:
    if fmt == "csv":
        return frame.write_csv()
    if fmt == "json":
        return json.dumps(frame.to_dicts(), indent=2, default=str)
    import polars as pl

    with pl.Config(tbl_rows=-1, tbl_cols=-1, tbl_width_chars=200, tbl_hide_dataframe_shape=True,
                   tbl_hide_column_data_types=True, fmt_str_lengths=60):
        return str(frame)


@app.command()
def datasets():
    """List supported datasets, their expected raw layout and splits.

    Example: emotk datasets
    """
    from emotk.datasets import DATASETS, _load_all

    _load_all()
    for spec in DATASETS.values():
        typer.echo(f"{spec.name}: {spec.title}\n  task: {spec.task.kind} ({', '.join(spec.task.targets)}), metric {spec.task.metric}")
        typer.echo(f"  splits: {spec.splits}\n  layout:")
        typer.echo("\n".join("    " + line for line in spec.layout.splitlines()) + "\n")


@app.command()
def prepare(
    dataset: str = typer.Argument(..., help="Dataset name (see `emotk datasets`)."),
    root: Path = typer.Option(..., "--root", "-r", help="Raw dataset folder, as distributed."),
    faces: str = typer.Option("provided", help="Face crops: 'provided' (the release's crops) or 'detect' (crop from videos)."),
    detector: Optional[str] = typer.Option(None, help="Face detector for videos: haar (default), center (see docs/faces.md)."),
    face_size: Optional[int] = typer.Option(None, help="Side of the square face crops, pixels [default: 112]."),
    every: Optional[int] = typer.Option(None, help="Run the face detector on every n-th frame, track in between [default: 5]."),
    max_carry: Optional[int] = typer.Option(None, help="Frames a lost face's last box is carried before frames count as no-face."),
    decoder: Optional[str] = typer.Option(None, help="Video decoder: auto (decord, PyAV fallback), decord or av."),
    mood_rule: Optional[str] = typer.Option(None, help="AFEW-VA mood from valence: mean (default) or majority."),
    mood_neutral_band: Optional[float] = typer.Option(None, help="AFEW-VA: |valence| within this band is neutral mood."),
    workspace: Optional[Path] = WorkspaceOpt,
    quiet: bool = QuietOpt,
):
    """Read a raw dataset, crop faces where needed, write the manifest.

    Example: emotk prepare affwild2 --root /data/ABAW
    """
    from emotk.datasets import prepare_dataset

    ws = _ws(workspace)
    given = {"faces": faces if faces != "provided" else None, "detector": detector, "face_size": face_size,
             "every": every, "max_carry": max_carry, "decoder": decoder, "mood_rule": mood_rule,
             "mood_neutral_band": mood_neutral_band}
    options = {k: v for k, v in given.items() if v is not None}
    options["progress"] = not quiet
    manifest, failures = prepare_dataset(ws, dataset, root, **options)
    typer.echo(f"prepared {dataset}: {manifest.height} samples, {manifest['subject'].n_unique()} subjects → {ws.manifest_path(dataset)}")
    if failures:
        typer.echo(f"{len(failures)} problems listed in {ws.failures_path(dataset)}")


@app.command()
def extract(
    encoder: str = typer.Option("regnet_y_400mf", help="Any torchvision classification model; penultimate features are kept."),
    weights: str = typer.Option("imagenet", help="'imagenet' (torchvision's), 'none' (random, offline tests) or a state-dict file."),
    name: Optional[str] = typer.Option(None, help="Feature cache name [default: the encoder name]."),
    image_size: int = typer.Option(224, help="Crops are resized to this side."),
    batch_size: int = typer.Option(64, help="Frames per encoder batch."),
    num_workers: int = typer.Option(2, help="DataLoader processes decoding images."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 … [default: cuda when present]."),
    every: int = typer.Option(1, help="Encode every n-th frame only (the others are masked)."),
    fps: Optional[float] = typer.Option(None, help="Encode about this many frames per second of each video (others masked)."),
    flush_frames: int = typer.Option(4096, help="Frames buffered before a part file is written (a kill loses at most these)."),
    nproc: int = typer.Option(1, help="Processes on this machine (launches torchrun; one GPU each when present)."),
    dataset: Optional[str] = DatasetOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    quiet: bool = QuietOpt,
):
    """Cache frame features of every sample to features/<name>.h5 (resumable, crash-safe).

    Under torchrun (or with --nproc N) the samples are shared out across processes, each writing
    its own part files; rank 0 merges them.

    Example: emotk extract --encoder regnet_y_400mf --weights imagenet
    """
    from emotk.features.extract import extract_frames
    from emotk import distributed

    ws = _ws(workspace)
    ds = ws.resolve_dataset(dataset)
    if nproc > 1 and not distributed.env_info().distributed:
        raise typer.Exit(distributed.launch(nproc, distributed.strip_option(sys.argv[1:], "--nproc")))
    summary = extract_frames(ws, ds, encoder=encoder, weights=weights, name=name, image_size=image_size,
                             batch_size=batch_size, num_workers=num_workers, device=device, every=every, fps=fps,
                             progress=not quiet, flush_frames=flush_frames)
    if distributed.is_main():
        typer.echo("\n".join(summary.lines()))


@app.command()
def split(
    by: str = typer.Option("subject", help="Grouping for k-fold: 'subject'."),
    folds: int = typer.Option(5, help="Number of folds."),
    official: bool = typer.Option(False, "--official", help="Write the dataset's own train/validation/test split instead."),
    pool: Optional[str] = typer.Option(None, help="Make folds only within this official split (e.g. train, as NAC-TCN on AffWild2)."),
    seed: int = typer.Option(0, help="Seed of the subject shuffle."),
    name: Optional[str] = typer.Option(None, help="Split name [default: subject-k5, official, …]."),
    check: Optional[str] = typer.Option(None, "--check", help="Check an existing split for subject leakage (exit 2 on a leak)."),
    dataset: Optional[str] = DatasetOpt,
    workspace: Optional[Path] = WorkspaceOpt,
):
    """Make subject-disjoint folds or the official split; --check proves no subject leaks.

    Example: emotk split --by subject --folds 5 --pool train
    """
    from emotk import splits

    ws = _ws(workspace)
    ds = ws.resolve_dataset(dataset)
    if check:
        summary = splits.check_file(ws, ds, check)
        typer.echo(_table(summary))
        typer.echo(f"split {check!r}: no subject in two parts")
        return
    path, frame = splits.make_split(ws, ds, by="official" if official else by, folds=folds, seed=seed, pool=pool, name=name)
    col = "fold" if "fold" in frame.columns else "split"
    typer.echo(_table(frame.group_by(col).len().sort(col)))
    typer.echo(f"wrote {path}")


def _parse_ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise EmotkError(f"expected comma-separated integers, got {text!r}") from None


@app.command()
def train(
    model: str = typer.Argument(..., help="Model name (see `emotk models`)."),
    size: Optional[str] = typer.Option(None, help="Preset size: sm or lg (the prepared dataset's preset)."),
    split: Optional[str] = typer.Option(None, help="Split name [default: official if present, else the only split]."),
    fold: str = typer.Option("all", help="Held-out fold k, or 'all'. Ignored for official splits."),
    seeds: str = typer.Option("1", "--seeds", "--seed", help="Seed or comma-separated seeds, e.g. 1,2,3."),
    features: Optional[str] = typer.Option(None, help="Feature cache name [default: the only one]."),
    epochs: int = typer.Option(10, help="Epochs (NAC-TCN paper: 10)."),
    batch_size: int = typer.Option(16, help="Windows per batch."),
    lr: float = typer.Option(1e-3, help="Adam learning rate (cosine annealing to 0)."),
    weight_decay: float = typer.Option(0.0, help="Adam weight decay."),
    seq_len: Optional[int] = typer.Option(None, help="Frames per window [default: the dataset's, e.g. 256 for AffWild2]."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 … [default: cuda when present]."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue unfinished runs from their last checkpoint (default); --no-resume refuses them."),
    nproc: int = typer.Option(1, help="Data-parallel processes on this machine (launches torchrun; --batch-size stays the global batch)."),
    gpus: Optional[str] = typer.Option(None, help="Spread the fold × seed runs over these GPUs, one run each at a time, e.g. 0,1,2,3 ('cpu' slots run on the CPU)."),
    allow_leak: bool = typer.Option(False, "--allow-leak", help="Train even if the split puts a subject in two parts."),
    na_mode: Optional[str] = typer.Option(None, help="NAC-TCN attention window: causal (the paper) or lagged (the released code's pad-and-chomp)."),
    na_backend: Optional[str] = typer.Option(None, help="Neighborhood attention kernels: auto, torch or natten (CUDA, no positional bias)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Model option KEY=VALUE (JSON value), e.g. -o dilation_bug=true (see docs/models.md)."),
    runs: Optional[Path] = typer.Option(None, help="Runs folder [default: <workspace>/runs]."),
    dataset: Optional[str] = DatasetOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    quiet: bool = QuietOpt,
):
    """Train a model on cached features, every fold × seed; writes one run directory each.

    Finished runs are skipped and unfinished ones continue from their last checkpoint, so the same
    command run again after a crash does only what is left. --gpus runs independent runs in
    parallel, one per GPU; --nproc (or torchrun) trains each run data-parallel.

    Example: emotk train gru --split subject-k5-train --fold all --seeds 1,2,3
    """
    from emotk import distributed
    from emotk.train.loop import TrainConfig
    from emotk.train.schedule import parse_slots, run_all

    ws = _ws(workspace)
    ds = ws.resolve_dataset(dataset)
    feats = features or _only(ws.features_dir(ds), "*.h5", "feature cache", "emotk extract", "--features")
    split_name = split or _default_split(ws.splits_dir(ds))
    options = {}
    for item in option:
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    options.update({k: v for k, v in {"na_mode": na_mode, "na_backend": na_backend}.items() if v is not None})
    from emotk.models import model_info

    model_info(model)  # unknown model: a clear error before anything runs
    from emotk.splits import read_split

    table = read_split(ws, ds, split_name)
    folds = [None] if "fold" not in table.columns else (
        sorted(table["fold"].unique().to_list()) if fold == "all" else _parse_ints(fold))
    configs = [TrainConfig(model=model, dataset=ds, features=feats, split=split_name, fold=k, size=size, seed=s,
                           epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, seq_len=seq_len,
                           device=device, allow_leak=allow_leak, model_options=options,
                           runs_dir=str(runs) if runs else None)
               for s in _parse_ints(seeds) for k in folds]
    slots = parse_slots(gpus)
    if slots and (nproc > 1 or distributed.env_info().distributed):
        raise EmotkError("--gpus runs independent runs side by side; it cannot be combined with --nproc or torchrun.")
    if nproc > 1 and not distributed.env_info().distributed:
        from emotk.train.loop import select_parts

        for cfg in configs:  # user errors surface here, once, before any process starts
            select_parts(ws, cfg)
        raise typer.Exit(distributed.launch(nproc, distributed.strip_option(sys.argv[1:], "--nproc")))
    echo = typer.echo if distributed.is_main() else (lambda line: None)
    run_all(ws, configs, resume=resume, progress=not quiet, slots=slots, echo=echo)


def _only(folder: Path, pattern: str, what: str, command: str, option: str) -> str:
    names = sorted(p.stem for p in folder.glob(pattern)) if folder.is_dir() else []
    names += sorted(p.name[: -len(".parts")] for p in folder.glob("*.parts")) if folder.is_dir() else []
    names = sorted(set(names))
    if len(names) == 1:
        return names[0]
    if not names:
        raise EmotkError(f"no {what} in {folder}. Run `{command}` first.")
    raise EmotkError(f"several {what}s in {folder} ({', '.join(names)}): pass {option}.")


def _default_split(folder: Path) -> str:
    names = sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []
    if len(names) == 1:
        return names[0]
    if not names:
        raise EmotkError(f"no split in {folder}. Run `emotk split --official` or `emotk split --by subject` first.")
    raise EmotkError(f"several splits in {folder} ({', '.join(names)}): pass --split.")


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="A run directory written by `emotk train`."),
    part: Optional[str] = typer.Option(None, help="Official split part to score (e.g. validation) [default: the run's held-out part]."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda."),
    workspace: Optional[Path] = WorkspaceOpt,
):
    """Re-score a trained run's best checkpoint.

    Example: emotk evaluate emotk-data/runs/affwild2/gru-sm/official/official-seed1
    """
    from emotk.train.evaluate import evaluate_run

    report = evaluate_run(_ws(workspace), run, part=part, device=device)
    for k, v in report.items():
        typer.echo(f"{k:>20s}  {v:.4f}")


@app.command()
def report(
    runs: list[Path] = typer.Argument(None, help="Run folders to search [default: <workspace>/runs]."),
    metric: Optional[str] = typer.Option(None, help="Metric column, e.g. ccc, auc, acc [default: each run's primary]."),
    fmt: str = typer.Option("md", "--format", help="md, csv or latex."),
    plot: Optional[Path] = typer.Option(None, help="Also write training curves (PNG) into this folder."),
    out: Optional[Path] = typer.Option(None, help="Write the table to this file too."),
    workspace: Optional[Path] = WorkspaceOpt,
):
    """Paper-style table over runs: mean ± std across folds × seeds (never the best seed).

    Example: emotk report --metric ccc --format md
    """
    from emotk import report as rep
    from emotk.atomic import write_text

    paths = runs or [_ws(workspace).runs_dir()]
    frame = rep.collect(paths)
    metric = metric or rep.primary_metric(paths)
    text = rep.render(rep.summarize(frame, metric), metric, fmt)
    typer.echo(text)
    if out:
        write_text(out, text)
    if plot:
        written = rep.plot_curves(rep.find_runs(paths), plot)
        typer.echo(f"wrote {len(written)} plots to {plot}")


@app.command()
def models(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only presets of this dataset."),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
):
    """List every model with its sizes, parameters and MACs (ours and the paper's convention).

    Example: emotk models --dataset affwild2
    """
    from emotk.models.catalog import model_table

    typer.echo(_table(model_table(dataset), fmt))


@app.command()
def demo(
    workspace: Path = typer.Option(Path("emotk-demo"), "--workspace", "-w", help="Where to build the demo dataset and runs."),
    epochs: int = typer.Option(8, help="Training epochs."),
    quiet: bool = QuietOpt,
):
    """Build a small AffWild2-layout dataset from a real photo and run the whole chain on it (offline, CPU).

    Example: emotk demo
    """
    from emotk.demo import run_demo

    run_demo(Path(workspace), epochs=epochs, progress=not quiet, echo=typer.echo)


def main() -> None:
    try:
        app()
    except EmotkError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
