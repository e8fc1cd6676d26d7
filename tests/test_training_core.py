"""The training core: run identity, honest selection, protocols as files, multi-stage resume, device
augmentation and TTA, end-to-end training from face crops, grouping by any column."""

import json
import random
import shutil
import subprocess
import sys

import h5py
import numpy as np
import polars as pl
import pytest
import torch

from emotk.datasets import prepare_dataset
from emotk.errors import EmotkError
from emotk.splits import make_split
from emotk.train import protocol as protocols
from emotk.train.augment import augment, color_jitter, hflip
from emotk.train.loop import TrainConfig, lr_factor, run_dir, select_parts, train_run
from emotk.workspace import Workspace
from tests.procs import EXTRACT, emotk, find_run
from tests.test_crash import _kill_when, _start

TINY = {"hidden": 16, "layers": 1}
QUICK = {"stages.*.epochs": 2, "seq_len": 16, "stages.*.batch_size": 4}


@pytest.fixture(scope="module")
def ws(mini_affwild2, tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("core") / "ws"
    ws = Workspace.open(root)
    prepare_dataset(ws, "affwild2", mini_affwild2)
    emotk(*EXTRACT, workspace=root)
    make_split(ws, "affwild2", by="official")
    return ws


def _cfg(**kw) -> TrainConfig:
    base = dict(model="gru", dataset="affwild2", split="official", inputs={"frames": "regnet_y_400mf"},
                overrides=dict(QUICK), model_options=dict(TINY))
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------------------ run identity


def test_changed_settings_are_new_runs_and_new_report_rows(ws, tmp_path):
    runs = tmp_path / "runs"
    args = ["train", "gru", "--epochs", "2", "--seq-len", "16", "--quiet", "-o", "hidden=16", "-o", "layers=1",
            "--runs", str(runs)]
    first = emotk(*args, workspace=ws.root).stdout
    same = emotk(*args, workspace=ws.root).stdout  # identical settings: nothing trained, same number
    assert first.strip() == same.strip()
    (done,) = list(runs.glob("affwild2/gru-sm-*/official/official-seed1/metrics.json"))
    stamp = done.stat().st_mtime_ns
    emotk(*args, "--lr", "0.05", workspace=ws.root)
    folders = sorted(p.name for p in (runs / "affwild2").iterdir())
    assert len(folders) == 2 and all(f.startswith("gru-sm-") for f in folders)  # one per configuration
    assert done.stat().st_mtime_ns == stamp  # the first run untouched
    configs = [json.loads(p.read_text()) for p in runs.glob("affwild2/*/official/official-seed1/config.json")]
    lrs = sorted(c["protocol_resolved"]["stages"][0]["optimizer"]["lr"] for c in configs)
    assert lrs == [1e-3, 0.05]
    table = emotk("report", str(runs), workspace=ws.root).stdout
    rows = [line for line in table.splitlines() if line.startswith("| gru-sm")]
    assert len(rows) == 2 and all("| 1 |" in r for r in rows)  # never averaged across configurations
    assert any("lr=0.05" in r for r in rows) and any("lr=0.001" in r for r in rows)  # what differs is shown
    assert "Selection: val = epoch selected on a validation part" in table


def test_identity_covers_inputs_and_options(ws):
    a = run_dir(ws, _cfg())
    assert a.name == "official-seed1" and a.parent.name == "official"
    assert run_dir(ws, _cfg(seed=2)).parent == a.parent  # seeds of one configuration share its folder
    for other in (_cfg(model_options={"hidden": 8, "layers": 1}), _cfg(overrides={**QUICK, "seq_len": 8}),
                  _cfg(overrides={**QUICK, "select_on": "last"}), _cfg(protocol="nactcn", inputs={})):
        assert run_dir(ws, other).parent.parent != a.parent.parent
    # a changed input file (here the split) is another run even with equal options
    split = ws.split_path("affwild2", "official")
    backup = split.read_bytes()
    try:
        pl.read_parquet(split).head(6).write_parquet(split)
        assert run_dir(ws, _cfg()) != a
    finally:
        split.write_bytes(backup)


# ------------------------------------------------------------------------------ honest selection


def test_selection_never_sees_the_reported_part(ws, tmp_path):
    """Poison the reported part's labels: under the default rule the selection history and the chosen
    epoch are unchanged (only the reported numbers move); under `heldout` they change."""
    clean = _cfg(runs_dir=str(tmp_path / "clean"), overrides={**QUICK, "stages.*.epochs": 4})
    parts = select_parts(ws, clean)
    assert parts.rule == "val" and not set(parts.select) & set(parts.report)
    assert set(parts.select).isdisjoint(parts.train) and parts.report_name == "validation"
    manifest = ws.read_manifest("affwild2")
    subj = dict(zip(manifest["sample_id"], manifest["subject"]))
    assert {subj[s] for s in parts.select}.isdisjoint({subj[s] for s in parts.train})  # by subject
    a = train_run(ws, clean, progress=False)

    poisoned = Workspace.open(tmp_path / "poisoned")
    shutil.copytree(ws.dataset_dir("affwild2"), poisoned.dataset_dir("affwild2"))
    rng = np.random.default_rng(0)
    with h5py.File(poisoned.labels_path("affwild2"), "r+") as f:
        for sid in parts.report:
            f[sid][...] = rng.uniform(-1, 1, f[sid].shape).astype(np.float32) * np.isfinite(f[sid][()])
    b = train_run(poisoned, _cfg(runs_dir=str(tmp_path / "p"), overrides=clean.overrides), progress=False)
    assert a["best_epoch"] == b["best_epoch"]
    ha = pl.read_csv(run_dir(ws, clean) / "history.csv")
    hb = pl.read_csv(run_dir(poisoned, _cfg(runs_dir=str(tmp_path / "p"), overrides=clean.overrides)) / "history.csv")
    assert ha["val_ccc"].to_list() == hb["val_ccc"].to_list()  # the selection curve is blind to the poison
    assert a["metrics"]["ccc"] != b["metrics"]["ccc"]  # while the reported numbers do see it

    heldout = {**clean.overrides, "select_on": "heldout"}
    hc = train_run(ws, _cfg(runs_dir=str(tmp_path / "h1"), overrides=heldout), progress=False)
    hd = train_run(poisoned, _cfg(runs_dir=str(tmp_path / "h2"), overrides=heldout), progress=False)
    assert hc["select_on"] == "heldout"
    curves = [pl.read_csv(run_dir(w, _cfg(runs_dir=str(tmp_path / d), overrides=heldout)) / "history.csv")["val_ccc"]
              for w, d in ((ws, "h1"), (poisoned, "h2"))]
    assert curves[0].to_list() != curves[1].to_list()  # the papers' rule does select on the reported part
    assert hd["metrics"]["ccc"] != hc["metrics"]["ccc"]


def test_split_with_test_part_selects_on_validation(ws):
    """An official split with a test part: select on its validation part, report the test part."""
    split = ws.split_path("affwild2", "with-test")
    frame = pl.read_parquet(ws.split_path("affwild2", "official"))
    frame.with_columns(pl.when(pl.col("sample_id") == "video45_1").then(pl.lit("test")).otherwise(pl.col("split"))
                       .alias("split")).write_parquet(split)
    try:
        parts = select_parts(ws, _cfg(split="with-test"))
        assert parts.report == ["video45_1"] and parts.select == ["24-30-640x360"] and parts.report_name == "test"
        last = select_parts(ws, _cfg(split="with-test", overrides={**QUICK, "select_on": "last"}))
        assert last.select is None and "last epoch" in last.description
    finally:
        split.unlink()


# ------------------------------------------------------------------------------ protocols


TWO_STAGES = """
name: two-stages
description: a head-first warm-up, then everything with SGD and a step schedule
stages:
  - name: head
    epochs: 2
    batch_size: 4
    freeze: [rnn]
    optimizer: {name: adam, lr: 0.003}
    schedule: {name: none}
  - name: all
    epochs: 8
    batch_size: 4
    optimizer: {name: sgd, lr: 0.01, momentum: 0.9, nesterov: true}
    schedule: {name: step, per: step, step_size: 2, gamma: 0.5}
    early_stopping: {patience: 10}
"""


def test_two_stage_protocol_killed_in_stage_two_resumes_exactly(ws, tmp_path):
    proto = tmp_path / "two.yaml"
    proto.write_text(TWO_STAGES)
    args = ["train", "gru", "--protocol", str(proto), "--seq-len", "16", "--quiet", "-o", "hidden=16", "-o", "layers=2",
            "-o", "dropout=0.3"]
    emotk(*args, "--runs", str(tmp_path / "straight"), workspace=ws.root)
    straight = find_run(tmp_path / "straight", "gru-sm", "official", "official-seed1")
    hist = pl.read_csv(straight / "history.csv")
    assert hist["stage"].to_list() == ["head"] * 2 + ["all"] * 8
    run = tmp_path / "killed" / straight.relative_to(tmp_path / "straight")

    def in_stage_two() -> bool:
        try:
            return len(pl.read_csv(run / "history.csv")) >= 3
        except (OSError, pl.exceptions.PolarsError):
            return False

    proc = _start([*args, "--runs", str(tmp_path / "killed")], ws.root)
    assert _kill_when(proc, in_stage_two, random.Random(2).uniform(0.0, 0.05))
    assert not (run / "metrics.json").exists(), "the run finished before it could be killed"
    assert torch.load(run / "checkpoint.pt", weights_only=True)["stage"] == 1
    emotk(*args, "--runs", str(tmp_path / "killed"), workspace=ws.root)
    a, b = (json.loads((r / "metrics.json").read_text()) for r in (straight, run))
    assert a["metrics"] == b["metrics"] and a["best_epoch"] == b["best_epoch"]
    assert hist.equals(pl.read_csv(run / "history.csv"))
    # stage 1 froze the GRU: its weights after stage 1 equal the initial ones; the head moved
    first = torch.load(straight / "stage_start.pt", weights_only=True)["model"]
    torch.manual_seed(1)
    from emotk.models import build

    init = build("gru", "sm", "affwild2", in_dim=440, out_dim=2, head="frame_tanh", **{"hidden": 16, "layers": 2,
                                                                                       "dropout": 0.3}).state_dict()
    assert all(torch.equal(first[k], init[k]) for k in init if k.startswith("rnn."))
    assert not all(torch.equal(first[k], init[k]) for k in init if k.startswith("head."))


@pytest.mark.parametrize("text, needle", [
    ("stages: [{epochs: 2, optimiser: {lr: 0.1}}]", "unknown key 'optimiser'; valid keys: name, epochs"),
    ("stages: [{epochs: two}]", "stages.0.epochs: expected int, got 'two'"),
    ("stages: [{batch_size: 4}]", "stages.0: 'epochs' is required"),
    ("stages: [{epochs: 1, schedule: {name: cosine_warm}}]", "is not one of cosine, cosine_restarts, none, plateau, step"),
    ("stages: [{epochs: 1, augment: [{name: mixup}]}]", "unknown augmentation 'mixup'; known: color_jitter"),
    ("select_on: best\nstages: [{epochs: 1}]", "select_on: 'best' is not one of heldout, last, val"),
    ("stages: []", "'stages' is empty"),
])
def test_malformed_protocol_is_one_clear_error(ws, tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = emotk("train", "gru", "--protocol", str(path), "--runs", str(tmp_path / "runs"), workspace=ws.root, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert needle in proc.stderr and str(path) in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing trained, no folder made


def test_unknown_protocol_and_missing_stream_name_the_fix(ws, tmp_path):
    proc = emotk("train", "gru", "--protocol", "nactcn-paper", workspace=ws.root, check=False)
    assert proc.returncode == 2 and "unknown protocol 'nactcn-paper'" in proc.stderr
    assert all(name in proc.stderr for name in ("frozen", "nactcn", "nactcn-released"))
    proc = emotk("train", "gru", "--input", "frames=resnet18", "--runs", str(tmp_path / "r"), workspace=ws.root, check=False)
    assert proc.returncode == 2 and "emotk extract --encoder ENCODER --name resnet18" in proc.stderr


def test_shipped_protocols_resolve_per_dataset():
    r = protocols.resolve("nactcn-released", "emoreact")
    assert r["encoder"]["name"] == "regnet_y_800mf" and r["seq_len"] == 128
    assert r["stages"][0]["schedule"] == {**r["stages"][0]["schedule"], "name": "cosine_restarts", "t0": 40, "eta_min": 1e-5}
    assert [a["name"] for a in r["stages"][0]["augment"]] == ["hflip", "color_jitter"]
    a = protocols.resolve("nactcn-released", "affwild2", {"stages.*.epochs": 3})
    assert a["stages"][0]["epochs"] == 3 and a["stages"][0]["schedule"]["t0_epochs"] == 1.0
    assert protocols.resolve("frozen", "affwild2")["stages"][0]["optimizer"] == {"name": "adam", "lr": 1e-3, "weight_decay": 0.0}


def test_schedules_match_torch_schedulers():
    """The schedule factors against torch's own schedulers (a second implementation)."""
    def torch_lrs(make, steps, base=0.1, per_epoch=None):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=base)
        sch = make(opt)
        out = []
        for step in range(steps):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if per_epoch is None or (step + 1) % per_epoch == 0:
                sch.step()
        return out

    sched = dict(name="cosine_restarts", per="step", t0=5, t_mult=2, eta_min=1e-3, warmup_steps=0, warmup_epochs=0)
    f = lr_factor(sched, 0.1, steps_per_epoch=7, epochs=6)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2, eta_min=1e-3), 42)
    assert np.allclose([0.1 * f(s) for s in range(42)], ref, rtol=1e-6)
    sched = dict(name="cosine", per="epoch", t_mult=1, warmup_steps=0, warmup_epochs=0)
    f = lr_factor(sched, 0.1, steps_per_epoch=3, epochs=10)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10), 30, per_epoch=3)
    assert np.allclose([0.1 * f(s) for s in range(30)], ref, rtol=1e-6)
    sched = dict(name="step", per="epoch", step_size=2, gamma=0.5, warmup_steps=0, warmup_epochs=0)
    f = lr_factor(sched, 0.1, steps_per_epoch=3, epochs=8)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=2, gamma=0.5), 24, per_epoch=3)
    assert np.allclose([0.1 * f(s) for s in range(24)], ref, rtol=1e-6)
    warm = lr_factor(dict(name="none", per="step", warmup_steps=4, warmup_epochs=0), 0.1, 10, 1)
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------ augmentation and TTA


