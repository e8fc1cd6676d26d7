"""Paths of a workspace and the file contracts between stages.

Layout::

    <workspace>/emotk-workspace.json            emotk version that created it
    <workspace>/<dataset>/dataset.json          raw root, options, emotk version of `prepare`
    <workspace>/<dataset>/manifest.parquet      one row per sample (MANIFEST_COLUMNS + label columns)
    <workspace>/<dataset>/labels.h5             per-frame labels [T, L] keyed by sample_id (NaN = no label)
    <workspace>/<dataset>/failures.csv          samples skipped, the stage, the reason, what to do
    <workspace>/<dataset>/faces/                face crops made by emotk
    <workspace>/<dataset>/features/<name>.h5    one dataset per sample_id (see emotk.features.store)
    <workspace>/<dataset>/splits/<name>.parquet sample_id → fold and/or split
    <workspace>/runs/<dataset>/<model>-<size>/<split>/<fold>-seed<s>/   run directories

Every name a user gives (dataset, feature cache, split, run folder parts) passes :func:`check_name`
inside the path methods below, so no caller can build a path from an unchecked name, and every path
they return is confirmed inside the workspace (lexically: a folder the user deliberately made a
symlink, e.g. ``features/`` on a bigger disk, is followed, not refused).
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from emotk import __version__
from emotk.atomic import atomic_path, write_json
from emotk.errors import WorkspaceError

DEFAULT_WORKSPACE = "emotk-data"

#: Columns every manifest has. Label columns (per-sample labels) follow.
MANIFEST_COLUMNS = {
    "sample_id": pl.Utf8,  # unique, stable
    "subject": pl.Utf8,  # the person: the unit of leakage
    "split": pl.Utf8,  # the dataset's official split (train/validation/test) or null
    "kind": pl.Utf8,  # video | image | utterance
    "media": pl.Utf8,  # path of frames folder / video / image / audio, relative to media_root
    "media_root": pl.Utf8,  # "raw" (the raw dataset root) or "workspace" (the dataset's workspace folder)
    "media_kind": pl.Utf8,  # frames_dir | video | image | audio
    "frame_base": pl.Int64,  # index of the first frame in frame file names (AffWild2 crops: 1)
    "n_frames": pl.Int64,  # frames on the label/frame axis (0 for non-video samples)
    "fps": pl.Float64,
}

FAILURE_FIELDS = ["sample_id", "stage", "file", "reason", "what_to_do"]

#: What a user-given name (dataset, feature cache, split, run folder part) may look like.
NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9._-]*"
NAME_MAX = 128
_NAME = re.compile(NAME_PATTERN)


def check_name(value: str, what: str) -> str:
    """``value`` if it is a safe file name (``NAME_PATTERN``, at most ``NAME_MAX`` characters), else
    :class:`WorkspaceError` naming ``what`` (e.g. ``"--name"``) and the accepted pattern."""
    if not isinstance(value, str) or not _NAME.fullmatch(value) or len(value) > NAME_MAX:
        raise WorkspaceError(
            f"{what} {value!r} is not a valid name: use letters, digits, '.', '_' and '-', starting with a "
            f"letter or digit (pattern {NAME_PATTERN}, at most {NAME_MAX} characters); names are file names "
            "inside the workspace, never paths."
        )
    return value


def _version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in v.split(".")[:3] if p.isdigit())


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def open(cls, root: str | os.PathLike | None = None) -> "Workspace":
        root = Path(root or os.environ.get("EMOTK_WORKSPACE") or DEFAULT_WORKSPACE)
        if root.exists() and not root.is_dir():
            raise WorkspaceError(
                f"workspace {root} is a file, not a folder. Pass --workspace (or EMOTK_WORKSPACE) a folder: "
                "an existing emotk workspace or a new folder name."
            )
        ws = cls(root.resolve())
        ws._check_version()
        return ws

    def _check_version(self) -> None:
        stamp = self.root / "emotk-workspace.json"
        if stamp.exists():
            try:
                made_by = json.loads(stamp.read_text())["emotk_version"]
            except (ValueError, KeyError) as exc:
                raise WorkspaceError(f"{stamp} is unreadable ({exc}); delete it to re-stamp the workspace.") from None
            if _version_tuple(made_by) > _version_tuple(__version__):
                raise WorkspaceError(
                    f"workspace {self.root} was written by emotk {made_by}, newer than this emotk {__version__}. "
                    "Upgrade emotk (pip install -U emotk) or use another --workspace."
                )

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        stamp = self.root / "emotk-workspace.json"
        if not stamp.exists():
            write_json(stamp, {"emotk_version": __version__})

    # --- datasets -------------------------------------------------------------------------
    def inside(self, path: str | os.PathLike, what: str = "path") -> Path:
        """``path`` made absolute and normalised, confirmed to lie inside the workspace (WorkspaceError if not)."""
        root = Path(os.path.abspath(self.root))
        absolute = Path(os.path.abspath(path))
        if absolute != root and root not in absolute.parents:
            raise WorkspaceError(f"{what} {path} lies outside the workspace {root}; emotk writes only inside it.")
        return absolute

    def dataset_dir(self, dataset: str) -> Path:
        return self.inside(self.root / check_name(dataset, "dataset"), "dataset folder")

    def prepared(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob("*/manifest.parquet"))

    def resolve_dataset(self, dataset: str | None) -> str:
        """The dataset to work on: the one named, or the only one prepared."""
        prepared = self.prepared()
        if dataset:
            if dataset not in prepared:
                hint = f"prepared here: {', '.join(prepared)}" if prepared else "nothing is prepared here yet"
                raise WorkspaceError(
                    f"dataset {dataset!r} is not prepared in workspace {self.root} ({hint}). "
                    f"Run `emotk prepare {dataset} --root RAW_DIR` first."
                )
            return dataset
        if len(prepared) == 1:
            return prepared[0]
        if not prepared:
            raise WorkspaceError(
                f"no dataset is prepared in workspace {self.root}. "
                "Run `emotk prepare DATASET --root RAW_DIR` (or `emotk demo`), or pass --workspace."
            )
        raise WorkspaceError(f"several datasets are prepared in {self.root} ({', '.join(prepared)}): pass --dataset.")

    def manifest_path(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "manifest.parquet"

    def labels_path(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "labels.h5"

    def images_path(self, dataset: str) -> Path:
        """The image store of an image dataset: uint8 [H, W] or [H, W, 3] per sample_id."""
        return self.dataset_dir(dataset) / "images.h5"

    def info_path(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "dataset.json"

    def failures_path(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "failures.csv"

    def features_dir(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "features"

    def feature_path(self, dataset: str, name: str) -> Path:
        return self.inside(self.features_dir(dataset) / f"{check_name(name, 'feature name')}.h5", "feature cache")

    def splits_dir(self, dataset: str) -> Path:
        return self.dataset_dir(dataset) / "splits"

    def split_path(self, dataset: str, name: str) -> Path:
        return self.inside(self.splits_dir(dataset) / f"{check_name(name, 'split name')}.parquet", "split file")

    def runs_dir(self) -> Path:
        return self.root / "runs"

    def run_path(self, *names: str, root: str | os.PathLike | None = None) -> Path:
        """``<runs root>/<name>/<name>/…``: each part checked by :func:`check_name` (e.g. dataset,
        ``model-size``, split, ``fold0-seed1``); ``root`` defaults to the workspace's ``runs/``."""
        base = Path(root) if root is not None else self.runs_dir()
        path = base.joinpath(*(check_name(n, "run folder name") for n in names))
        return self.inside(path, "run folder") if root is None else path

    # --- contracts ------------------------------------------------------------------------
    def read_manifest(self, dataset: str) -> pl.DataFrame:
        """The manifest, checked against the contract (WorkspaceError naming the file when it is not one)."""
        path = self.manifest_path(dataset)
        if not path.exists():
            raise WorkspaceError(f"{path} does not exist. Run `emotk prepare {dataset} --root RAW_DIR` first.")
        fix = f"run `emotk prepare {dataset} --root RAW_DIR` again to rewrite it"
        frame = read_table(path, "manifest", fix)
        try:
            return validate_manifest(frame, f"manifest {path}")
        except WorkspaceError as exc:
            raise WorkspaceError(f"{exc}; {fix}.") from None

    def read_info(self, dataset: str) -> dict:
        path = self.info_path(dataset)
        if not path.exists():
            raise WorkspaceError(f"{path} does not exist. Run `emotk prepare {dataset} --root RAW_DIR` again.")
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise WorkspaceError(f"{path} is not valid JSON ({exc}); run `emotk prepare {dataset} --root RAW_DIR` "
                                 "again to rewrite it.") from None
        if not isinstance(info, dict):
            raise WorkspaceError(f"{path} does not hold a JSON object; run `emotk prepare {dataset} --root RAW_DIR` again.")
        return info

    def media_path(self, dataset: str, row: dict) -> Path:
        """Absolute path of a manifest row's media, checked not to escape its root."""
        base = Path(self.read_info(dataset)["raw_root"]) if row["media_root"] == "raw" else self.dataset_dir(dataset)
        return safe_join(base, row["media"])


