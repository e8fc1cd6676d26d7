"""SIGKILL at a random moment inside extract / train, then the same command again: nothing corrupt,
nothing half-written under a real name, and the result equals an uninterrupted run's (on CPU)."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import h5py
import polars as pl
import pytest
import torch

from emotk.datasets import prepare_dataset
from emotk.workspace import Workspace
from tests.procs import EXTRACT, assert_same_store, copy_prepared, emotk, env, find_run, store_arrays

FEATURES = "affwild2/features/regnet_y_400mf.h5"
PARTS = "affwild2/features/regnet_y_400mf.parts"


@pytest.fixture(scope="module")
def ws(mini_affwild2, tmp_path_factory):
    root = tmp_path_factory.mktemp("crash") / "ws"
    prepare_dataset(Workspace.open(root), "affwild2", mini_affwild2)
    emotk("split", "--official", workspace=root)
    emotk(*EXTRACT, workspace=root)  # the uninterrupted extraction
    return root


def _start(args, workspace):
    return subprocess.Popen([sys.executable, "-m", "emotk", *args], env=env(workspace),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _kill_when(proc, ready, delay: float, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` first holds; False if it ended before."""
    t0 = time.time()
    while not ready():
        if proc.poll() is not None or time.time() - t0 > timeout:
            return False
        time.sleep(0.002)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def test_extract_killed_mid_work_then_rerun_gives_identical_features(ws, tmp_path):
    rng = random.Random(0)
    dst = copy_prepared(ws, tmp_path / "ws")
    args = [*EXTRACT, "--flush-frames", "1"]  # a part file per sample: the kill lands between and inside samples
    proc = _start(args, dst)
    killed = _kill_when(proc, lambda: any((dst / PARTS).glob("part-*.h5")), rng.uniform(0.0, 0.4))
    assert killed, "extract finished before it could be killed"
    assert not (dst / FEATURES).exists()  # not merged yet: the kill was inside the work
    parts = sorted((dst / PARTS).glob("part-*.h5"))
    assert parts
    for p in parts:  # everything under a real name is whole and readable
        with h5py.File(p, "r") as f:
            assert f.attrs["encoder"] == "regnet_y_400mf" and all(f[k].shape for k in f if k != "mask")
    out = emotk(*args, workspace=dst)
    assert f"{len(parts)} already there" in out.stdout  # one sample per part: every finished sample kept
    assert not (dst / PARTS).exists()
    assert not [p.name for p in (dst / "affwild2/features").iterdir() if p.name.startswith(".")]  # no temporaries
    assert_same_store(store_arrays(dst / FEATURES), store_arrays(ws / FEATURES))


def test_train_killed_then_resumed_ends_like_uninterrupted(ws, tmp_path):
    # dropout on: the resumed run must restore the torch RNG that draws the masks
    args = ["train", "gru", "--split", "official", "--epochs", "4", "--batch-size", "4", "--seq-len", "16", "--quiet",
            "-o", "hidden=16", "-o", "layers=2", "-o", "dropout=0.3"]
    emotk(*args, "--runs", str(tmp_path / "straight"), workspace=ws)
    straight = find_run(tmp_path / "straight", "gru-sm", "official", "official-seed1")
    run = tmp_path / "killed" / straight.relative_to(tmp_path / "straight")  # same identity, same hash
    proc = _start([*args, "--runs", str(tmp_path / "killed")], ws)
    killed = _kill_when(proc, lambda: (run / "checkpoint.pt").exists(), random.Random(1).uniform(0.0, 0.05))
    assert killed and not (run / "metrics.json").exists(), "train finished before it could be killed"
    epoch = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    assert epoch < 3
    out = emotk(*args, "--runs", str(tmp_path / "killed"), "--resume", workspace=ws)
    assert "official seed 1: ccc" in out.stdout
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (straight, run))
    assert a["metrics"] == b["metrics"] and a["best_epoch"] == b["best_epoch"]  # exactly equal on CPU
    assert pl.read_csv(straight / "history.csv").equals(pl.read_csv(run / "history.csv"))
    wa = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert pl.read_parquet(straight / "predictions.parquet").equals(pl.read_parquet(run / "predictions.parquet"))