def test_device_augmentations_by_hand():
    x = torch.rand(3, 4, 3, 8, 8)  # 3 clips of 4 frames
    assert torch.equal(hflip(x, torch.Generator().manual_seed(0), p=1.0), x.flip(-1))
    assert torch.equal(hflip(x, torch.Generator().manual_seed(0), p=0.0), x)
    g = torch.Generator().manual_seed(5)
    torch.rand(3, generator=g)  # the p draw comes first
    factors = 0.6 + 0.8 * torch.rand(3, generator=g)  # brightness 0.4: uniform in [0.6, 1.4] per clip
    expected = (x * factors.view(3, 1, 1, 1, 1)).clamp(0, 1)
    got = color_jitter(x, torch.Generator().manual_seed(5), brightness=0.4)
    assert torch.allclose(got, expected, atol=1e-6)  # every frame of a clip gets its clip's factor
    pipe = [{"name": "hflip", "p": 0.5}, {"name": "random_crop", "padding": 2, "mode": "zeros"},
            {"name": "rotation", "degrees": 10.0}, {"name": "random_resized_crop", "scale": [0.5, 1.0], "ratio": [0.75, 1.33]}]
    a, b = augment(x, pipe, seed=11), augment(x, pipe, seed=11)
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, augment(x, pipe, seed=12))


