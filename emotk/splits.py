"""Splits: group-disjoint k-fold (by subject, session, speaker or any manifest column), the dataset's official split, and the leakage check.

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


def group_kfold(manifest: pl.DataFrame, k: int, seed: int = 0, pool: str | None = None, by: str = "subject") -> pl.DataFrame:
    """Assign whole groups (values of the manifest column ``by``: subject, session, speaker, …) to ``k`` folds,
    balancing the folds' frame counts.

    Groups are taken heaviest first (ties broken by a seeded shuffle) and each goes to the fold with
    the fewest frames so far. ``pool`` restricts the folds to one official split (e.g. train). The
    result keeps ``subject`` (the unit of leakage, checked by :func:`check`) and, for another
    grouping, the group as column ``group``.
    """
    if k < 2:
        raise SplitError(f"--folds must be at least 2 (got {k}).")
    if by not in manifest.columns:
        usable = [c for c, t in manifest.schema.items() if t == pl.Utf8 and c not in ("sample_id", "media", "media_root", "media_kind", "kind", "split")]
        raise SplitError(f"the manifest has no column {by!r} to group by; groupable columns: {', '.join(usable)}.")
    frame = manifest if pool is None else manifest.filter(pl.col("split") == pool)
    if frame.height == 0:
        raise SplitError(f"no samples in official split {pool!r} to make folds from.")
    if frame[by].null_count():
        raise SplitError(f"{frame[by].null_count()} samples have no {by!r}; they cannot be assigned to a {by} fold.")
    weight = pl.when(pl.col("n_frames") > 0).then(pl.col("n_frames")).otherwise(1)
    groups = frame.group_by(by).agg(weight.sum().alias("w")).sort(by)
    if groups.height < k:
        raise SplitError(f"{groups.height} {by} groups cannot fill {k} {by}-disjoint folds; use --folds {groups.height} or fewer.")
    rng = random.Random(seed)
    order = list(zip(groups[by].to_list(), groups["w"].to_list()))
    rng.shuffle(order)
    order.sort(key=lambda gw: -gw[1])  # stable: equal weights keep the shuffled order
    load = [0] * k
    fold_of: dict = {}
    for group, w in order:
        f = min(range(k), key=lambda i: (load[i], i))
        fold_of[group] = f
        load[f] += w
    cols = ["sample_id", "subject"] + ([pl.col(by).cast(pl.Utf8).alias("group")] if by != "subject" else [])
    return frame.select(*cols, pl.col(by).replace_strict(fold_of, return_dtype=pl.Int64).alias("fold"))


def subject_kfold(manifest: pl.DataFrame, k: int, seed: int = 0, pool: str | None = None) -> pl.DataFrame:
    """:func:`group_kfold` by subject."""
    return group_kfold(manifest, k, seed, pool, "subject")


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


#: ``--by random``: every sample its own group, i.e. a random sample-level k-fold (the random utterance
#: folds of several IEMOCAP papers). It leaks subjects by design; ``check`` says so and training on it
#: needs ``--allow-leak``.
RANDOM = "random"


def split_name(by: str, folds: int | None, pool: str | None) -> str:
    if by == "official":
        return "official"
    return f"{by}-k{folds}" + (f"-{pool}" if pool else "")


def make_split(ws: Workspace, dataset: str, by: str = "subject", folds: int = 5, seed: int = 0,
               pool: str | None = None, name: str | None = None) -> tuple[Path, pl.DataFrame]:
    manifest = ws.read_manifest(dataset)
    if by == "official":
        frame = official(manifest)
    elif by == RANDOM:
        frame = group_kfold(manifest, folds, seed, pool, "sample_id").drop("group", strict=False)
    else:
        frame = group_kfold(manifest, folds, seed, pool, by)
        check(frame, "the new split")
    path = ws.split_path(dataset, name or split_name(by, folds, pool))
    write_parquet(path, frame)
    return path, frame


def read_split(ws: Workspace, dataset: str, name: str) -> pl.DataFrame:
    path = ws.split_path(dataset, name)
    if not path.exists():
        have = sorted(p.stem for p in ws.splits_dir(dataset).glob("*.parquet"))
        raise SplitError(f"split {name!r} does not exist at {path} (have: {have or 'none'}). Run `emotk split` first.")
    try:
        frame = pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise SplitError(f"{path} is not a readable split file ({str(exc).splitlines()[0][:120]}); "
                         "delete it and make it again with `emotk split`.") from None
    if "sample_id" not in frame.columns or "subject" not in frame.columns or not ({"fold", "split"} & set(frame.columns)):
        raise SplitError(f"{path} lacks the split columns (sample_id, subject, fold or split; it has {frame.columns}); "
                         "delete it and make it again with `emotk split`.")
    return frame


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
