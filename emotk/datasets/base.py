"""The dataset registry: each dataset module turns a raw layout into manifest rows.

A dataset module registers a :class:`DatasetSpec` whose ``prepare`` returns a :class:`Prepared`
(manifest rows, per-frame labels, skipped samples). ``emotk.datasets.prepare_dataset`` writes them
to the workspace; dataset modules never touch torch models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Task:
    """What a model predicts on this dataset and how it is scored.

    kind: ``frame_regression`` (per-frame targets, e.g. valence/arousal), ``clip_multilabel``
    (one binary vector per clip), ``clip_classification`` / ``frame_classification`` (class ids).
    """

    kind: str
    targets: tuple[str, ...]
    metric: str
    seq_len: int
    head: str
    n_classes: int = 0
    feature_dim_hint: int = 440


@dataclass
class Prepared:
    rows: list[dict]  # manifest rows (MANIFEST_COLUMNS + label columns)
    frame_labels: dict[str, np.ndarray] = field(default_factory=dict)  # sample_id → [T, L] float32, NaN = none
    label_names: tuple[str, ...] = ()
    failures: list[dict] = field(default_factory=list)  # FAILURE_FIELDS dicts
    info: dict = field(default_factory=dict)  # extra facts stored in dataset.json


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    layout: str  # the expected raw layout, shown by `emotk datasets`
    splits: str  # the official splits and recommended protocol
    task: Task
    prepare: Callable[..., Prepared]  # prepare(raw_root: Path, out_dir: Path, **options) -> Prepared


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    if spec.name in DATASETS:
        raise ValueError(f"dataset {spec.name!r} registered twice")
    DATASETS[spec.name] = spec
    return spec


def failure(sample_id: str, stage: str, file: str | Path, reason: str, what_to_do: str) -> dict:
    return {"sample_id": sample_id, "stage": stage, "file": str(file), "reason": reason, "what_to_do": what_to_do}