def test_end_to_end_from_crops_learns_and_tta_evaluates(ws, tmp_path):
    runs = tmp_path / "runs"
    args = ["train", "gru", "--protocol", "nactcn", "--input", "crops", "--weights", "none", "--image-size", "32",
            "--epochs", "4", "--batch-size", "4", "--seq-len", "16", "--set", 'stages.0.augment=[{"name": "hflip"}]', "--quiet",
            "-o", "hidden=16", "-o", "layers=1", "--runs", str(runs)]
    emotk(*args, workspace=ws.root)
    run = find_run(runs, "gru-sm", "official", "official-seed1")
    config = json.loads((run / "config.json").read_text())
    assert config["inputs"] == {"crops": ""} and config["streams"] == ["crops"]
    assert config["protocol_resolved"]["encoder"]["name"] == "regnet_y_400mf"
    # the encoder is part of the model: regnet_y_400mf has 4,344,144 parameters with its 440→1000 classifier
    # (441,000), which is removed; GRU(440→16): 3·(16·440 + 16·16 + 2·16) = 21,984; Linear(16, 2): 34
    assert config["params"] == 4_344_144 - 441_000 + 21_984 + 34
    assert config["macs"] > 128 * 5_000_000  # ... and of its MACs (regnet at 32 px: ~8 MMACs a frame, 128 frames)
    loss = pl.read_csv(run / "history.csv")["train_loss"].to_list()
    # it learns: an epoch ends below the first (4 augmented epochs on a miniature are noisy, so not "the last")
    assert min(loss[1:]) < 0.9 * loss[0], loss
    plain = emotk("evaluate", str(run), workspace=ws.root).stdout
    flipped = emotk("evaluate", str(run), "--tta", "hflip", workspace=ws.root).stdout
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    assert f"{metrics['ccc']:.4f}" in plain and "ccc" in flipped
    proc = emotk("evaluate", str(find_run(runs, "gru-sm", "official", "official-seed1")), "--tta", "tencrop",
                 workspace=ws.root, check=False)
    assert proc.returncode == 2 and "unknown TTA set 'tencrop'; known: hflip, none" in proc.stderr


