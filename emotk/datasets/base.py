"""The dataset registry: each dataset module turns a raw layout into manifest rows.

A dataset module registers a :class:`DatasetSpec` whose ``prepare`` returns a :class:`Prepared`
(manifest rows, per-frame labels, skipped samples). ``emotk.datasets.prepare_dataset`` writes them
to the workspace; dataset modules never touch torch models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from emotk.errors import DatasetError
from emotk.registry import Registry

#: Every sample id matches this: a letter or digit, then letters, digits, ``.``, ``_``, ``-``. It is
#: a folder name (``faces/<id>``), an HDF5 dataset name and a split-file key, so it may hold no path
#: separator, no ``..`` (also refused) and no character a shell or another file system treats specially.
SAMPLE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: Names the feature store and labels file use for their own groups; no sample may be called so.
RESERVED_SAMPLE_IDS = frozenset({"mask"})
SAMPLE_ID_MAX_LEN = 200
SAMPLE_ID_RULE = ("letters, digits, '.', '_' and '-' only, starting with a letter or digit, no '..', "
                  f"at most {SAMPLE_ID_MAX_LEN} characters, not {', '.join(sorted(RESERVED_SAMPLE_IDS))}")


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

    @property
    def out_dim(self) -> int:
        """Outputs of a model for this task: one per class, or one per target."""
        return self.n_classes if self.kind.endswith("classification") else len(self.targets)


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
    # option name → validator(value) raising DatasetError; checked before anything is written.
    options: Mapping[str, Callable[[str, object], None]] = field(default_factory=dict)
    # precheck(raw_root, options): rules between options and the raw layout, also before any write.
    precheck: Callable[[Path, dict], None] | None = None


DATASETS: Registry = Registry("dataset", "See `emotk datasets`.", DatasetError)


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name, spec)


def progress_bar(items, enabled: bool, desc: str, unit: str):
    """``items`` wrapped in a tqdm progress bar when ``enabled`` (prepare's long loops)."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit=unit)


def failure(sample_id: str, stage: str, file: str | Path, reason: str, what_to_do: str) -> dict:
    return {"sample_id": sample_id, "stage": stage, "file": str(file), "reason": reason, "what_to_do": what_to_do}


# --- sample ids -----------------------------------------------------------------------------------

def sample_id_problem(sample_id) -> str | None:
    """Why ``sample_id`` cannot be a sample id (see :data:`SAMPLE_ID_PATTERN`), or None when it can."""
    if not isinstance(sample_id, str) or not sample_id:
        return "it is empty"
    if len(sample_id) > SAMPLE_ID_MAX_LEN:
        return f"it is longer than {SAMPLE_ID_MAX_LEN} characters"
    if sample_id in RESERVED_SAMPLE_IDS:
        return f"{sample_id!r} is the name of an internal group of emotk's HDF5 files"
    if ".." in sample_id:
        return "it contains '..'"
    if not SAMPLE_ID_PATTERN.fullmatch(sample_id):
        bad = sorted({c for c in sample_id if not re.fullmatch(r"[A-Za-z0-9._-]", c)})
        if bad:
            return f"it contains {', '.join(repr(c) for c in bad)}"
        return "it does not start with a letter or digit"
    return None


def bad_sample_id(sample_id: str, stage: str, file: str | Path, problem: str) -> dict:
    """The failures.csv row for a raw name that cannot be a sample id (the sample is skipped)."""
    return failure(str(sample_id), stage, file, f"{sample_id!r} cannot be a sample id: {problem} ({SAMPLE_ID_RULE})",
                   "rename the file or folder to letters, digits, '.', '_', '-'; the sample is skipped")


# --- reading raw files ----------------------------------------------------------------------------

class RawFileError(DatasetError):
    """A raw file or folder cannot be read at all (permissions, a folder where a file belongs, I/O).

    Readers let it stop the prepare (one clear message) instead of skipping the sample: the cause is
    the copy of the dataset, not one sample's content, and the fix is the same for all of them.
    """


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def read_raw_text(path: Path, what: str, errors: str = "strict") -> str:
    """Text of a raw dataset file; any OS error (permission, a folder where a file belongs, I/O) is a DatasetError."""
    try:
        return Path(path).read_text(encoding="utf-8-sig", errors=errors)
    except IsADirectoryError:
        raise RawFileError(f"{what} {path} is a folder, not a file; restore the file from the release.") from None
    except PermissionError:
        raise RawFileError(f"cannot read {what} {path}: permission denied. Make the raw dataset readable "
                           "(e.g. `chmod -R a+rX RAW`) and run prepare again.") from None
    except OSError as exc:
        raise RawFileError(f"cannot read {what} {path}: {_os_reason(exc)}. Restore the file from the release "
                           "and run prepare again.") from None


def list_raw_dir(path: Path, what: str) -> list[Path]:
    """Entries of a raw dataset folder, sorted; any OS error is a DatasetError naming the folder."""
    try:
        return sorted(Path(path).iterdir())
    except NotADirectoryError:
        raise RawFileError(f"{what} {path} is a file, not a folder; restore the folder from the release.") from None
    except PermissionError:
        raise RawFileError(f"cannot list {what} {path}: permission denied. Make the raw dataset readable "
                           "(e.g. `chmod -R a+rX RAW`) and run prepare again.") from None
    except OSError as exc:
        raise RawFileError(f"cannot list {what} {path}: {_os_reason(exc)}. Check the raw dataset and run prepare again.") from None


# --- prepare options ------------------------------------------------------------------------------

def choice(*choices: str) -> Callable[[str, object], None]:
    """Validator: the value is one of ``choices``."""
    def check(name: str, value) -> None:
        if value not in choices:
            raise DatasetError(f"invalid {name} {value!r}; choose one of: {', '.join(choices)}.")
    check.choices = choices  # type: ignore[attr-defined]
    return check


def dynamic_choice(get_choices: Callable[[], list[str]]) -> Callable[[str, object], None]:
    """Validator: the value is one of ``get_choices()`` (a registry read at check time)."""
    def check(name: str, value) -> None:
        choices = get_choices()
        if value not in choices:
            raise DatasetError(f"invalid {name} {value!r}; choose one of: {', '.join(choices)}.")
    return check


def number(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False):
    """Validator: an int (``kind=int``) or real number within [low, high] (``(low, high]`` when ``low_open``)."""
    def check(name: str, value) -> None:
        ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or (kind is float and not np.isfinite(value)):
            raise DatasetError(f"invalid {name} {value!r}: expected {'an integer' if kind is int else 'a number'}"
                               f"{_range_text(low, high, low_open)}.")
        if (low is not None and (value <= low if low_open else value < low)) or (high is not None and value > high):
            raise DatasetError(f"invalid {name} {value!r}: must be{_range_text(low, high, low_open)}.")
    return check


def _range_text(low, high, low_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low}, {high}]"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" <= {high}"
    return ""


