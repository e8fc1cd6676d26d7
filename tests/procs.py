"""Helpers for tests that start real emotk processes (torchrun, killed runs): one CPU thread each, so
process counts do not change kernels' reduction order and two processes fit two cores."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

EXTRACT = ["extract", "--encoder", "regnet_y_400mf", "--weights", "none", "--image-size", "64",
           "--batch-size", "8", "--num-workers", "0", "--quiet"]
TINY_GRU = ["--seq-len", "16", "--quiet", "-o", "hidden=16", "-o", "layers=1"]


def env(workspace: Path | None = None, threads: int = 1) -> dict:
    e = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if workspace is not None:
        e["EMOTK_WORKSPACE"] = str(workspace)
    return e


def emotk(*args: str, workspace: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "emotk", *args], capture_output=True, text=True, env=env(workspace))
    if check and proc.returncode != 0:
        raise AssertionError(f"emotk {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def torchrun(nproc: int, *args: str, workspace: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "emotk", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env(workspace))
    if proc.returncode != 0:
        raise AssertionError(f"torchrun emotk {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return proc


def store_arrays(path: Path) -> dict:
    from emotk.features.store import FeatureStore

    with FeatureStore(path) as store:
        return {sid: store.read(sid) for sid in store.keys()}


def assert_same_store(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for sid in a:
        assert a[sid][0].dtype == b[sid][0].dtype
        assert np.array_equal(a[sid][0], b[sid][0]), sid  # bit-identical
        assert np.array_equal(a[sid][1], b[sid][1]), sid


def copy_prepared(src: Path, dst: Path, with_features: bool = False) -> Path:
    """A copy of a workspace (prepared dataset, splits), with or without its features."""
    import shutil

    shutil.copytree(src, dst, ignore=None if with_features else shutil.ignore_patterns("features", "runs"))
    return dst


def find_run(runs: Path, model_size: str, split: str, part: str | None = None, dataset: str = "affwild2") -> Path:
    """The one run folder ``<runs>/<dataset>/<model>-<size>-<hash>/<split>[/<part>]`` (whatever its configuration hash)."""
    pattern = f"{model_size}-*/{split}" + (f"/{part}" if part else "")
    matches = sorted((Path(runs) / dataset).glob(pattern))
    assert len(matches) == 1, f"expected one run folder {pattern} under {runs}/{dataset}, found {matches}"
    return matches[0]