def test_tta_needs_pixels(ws, tmp_path):
    cfg = _cfg(runs_dir=str(tmp_path / "runs"), overrides={**QUICK, "stages.*.epochs": 1})
    train_run(ws, cfg, progress=False)
    from emotk.train.evaluate import evaluate_run

    with pytest.raises(EmotkError, match="transforms images"):
        evaluate_run(ws, run_dir(ws, cfg), tta="hflip")


# ------------------------------------------------------------------------------ grouping


def test_split_by_any_column(ws, tmp_path):
    other = Workspace.open(tmp_path / "ws")
    shutil.copytree(ws.dataset_dir("affwild2"), other.dataset_dir("affwild2"), ignore=shutil.ignore_patterns("features", "splits"))
    m = other.read_manifest("affwild2")
    session = {sid: f"s{i % 3}" for i, sid in enumerate(sorted(m["sample_id"]))}
    subject_session = {}
    for sid, subj in zip(m["sample_id"], m["subject"]):  # sessions nest subjects, as in IEMOCAP
        subject_session.setdefault(subj, session[sid])
    m.with_columns(pl.col("subject").replace_strict(subject_session).alias("session")).write_parquet(
        other.manifest_path("affwild2"))
    path, frame = make_split(other, "affwild2", by="session", folds=3)
    assert path.name == "session-k3.parquet" and set(frame["fold"]) == {0, 1, 2}
    assert frame.group_by("group").agg(pl.col("fold").n_unique())["fold"].max() == 1
    assert emotk("split", "--check", workspace=other.root).returncode == 0  # the only split is implied
    proc = emotk("split", "--by", "speaker", "--folds", "2", workspace=other.root, check=False)
    assert proc.returncode == 2 and "no column 'speaker'" in proc.stderr and "session" in proc.stderr


