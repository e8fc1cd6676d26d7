"""Splits: subject-disjoint k-fold, the dataset's official split, and the leakage check.

A split file ``splits/<name>.parquet`` has ``sample_id``, ``subject`` and either ``fold`` (k-fold:
train on the other folds, validate on fold k) or ``split`` (train / validation / test).
"""

from __future__ import annotations

import random
from pathlib import Path

import polars as pl

from emotk.atomic import write_parquet
from emotk.errors import SplitError
from emotk.workspace import Workspace


def subject_kfold(manifest: pl.DataFrame, k: int, seed: int = 0, pool: str | None = None) -> pl.DataFrame:
    """Assign whole subjects to ``k`` folds, balancing the folds' frame counts.

    Subjects are taken heaviest first (ties broken by a seeded shuffle) and each goes to the fold
    with the fewest frames so far. ``pool`` restricts the folds to one official split (e.g. train).
    """
    if k < 2:
        raise SplitError(f"--folds must be at least 2 (got {k}).")
    frame = manifest if pool is None else manifest.filter(pl.col("split") == pool)
    if frame.height == 0:
        raise SplitError(f"no samples in official split {pool!r} to make folds from.")
    weight = pl.when(pl.col("n_frames") > 0).then(pl.col("n_frames")).otherwise(1)
    subjects = frame.group_by("subject").agg(weight.sum().alias("w")).sort("subject")
    if subjects.height < k:
        raise SplitError(f"{subjects.height} subjects cannot fill {k} subject-disjoint folds; use --folds {subjects.height} or fewer.")
    rng = random.Random(seed)
    order = list(zip(subjects["subject"].to_list(), subjects["w"].to_list()))
    rng.shuffle(order)
    order.sort(key=lambda sw: -sw[1])  # stable: equal weights keep the shuffled order
    load = [0] * k
    fold_of: dict[str, int] = {}
    for subject, w in order:
        f = min(range(k), key=lambda i: (load[i], i))
        fold_of[subject] = f
        load[f] += w
    return frame.select("sample_id", "subject").with_columns(
        pl.col("subject").replace_strict(fold_of, return_dtype=pl.Int64).alias("fold")
    )


def official(manifest: pl.DataFrame) -> pl.DataFrame:
    frame = manifest.filter(pl.col("split").is_not_null()).select("sample_id", "subject", "split")
    if frame.height == 0:
        raise SplitError("this dataset has no official split; use `emotk split --by subject --folds K`.")
    return frame


def check(split: pl.DataFrame, where: str = "split") -> None:
    """Raise SplitError naming each subject that appears in two folds (or in train and a held-out split)."""
    col = "fold" if "fold" in split.columns else "split"
    spread = (split.group_by("subject").agg(pl.col(col).unique().sort().alias("parts"))
              .filter(pl.col("parts").list.len() > 1).sort("subject"))
    if spread.height:
        lines = [f"  subject {s!r} is in {col}s {p}" for s, p in zip(spread["subject"].to_list(), spread["parts"].to_list())]
        raise SplitError(f"{where} leaks {spread.height} subject(s) across {col}s:\n" + "\n".join(lines[:20]) +
                         "\nRebuild it with `emotk split --by subject`, or pass --allow-leak to train on it knowingly.")


def split_name(by: str, folds: int | None, pool: str | None) -> str:
    if by == "official":
        return "official"
    return f"{by}-k{folds}" + (f"-{pool}" if pool else "")


def make_split(ws: Workspace, dataset: str, by: str = "subject", folds: int = 5, seed: int = 0,
               pool: str | None = None, name: str | None = None) -> tuple[Path, pl.DataFrame]:
    manifest = ws.read_manifest(dataset)
    if by == "official":
        frame = official(manifest)
    elif by == "subject":
        frame = subject_kfold(manifest, folds, seed, pool)
    else:
        raise SplitError(f"unknown --by {by!r}: use 'subject' or --official.")
    if by != "official":
        check(frame, "the new split")
    path = ws.split_path(dataset, name or split_name(by, folds, pool))
    write_parquet(path, frame)
    return path, frame


def read_split(ws: Workspace, dataset: str, name: str) -> pl.DataFrame:
    path = ws.split_path(dataset, name)
    if not path.exists():
        have = sorted(p.stem for p in ws.splits_dir(dataset).glob("*.parquet"))
        raise SplitError(f"split {name!r} does not exist at {path} (have: {have or 'none'}). Run `emotk split` first.")
    return pl.read_parquet(path)


def check_file(ws: Workspace, dataset: str, name: str) -> pl.DataFrame:
    """Leakage check of a saved split against the current manifest's subjects; returns a per-part summary."""
    split = read_split(ws, dataset, name)
    manifest = ws.read_manifest(dataset).select("sample_id", pl.col("subject").alias("subject_now"))
    joined = split.join(manifest, on="sample_id", how="left")
    unknown = joined.filter(pl.col("subject_now").is_null())
    if unknown.height:
        raise SplitError(f"split {name!r} names {unknown.height} samples missing from the manifest "
                         f"(e.g. {unknown['sample_id'][0]!r}); rebuild it with `emotk split`.")
    split = joined.drop("subject").rename({"subject_now": "subject"})
    check(split, f"split {name!r}")
    col = "fold" if "fold" in split.columns else "split"
    return split.group_by(col).agg(pl.len().alias("samples"), pl.col("subject").n_unique().alias("subjects")).sort(col)