def read_table(path: str | os.PathLike, what: str, fix: str) -> pl.DataFrame:
    """A parquet file emotk wrote; WorkspaceError naming ``what``, the file and ``fix`` when it is not
    readable parquet (garbage, truncated). A PermissionError is left to the caller (another fix)."""
    try:
        return pl.read_parquet(path)
    except PermissionError:
        raise
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise WorkspaceError(f"{what} {path} is not a readable parquet file ({type(exc).__name__}: "
                             f"{str(exc)[:160]}); {fix}.") from None


def safe_join(base: Path, relative: str) -> Path:
    """``base / relative``, refusing paths that escape ``base`` (absolute paths, ``..``)."""
    base = Path(base).resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise WorkspaceError(f"path {relative!r} escapes {base}; the manifest or dataset is malformed.")
    return path


def validate_manifest(frame: pl.DataFrame, where: str = "manifest") -> pl.DataFrame:
    """Check the manifest contract: required columns and types, unique sample ids."""
    missing = [c for c in MANIFEST_COLUMNS if c not in frame.columns]
    if missing:
        raise WorkspaceError(f"{where} lacks columns {missing}")
    try:
        frame = frame.with_columns([pl.col(c).cast(t) for c, t in MANIFEST_COLUMNS.items()])
    except pl.exceptions.PolarsError as exc:
        raise WorkspaceError(f"{where}: a column has the wrong type ({str(exc)[:160]})") from None
    dup = frame.group_by("sample_id").len().filter(pl.col("len") > 1)
    if dup.height:
        raise WorkspaceError(
            f"{where}: duplicate sample ids {dup['sample_id'].to_list()[:5]}; sample ids must be unique."
        )
    return frame


def write_failures(path: Path, rows: list[dict], append: bool = False) -> None:
    """Write (or extend) failures.csv atomically: one row per skipped sample."""
    old: list[dict] = []
    if append and path.exists():
        with open(path, newline="", encoding="utf-8") as fh:
            old = list(csv.DictReader(fh))
    with atomic_path(path, what="the failure list") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=FAILURE_FIELDS)
            w.writeheader()
            for r in old + rows:
                w.writerow({k: r.get(k, "") for k in FAILURE_FIELDS})
