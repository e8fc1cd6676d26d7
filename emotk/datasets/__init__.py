"""Datasets: raw layout → manifest. ``prepare_dataset`` writes a dataset's stage files atomically."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import h5py
import numpy as np
import polars as pl

from emotk import __version__
from emotk.atomic import atomic_path, write_json, write_parquet
from emotk.datasets.base import DATASETS, DatasetSpec, Prepared, Task, failure, register_dataset
from emotk.errors import DatasetError
from emotk.workspace import Workspace, validate_manifest, write_failures

# Modules that register datasets; add one line per new dataset module.
_MODULES = [
    "emotk.datasets.affwild2",
    "emotk.datasets.emoreact",
    "emotk.datasets.afewva",
]

__all__ = ["DATASETS", "DatasetSpec", "Prepared", "Task", "failure", "register_dataset", "get_dataset", "prepare_dataset"]


def _load_all() -> None:
    for mod in _MODULES:
        importlib.import_module(mod)


def get_dataset(name: str) -> DatasetSpec:
    _load_all()
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}. Supported: {', '.join(sorted(DATASETS))} (see `emotk datasets`).")
    return DATASETS[name]


def prepare_dataset(ws: Workspace, name: str, raw_root: str | Path, **options) -> tuple[pl.DataFrame, list[dict]]:
    """Run the dataset's reader and write manifest.parquet, labels.h5, dataset.json, failures.csv."""
    spec = get_dataset(name)
    raw_root = Path(raw_root).expanduser()
    if not raw_root.is_dir():
        raise DatasetError(
            f"raw root {raw_root} is not a folder. Pass --root pointing at the {spec.title} release as distributed "
            f"(see `emotk datasets` for the expected layout)."
        )
    ws.ensure()
    out_dir = ws.dataset_dir(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepared: Prepared = spec.prepare(raw_root.resolve(), out_dir, **options)
    if not prepared.rows:
        raise DatasetError(
            f"no usable samples found under {raw_root} for {spec.title}. Expected layout:\n{spec.layout}"
        )
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
    with atomic_path(path, ".h5") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["label_names"] = list(names)
            f.attrs["emotk_version"] = __version__
            for sid, arr in labels.items():
                f.create_dataset(sid, data=np.asarray(arr, dtype=np.float32))


def read_frame_labels(path: Path, sample_ids: list[str] | None = None) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        ids = sample_ids if sample_ids is not None else list(f.keys())
        return {sid: f[sid][()] for sid in ids if sid in f}
