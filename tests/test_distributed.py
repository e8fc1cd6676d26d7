"""torchrun for real: two CPU processes on gloo reproduce one process (training and extraction);
fold × seed runs spread over worker slots."""

import json
import sys

import numpy as np
import polars as pl
import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler

from emotk.datasets import prepare_dataset
from emotk.distributed import GlobalBatchSampler, shard_sizes, strip_option, torchrun_command
from emotk.train.schedule import Job, run_pool
from emotk.workspace import Workspace
from tests.procs import EXTRACT, TINY_GRU, assert_same_store, copy_prepared, emotk, find_run, store_arrays, torchrun

#: 2 processes vs 1: every history value, metric and weight agrees to this absolute tolerance. The
#: differences come only from float reduction order (GRU kernels on half batches, the gradient
#: all-reduce sum, validation in two shards); measured ≈ 1e-8 after 3 epochs.
TOL = 1e-5


@pytest.fixture(scope="module")
def ws(mini_affwild2, tmp_path_factory):
    root = tmp_path_factory.mktemp("dist") / "ws"
    prepare_dataset(Workspace.open(root), "affwild2", mini_affwild2)
    emotk("split", "--official", workspace=root)
    emotk(*EXTRACT, workspace=root)
    return root


def test_global_batches_are_the_single_process_batches():
    data = list(range(23))
    single = list(BatchSampler(RandomSampler(data, generator=torch.Generator().manual_seed(7 * 100_003 + 2)), 5, False))
    one = GlobalBatchSampler(data, 5, num_replicas=1, rank=0, seed=7 * 100_003)
    one.set_epoch(2)
    assert one.local_batches() == single
    ranks = [GlobalBatchSampler(data, 5, num_replicas=2, rank=r, seed=7 * 100_003) for r in range(2)]
    for s in ranks:
        s.set_epoch(2)
    local = [s.local_batches() for s in ranks]
    for k, batch in enumerate(single):
        sizes = ranks[0].real_sizes()[k]
        assert sizes == shard_sizes(len(batch), 2) and len(local[0][k]) == len(local[1][k])  # equal shapes to gather
        assert local[0][k][:sizes[0]] + local[1][k][:sizes[1]] == batch  # in order, nothing duplicated
    assert ranks[0].real_sizes()[-1] == [2, 1]
    assert shard_sizes(1, 2) == [1, 0]  # a rank with no share runs a padded dummy


def test_launcher_is_an_argument_list():
    cmd = torchrun_command(2, strip_option(["train", "gru", "--nproc", "2", "--name=x y; rm -rf /", "--nproc=3"], "--nproc"))
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"] and "--nproc_per_node=2" in cmd
    assert cmd[-3:] == ["train", "gru", "--name=x y; rm -rf /"]  # passed as one argument, never to a shell


def _run(runs):
    return find_run(runs, "gru-sm", "official", "official-seed1")


def test_two_gloo_processes_train_like_one(ws, tmp_path):
    # 21 training windows, global batch 5: the last batch has one window, so rank 1 runs a dummy
    args = ["train", "gru", "--split", "official", "--epochs", "3", "--batch-size", "5", *TINY_GRU]
    emotk(*args, "--runs", str(tmp_path / "one"), workspace=ws)
    out = emotk(*args, "--runs", str(tmp_path / "two"), "--nproc", "2", workspace=ws)
    assert out.stdout.count("official seed 1: ccc") == 1  # rank 0 alone reports
    one, two = _run(tmp_path / "one"), _run(tmp_path / "two")
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())  # no stray rank files
    h1, h2 = pl.read_csv(one / "history.csv"), pl.read_csv(two / "history.csv")
    assert h1.columns == h2.columns and h1.height == h2.height == 3
    for col in h1.columns:
        if h1[col].dtype == pl.Utf8:  # the stage name
            assert h1[col].to_list() == h2[col].to_list()
        else:
            np.testing.assert_allclose(h1[col].to_numpy(), h2[col].to_numpy(), rtol=0, atol=TOL, err_msg=col)
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (one, two))
    assert m1["best_epoch"] == m2["best_epoch"]
    for k in m1["metrics"]:
        assert abs(m1["metrics"][k] - m2["metrics"][k]) <= TOL, k
    w1 = torch.load(one / "best.pt", weights_only=True)["model"]
    w2 = torch.load(two / "best.pt", weights_only=True)["model"]
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=0, atol=TOL)
    cfg = json.loads((two / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["backend"] == "gloo" and cfg["protocol_resolved"]["stages"][0]["batch_size"] == 5
    p1, p2 = pl.read_parquet(one / "predictions.parquet"), pl.read_parquet(two / "predictions.parquet")
    assert p1["sample_id"].to_list() == p2["sample_id"].to_list() and p1["frame"].to_list() == p2["frame"].to_list()


def test_two_gloo_processes_extract_like_one(ws, tmp_path):
    dst = copy_prepared(ws, tmp_path / "ws")
    out = torchrun(2, *EXTRACT, "--flush-frames", "1", workspace=dst)
    assert out.stdout.count("7 extracted") == 1
    path = dst / "affwild2/features/regnet_y_400mf.h5"
    assert path.exists() and not (dst / "affwild2/features/regnet_y_400mf.parts").exists()  # rank 0 merged
    assert_same_store(store_arrays(path), store_arrays(ws / "affwild2/features/regnet_y_400mf.h5"))


def test_pool_runs_one_job_per_slot_at_a_time():
    jobs = [Job(f"job{i}", [sys.executable, "-c", "import time; time.sleep(0.4)"]) for i in range(5)]
    results = run_pool(jobs, ["cpu", "cpu"])
    assert sorted(r.key for r in results) == [f"job{i}" for i in range(5)] and all(r.returncode == 0 for r in results)
    # two slots: at most two jobs at once, and they did overlap
    events = sorted([(r.start, 1) for r in results] + [(r.end, -1) for r in results])
    running = np.cumsum([e for _, e in events])
    assert running.max() == 2


def test_fold_seed_schedule_on_two_cpu_slots(ws, tmp_path):
    emotk("split", "--by", "subject", "--folds", "3", "--pool", "train", workspace=ws)
    runs = tmp_path / "runs"
    args = ["train", "gru", "--split", "subject-k3-train", "--fold", "all", "--epochs", "1", "--batch-size", "8",
            *TINY_GRU, "--runs", str(runs)]
    emotk(*args, "--fold", "0", workspace=ws)  # finished before: skipped
    out = emotk(*args, "--gpus", "cpu,cpu", workspace=ws)
    assert "fold 0 seed 1: ccc" in out.stdout and "(already finished)" in out.stdout
    assert out.stdout.count("(slot cpu)") == 2
    base = find_run(runs, "gru-sm", "subject-k3-train")
    assert sorted(p.name for p in base.iterdir()) == ["fold0-seed1", "fold1-seed1", "fold2-seed1"]
    log = (base / "fold1-seed1/train.log").read_text()
    assert "slot cpu" in log and "fold 1 seed 1: ccc" in log
    # a run killed after its last checkpoint but before metrics.json is continued, not redone
    (base / "fold2-seed1/metrics.json").unlink()
    out = emotk(*args, workspace=ws)
    assert "fold 2 seed 1: ccc" in out.stdout
    table = emotk("report", str(runs), "--metric", "ccc", workspace=ws).stdout
    assert "gru" in table and "| 3 |" in table  # three folds aggregated