# ------------------------------------------------------------------------------ bad input (issue "trust")


@pytest.mark.parametrize("flag, value, needle", [
    ("--epochs", "0", "--epochs"), ("--epochs", "-3", "--epochs"), ("--seq-len", "0", "--seq-len"),
    ("--batch-size", "0", "--batch-size"), ("--lr", "0", "--lr"), ("--lr", "nan", "--lr"), ("--seeds", "", "--seeds"),
    ("--seeds", "1,x", "--seeds"), ("--num-workers", "-1", "--num-workers"), ("--val-fraction", "1.5", "--val-fraction"),
    ("--select-on", "best", "--select-on"), ("--input", "sound=x", "--input"), ("--input", "audio=x", "multimodal"),
    ("--set", "epochs", "--set"),
])
def test_bad_train_values_exit_2_before_any_folder(ws, tmp_path, flag, value, needle):
    runs = tmp_path / "runs"
    proc = emotk("train", "gru", flag, value, "--runs", str(runs), workspace=ws.root, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and needle in proc.stderr, proc.stderr
    assert not runs.exists()


def test_split_naming_samples_the_manifest_lacks_says_to_remake_the_split(ws, tmp_path):
    other = Workspace.open(tmp_path / "ws")
    shutil.copytree(ws.dataset_dir("affwild2"), other.dataset_dir("affwild2"))
    split = other.split_path("affwild2", "official")
    frame = pl.read_parquet(split)
    pl.concat([frame, frame.head(1).with_columns(pl.lit("ghost-track").alias("sample_id"))]).write_parquet(split)
    proc = emotk("train", "gru", "--quiet", workspace=other.root, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'ghost-track'" in proc.stderr and "emotk split" in proc.stderr and "emotk extract" not in proc.stderr
    split.write_bytes(b"PAR1 not really")
    proc = emotk("train", "gru", "--quiet", workspace=other.root, check=False)
    assert proc.returncode == 2 and "not a readable split file" in proc.stderr and "Traceback" not in proc.stderr


def test_non_finite_loss_fails_the_run_unfinished(ws, tmp_path):
    """Labels whose squares overflow (3e38) make the CCC loss NaN: the run stops with an error, unfinished."""
    other = Workspace.open(tmp_path / "ws")
    shutil.copytree(ws.dataset_dir("affwild2"), other.dataset_dir("affwild2"))
    with h5py.File(other.labels_path("affwild2"), "r+") as f:
        for sid in f:
            f[sid][...] = np.where(np.isfinite(f[sid][()]), np.float32(3e38), np.nan)
    cfg = _cfg(runs_dir=str(tmp_path / "runs"))
    with pytest.raises(EmotkError, match="not marked finished"):
        train_run(other, cfg, progress=False)
    assert not (run_dir(other, cfg) / "metrics.json").exists()


def test_report_lists_what_it_skipped(ws, tmp_path):
    runs = tmp_path / "runs"
    train_run(ws, _cfg(runs_dir=str(runs), overrides={**QUICK, "stages.*.epochs": 1}), progress=False)
    done = find_run(runs, "gru-sm", "official", "official-seed1")
    half = done.parent / "official-seed2"
    shutil.copytree(done, half)
    result = json.loads((half / "metrics.json").read_text())
    (half / "metrics.json").write_text(json.dumps({**result, "status": "running"}))
    proc = emotk("report", str(runs), workspace=ws.root)
    assert "skipped 1 run folder(s)" in proc.stderr and "official-seed2" in proc.stderr and "unfinished" in proc.stderr
    proc = emotk("report", str(runs), "--metric", "ccc_valence", workspace=ws.root)
    assert "skipped 1" in proc.stderr


def test_end_to_end_checkpointing_gives_the_same_gradients():
    """Activation checkpointing of the encoder recomputes, it does not change the gradients."""
    import copy

    from emotk.models import build
    from emotk.models.e2e import EndToEnd

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    plain = EndToEnd(encoder, build("gru", in_dim=8, out_dim=2, head="frame_tanh", hidden=8, layers=1))
    ckpt = copy.deepcopy(plain)
    ckpt.checkpointing = True
    x = torch.rand(2, 5, 3, 16, 16)
    grads = []
    for net in (plain, ckpt):
        net.train()
        net(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in net.named_parameters()})
    assert all(torch.allclose(grads[0][n], grads[1][n], atol=1e-6) for n in grads[0])


def test_compiled_training_step_is_its_own_run_and_matches_eager(ws, tmp_path):
    """--compile (torch.compile of the training step) trains the same model: a run of its own (its rounding
    may differ), whose losses and metric agree with the eager run's to float tolerance."""
    eager = train_run(ws, _cfg(runs_dir=str(tmp_path / "runs")), progress=False)
    compiled = train_run(ws, _cfg(runs_dir=str(tmp_path / "runs"), compile=True), progress=False)
    a, b = run_dir(ws, _cfg(runs_dir=str(tmp_path / "runs"))), run_dir(ws, _cfg(runs_dir=str(tmp_path / "runs"), compile=True))
    assert a != b and json.loads((b / "config.json").read_text())["identity"]["compiled"] is True
    ha, hb = (pl.read_csv(d / "history.csv") for d in (a, b))
    assert hb["train_loss"].to_list() == pytest.approx(ha["train_loss"].to_list(), rel=1e-4, abs=1e-5)
    assert compiled["metrics"]["ccc"] == pytest.approx(eager["metrics"]["ccc"], abs=1e-4)


# ------------------------------------------------------------------------------ NA kernels


def test_nactcn_builds_the_native_kernel_in_the_workspace_and_records_it(ws, tmp_path):
    from emotk.models import na_cpu
    from tests.procs import env

    if not na_cpu.available():
        pytest.skip(f"native kernel: {na_cpu.build_info()}")
    e = env(ws.root)
    e.pop("EMOTK_KERNEL_CACHE", None)
    runs = tmp_path / "runs"
    args = ["train", "nactcn", "--epochs", "1", "--seq-len", "16", "--quiet", "-o", "channels=[8, 8]",
            "-o", "heads=2", "--runs", str(runs)]
    proc = subprocess.run([sys.executable, "-m", "emotk", *args], capture_output=True, text=True, env=e)
    assert proc.returncode == 0, proc.stderr
    (lib,) = (ws.root / "cache" / "kernels").glob("na_cpu-*.so")
    (config,) = runs.glob("affwild2/nactcn-*/official/official-seed1/config.json")
    assert json.loads(config.read_text())["na_kernels"][0].startswith(f"native ({lib} (")
    pinned = subprocess.run([sys.executable, "-m", "emotk", *args, "--na-backend", "torch"], capture_output=True,
                            text=True, env=e)
    assert pinned.returncode == 0, pinned.stderr
    configs = [json.loads(p.read_text()) for p in runs.glob("affwild2/nactcn-*/official/official-seed1/config.json")]
    assert sorted(c["na_kernels"][0].split(" ")[0] for c in configs) == ["native", "torch"]  # two identities
