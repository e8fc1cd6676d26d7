"""Datasets: raw layout → manifest. ``prepare_dataset`` writes a dataset's stage files atomically."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import h5py
import numpy as np
import polars as pl

from emotk import __version__
from emotk.atomic import write_hdf5, write_json, write_parquet
from emotk.datasets.base import (
    DATASETS,
    SAMPLE_ID_PATTERN,
    SAMPLE_ID_RULE,
    DatasetSpec,
    Prepared,
    Task,
    check_options,
    failure,
    register_dataset,
    sample_id_problem,
)
from emotk.errors import DatasetError, WorkspaceError
from emotk.workspace import Workspace, validate_manifest, write_failures

# Modules that register datasets; add one line per new dataset module.
_MODULES = [
    "emotk.datasets.affwild2",
    "emotk.datasets.emoreact",
    "emotk.datasets.afewva",
    "emotk.datasets.fer2013",
    "emotk.datasets.ckplus",
    "emotk.datasets.jaffe",
    "emotk.datasets.iemocap",
    "emotk.datasets.mosei",
]

__all__ = ["DATASETS", "DatasetSpec", "Prepared", "Task", "failure", "register_dataset", "get_dataset", "prepare_dataset",
           "read_frame_labels", "SAMPLE_ID_PATTERN", "sample_id_problem"]


def _load_all() -> None:
    for mod in _MODULES:
        importlib.import_module(mod)


def get_dataset(name: str) -> DatasetSpec:
    _load_all()
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}. Supported: {', '.join(sorted(DATASETS))} (see `emotk datasets`).")
    return DATASETS[name]


def prepare_dataset(ws: Workspace, name: str, raw_root: str | Path, **options) -> tuple[pl.DataFrame, list[dict]]:
    """Run the dataset's reader and write manifest.parquet, labels.h5, dataset.json, failures.csv.

    Options are checked (names, choices, ranges) before anything is written. Every sample id the
    reader returns must fit :data:`SAMPLE_ID_PATTERN` (readers skip raw names that do not, listing
    them in failures.csv); one that still does not fit here is a reader bug, refused as a DatasetError.
    """
    spec = get_dataset(name)
    raw_root = Path(raw_root).expanduser()
    if not raw_root.is_dir():
        raise DatasetError(
            f"raw root {raw_root} is not a folder. Pass --root pointing at the {spec.title} release as distributed "
            f"(see `emotk datasets` for the expected layout)."
        )
    check_options(spec, options)
    if spec.precheck is not None:
        spec.precheck(raw_root.resolve(), dict(options))
    ws.ensure()
    out_dir = ws.dataset_dir(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared: Prepared = spec.prepare(raw_root.resolve(), out_dir, **options)
    if not prepared.rows:
        raise DatasetError(
            f"no usable samples found under {raw_root} for {spec.title}. Expected layout:\n{spec.layout}"
        )
    check_sample_ids(prepared, spec.title)
    manifest = validate_manifest(pl.DataFrame(prepared.rows, infer_schema_length=None), f"{name} manifest")
    if prepared.frame_labels:
        write_frame_labels(ws.labels_path(name), prepared.frame_labels, prepared.label_names)
    write_failures(ws.failures_path(name), prepared.failures)
    write_json(ws.info_path(name), {
        "dataset": name, "raw_root": str(raw_root.resolve()), "options": options, "emotk_version": __version__,
        "prepared_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "label_names": list(prepared.label_names),
        "task": spec.task.__dict__, **prepared.info,
    })
    write_parquet(ws.manifest_path(name), manifest)  # last: its presence marks the dataset prepared
    return manifest, prepared.failures


def write_frame_labels(path: Path, labels: dict[str, np.ndarray], names: tuple[str, ...]) -> None:
    """labels.h5, built in memory and written atomically (a full disk is a DiskFullError, never an HDF5 crash)."""
    def fill(f: h5py.File) -> None:
        f.attrs["label_names"] = list(names)
        f.attrs["emotk_version"] = __version__
        for sid, arr in labels.items():
            f.create_dataset(sid, data=np.asarray(arr, dtype=np.float32))

    write_hdf5(path, fill, what="the frame labels")


def check_sample_ids(prepared: Prepared, title: str) -> None:
    """Every manifest row's and labels entry's sample id fits :data:`SAMPLE_ID_PATTERN` (DatasetError otherwise)."""
    for sid, where in [(r.get("sample_id"), r.get("source") or r.get("media")) for r in prepared.rows] + [
            (sid, "labels") for sid in prepared.frame_labels]:
        problem = sample_id_problem(sid)
        if problem:
            raise DatasetError(
                f"{title}: sample id {sid!r} (from {where}) cannot be used: {problem}. Sample ids must be "
                f"{SAMPLE_ID_RULE}. Rename the file or folder it comes from, then run prepare again."
            )


def read_frame_labels(path: Path, sample_ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """Per-frame labels ``{sample_id: [T, L] float32}`` from labels.h5 (all of them, or ``sample_ids``).

    A file that is not HDF5, lacks a requested sample, or holds an array that is not ``[T, L]`` with
    ``L`` = the number of its ``label_names`` raises WorkspaceError saying to run prepare again.
    """
    path = Path(path)
    again = "run `emotk prepare` for this dataset again to rewrite it"
    if not path.is_file():
        raise WorkspaceError(f"{path} is missing; {again}.")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        detail = " ".join(str(exc).split())[:160]
        raise WorkspaceError(f"{path} is not a readable HDF5 labels file ({detail}); {again}.") from None
    with f:
        names = f.attrs.get("label_names")
        n_labels = len(names) if names is not None else None
        ids = sample_ids if sample_ids is not None else list(f.keys())
        missing = [sid for sid in ids if sid not in f]
        if missing:
            raise WorkspaceError(f"{path} has no labels for {len(missing)} sample(s) of the manifest "
                                 f"(e.g. {missing[0]!r}); {again}.")
        out = {}
        for sid in ids:
            node = f[sid]
            if not isinstance(node, h5py.Dataset):
                raise WorkspaceError(f"{path}: entry {sid!r} is not an array; {again}.")
            try:
                arr = np.asarray(node[()], dtype=np.float32)
            except (OSError, TypeError, ValueError) as exc:
                raise WorkspaceError(f"{path}: entry {sid!r} cannot be read as numbers ({exc}); {again}.") from None
            if arr.ndim != 2 or (n_labels is not None and arr.shape[1] != n_labels):
                want = f"[frames, {n_labels}]" if n_labels is not None else "[frames, labels]"
                raise WorkspaceError(f"{path}: labels of {sid!r} have shape {list(arr.shape)}, expected {want}; {again}.")
            out[sid] = arr
        return out


def summary_lines(summary: dict) -> list[str]:
    """A dataset's prepare summary (``Prepared.info["summary"]``) as short lines: counts per class and the
    like as ``name: a 3, b 2``; plain counts joined on one line."""
    lines, plain = [], []
    for key, value in summary.items():
        label = key.replace("_", " ")
        if isinstance(value, dict):
            lines.append(f"{label}: " + (", ".join(f"{k} {v}" for k, v in value.items()) or "none"))
        else:
            plain.append(f"{label} {value}")
    return lines + ([" · ".join(plain)] if plain else [])
