"""Kill `emotk extract` with SIGKILL at random moments, run it again, and compare with an uninterrupted run.

    python bench/crash.py            # 20 kills; prints how many runs recovered with identical features

A synthetic Aff-Wild2 release (emotk.synth) is prepared once and extracted once without
interruption. Each trial copies the prepared workspace, starts `emotk extract` (one part file per
sample, so kills land between samples, inside a sample's encoding, and inside part writes and the
final merge), kills it after a random delay drawn uniformly over the extraction's working time
(from the moment the feature writer is open to the end of an uninterrupted run), checks that every file
under a real name is a readable HDF5 file, runs the same command again, and compares every sample's
features and mask bit for bit. One CPU thread per process, as kernels round differently with other
thread counts.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

EXTRACT = ["extract", "--encoder", "regnet_y_400mf", "--weights", "none", "--image-size", "64", "--batch-size", "16",
           "--num-workers", "0", "--flush-frames", "1", "--quiet"]


def emotk(args, ws: Path, wait: bool = True):
    env = dict(os.environ, OMP_NUM_THREADS="1", EMOTK_WORKSPACE=str(ws))
    cmd = [sys.executable, "-m", "emotk", *args]
    if wait:
        return subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_store(path: Path) -> dict:
    from emotk.features.store import FeatureStore

    with FeatureStore(path) as store:
        return {sid: store.read(sid) for sid in store.keys()}


def same(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(np.array_equal(a[k][0], b[k][0]) and np.array_equal(a[k][1], b[k][1]) for k in a)


def whole_files(features: Path) -> bool:
    """Every .h5 under a real (non-temporary) name opens and reads."""
    for p in list(features.glob("*.h5")) + list(features.glob("*.parts/part-*.h5")):
        try:
            with h5py.File(p, "r") as f:
                for k in f:
                    if k != "mask":
                        f[k][()]
        except OSError:
            return False
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from emotk.datasets import prepare_dataset
    from emotk.synth import make_affwild2
    from emotk.workspace import Workspace

    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_affwild2(tmp / "raw", seed=1)
        prepared = tmp / "prepared"
        prepare_dataset(Workspace.open(prepared), "affwild2", tmp / "raw")
        base = tmp / "base"
        shutil.copytree(prepared, base)
        proc = emotk(EXTRACT, base, wait=False)
        t0 = time.time()
        parts_dir = base / "affwild2/features/regnet_y_400mf.parts"
        while not parts_dir.exists() and proc.poll() is None:  # the writer is open: encoding starts
            time.sleep(0.005)
        t_work = time.time()
        proc.wait()
        duration = time.time() - t_work  # the work itself, after start-up
        startup = t_work - t0
        feat = "affwild2/features/regnet_y_400mf.h5"
        reference = read_store(base / feat)
        identical = mid_work = 0
        for i in range(args.trials):
            ws = tmp / f"trial{i}"
            shutil.copytree(prepared, ws)
            delay = rng.uniform(0.0, duration)
            proc = emotk(EXTRACT, ws, wait=False)
            pdir = ws / "affwild2/features/regnet_y_400mf.parts"
            while not pdir.exists() and proc.poll() is None:  # start-up (imports, model) is not the interesting part
                time.sleep(0.005)
            time.sleep(delay)
            killed = proc.poll() is None
            if killed:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            features = ws / "affwild2/features"
            parts = list(features.glob("*.parts/part-*.h5")) if features.is_dir() else []
            mid_work += bool(killed and parts)
            ok_files = whole_files(features) if features.is_dir() else True
            emotk(EXTRACT, ws)
            ok = ok_files and same(read_store(ws / feat), reference)
            identical += ok
            print(f"trial {i + 1:2d}: kill {delay:5.2f}s into ~{duration:.1f}s of work "
                  f"({'killed' if killed else 'had finished'}, {len(parts)} part files) → "
                  f"{'identical' if ok else 'DIFFERENT' if ok_files else 'CORRUPT FILE'}", flush=True)
            shutil.rmtree(ws)
        print(f"recovered with identical features: {identical}/{args.trials} "
              f"({mid_work} kills landed after the first part file was written)")


if __name__ == "__main__":
    main()