def flag(name: str, value) -> None:
    """Validator: a bool."""
    if not isinstance(value, bool):
        raise DatasetError(f"invalid {name} {value!r}: expected true or false.")


def folder_or_none(name: str, value) -> None:
    """Validator: None or an existing folder."""
    if value is not None and not Path(value).is_dir():
        raise DatasetError(f"invalid {name} {value!r}: not an existing folder.")


def face_crop_options(**overrides) -> dict[str, Callable[[str, object], None]]:
    """Validators of the face-cropping options the video datasets share (``detector``, ``face_size``,
    ``every``, ``max_carry``, ``margin``, ``decoder``, ``min_decoded_fraction``, ``align``,
    ``detector_weights``); ``overrides`` replace an entry, or drop it when None."""
    from emotk.media.faces import video_detectors
    from emotk.media.video import DECODERS

    shared = {
        "detector": dynamic_choice(video_detectors), "face_size": number(int, 8), "every": number(int, 1),
        "max_carry": number(int, 0), "margin": number(float, 0.0, 2.0), "decoder": choice(*DECODERS),
        "min_decoded_fraction": number(float, 0.0, 1.0, low_open=True), "align": flag,
        "detector_weights": folder_or_none,
    }
    shared.update(overrides)
    return {k: v for k, v in shared.items() if v is not None}


def check_options(spec: DatasetSpec, options: Mapping[str, object]) -> None:
    """Refuse unknown options and invalid values for ``spec`` (DatasetError naming the valid ones)."""
    allowed = dict(spec.options)
    allowed.setdefault("progress", flag)
    unknown = sorted(k for k in options if k not in allowed)
    if unknown:
        raise DatasetError(f"option(s) {', '.join(unknown)} do not apply to {spec.title}; it takes "
                           f"{', '.join(sorted(allowed))}.")
    for key, value in options.items():
        allowed[key](key, value)
