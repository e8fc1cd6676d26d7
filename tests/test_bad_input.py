"""Bad input: each case gives one clear message naming the file and what to do (exit 2, no
traceback) or a listed skip in failures.csv — and nothing already written is lost.

Covered elsewhere: malformed annotation line, annotated track without crops, the −5 marker, an
annotation longer than the crops, wrong --root (test_affwild2.py, test_cli.py); a cache made with
other options, a newer workspace, a leaking split (test_pipeline.py, test_cli.py); videos (media tests).
"""

import csv
import os
import shutil

import h5py
import numpy as np
import polars as pl
import pytest

from emotk.datasets import prepare_dataset
from emotk.errors import RunError, WorkspaceError
from emotk.features.extract import extract_frames
from emotk.features.store import FeatureStore
from emotk.train.loop import TrainConfig, run_dir, train_run
from emotk.workspace import Workspace, safe_join, validate_manifest
from tests.procs import emotk

ANN = "6th_ABAW_Annotations/VA_Estimation_Challenge"
OPTS = dict(encoder="regnet_y_400mf", weights="none", image_size=64, batch_size=16, num_workers=0, progress=False)


def _failures(ws: Workspace) -> list[dict]:
    with open(ws.failures_path("affwild2"), newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _clean(proc) -> None:
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("error:") == 1, proc.stderr


@pytest.fixture(scope="module")
def ready(mini_affwild2, tmp_path_factory):
    """A prepared, extracted workspace with the official split."""
    ws = Workspace.open(tmp_path_factory.mktemp("bad") / "ws")
    prepare_dataset(ws, "affwild2", mini_affwild2)
    extract_frames(ws, "affwild2", **OPTS)
    from emotk.splits import make_split

    make_split(ws, "affwild2", by="official")
    return ws


def test_corrupt_truncated_and_removed_crops(mini_affwild2, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(mini_affwild2, raw)
    ws = Workspace.open(tmp_path / "ws")
    prepare_dataset(ws, "affwild2", raw)
    crops = raw / "cropped_aligned"
    (crops / "102/00005.jpg").write_bytes(b"this is not a jpeg")  # corrupt
    good = (crops / "102/00006.jpg").read_bytes()
    (crops / "102/00006.jpg").write_bytes(good[: len(good) // 2])  # truncated
    shutil.rmtree(crops / "video45_1")  # crops gone after prepare
    out = emotk("extract", "--weights", "none", "--image-size", "64", "--num-workers", "0", "--quiet", workspace=ws.root)
    assert "6 extracted" in out.stdout and "1 skipped" in out.stdout and "2 unreadable images masked" in out.stdout
    rows = {(r["sample_id"], os.path.basename(r["file"])): r for r in _failures(ws)}
    assert "masked" in rows[("102", "00005.jpg")]["reason"] and ("102", "00006.jpg") in rows
    assert "no frame images" in rows[("video45_1", "video45_1")]["reason"]
    with FeatureStore(ws.feature_path("affwild2", "regnet_y_400mf")) as store:
        feats, mask = store.read("102")
        assert not mask[4] and not mask[5] and mask[3] and np.isfinite(feats.astype(np.float32)).all()
        assert "video45_1" not in store and len(store) == 6
    # training on a split that needs the skipped sample: one clear message, pointing at failures.csv
    emotk("split", "--official", workspace=ws.root)
    proc = emotk("train", "gru", "--epochs", "1", "--seq-len", "16", workspace=ws.root, check=False)
    _clean(proc)
    assert "video45_1" in proc.stderr and "failures.csv" in proc.stderr


def test_nan_out_of_range_and_short_annotations(mini_affwild2, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(mini_affwild2, raw)
    ann = raw / ANN / "Train_Set"
    lines = (ann / "102.txt").read_text().splitlines()
    lines[2], lines[3], lines[4] = "nan,0.1", "1.5,0.2", "0.1,-7"
    (ann / "102.txt").write_text("\n".join(lines) + "\n")
    short = (ann / "122-60-1920x1080-1.txt").read_text().splitlines()[:21]  # 20 labels for 36 crops
    (ann / "122-60-1920x1080-1.txt").write_text("\n".join(short) + "\n")
    ws = Workspace.open(tmp_path / "ws")
    manifest, failures = prepare_dataset(ws, "affwild2", raw)
    reason = {f["sample_id"]: f["reason"] for f in failures}
    assert "3 frames have values outside [-1, 1] or NaN" in reason["102"]
    with h5py.File(ws.labels_path("affwild2")) as f:
        assert np.isnan(f["102"][1:4]).all()
        va_short = f["122-60-1920x1080-1"][()]
    row = manifest.filter(pl.col("sample_id") == "122-60-1920x1080-1").to_dicts()[0]
    assert row["n_frames"] == 36 and row["n_label_lines"] == 20 and np.isnan(va_short[20:]).all()


def test_odd_file_names_and_duplicate_tracks(mini_affwild2, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(mini_affwild2, raw)
    crops, ann = raw / "cropped_aligned", raw / ANN
    os.rename(crops / "video45_1", crops / "clip 7 été")  # spaces and non-ASCII: not a sample id, listed, skipped
    os.rename(ann / "Validation_Set/video45_1.txt", ann / "Validation_Set/clip 7 été.txt")
    os.rename(bytes(crops / "102"), bytes(crops) + b"/bad\xff name")  # not UTF-8: listed, skipped
    os.rename(bytes(ann / "Train_Set/102.txt"), bytes(ann) + b"/Train_Set/bad\xff name.txt")
    shutil.copy(ann / "Validation_Set/24-30-640x360.txt", ann / "Train_Set/24-30-640x360.txt")  # in two splits
    ws = Workspace.open(tmp_path / "ws")
    manifest, failures = prepare_dataset(ws, "affwild2", raw)
    assert "clip 7 été" not in manifest["sample_id"].to_list()
    assert "24-30-640x360" not in manifest["sample_id"].to_list()
    reasons = {f["sample_id"]: f["reason"] for f in _failures(ws)}  # written as readable UTF-8
    assert "not valid UTF-8" in reasons["bad\\xff name"] and "annotated twice" in reasons["24-30-640x360"]
    assert "cannot be a sample id" in reasons["clip 7 été"]
    summary = extract_frames(ws, "affwild2", **OPTS)
    assert summary.done == manifest.height
    with FeatureStore(ws.feature_path("affwild2", "regnet_y_400mf")) as store:
        assert store.read("10-60-1280x720_left")[1].sum() > 0


def test_duplicate_sample_ids_refused(ready):
    manifest = ready.read_manifest("affwild2")
    with pytest.raises(WorkspaceError, match="duplicate sample ids.*'102'"):
        validate_manifest(pl.concat([manifest, manifest.filter(pl.col("sample_id") == "102")]))


def test_manifest_paths_cannot_escape(ready, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    for bad in ("../outside", "/etc", "a/../../b"):
        with pytest.raises(WorkspaceError, match="escapes"):
            safe_join(base, bad)
    assert safe_join(base, "a/b c/é") == base.resolve() / "a/b c/é"
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(ready.dataset_dir("affwild2"), ws.dataset_dir("affwild2"), ignore=shutil.ignore_patterns("features"))
    manifest = ws.read_manifest("affwild2")
    manifest.with_columns(pl.when(pl.col("sample_id") == "102").then(pl.lit("../../../../etc"))
                          .otherwise(pl.col("media")).alias("media")).write_parquet(ws.manifest_path("affwild2"))
    proc = emotk("extract", "--weights", "none", "--image-size", "64", "--quiet", workspace=ws.root, check=False)
    _clean(proc)
    assert "escapes" in proc.stderr and "../../../../etc" in proc.stderr


def test_checkpoints_of_another_model_or_unreadable(ready, tmp_path):
    common = dict(dataset="affwild2", inputs={"frames": "regnet_y_400mf"}, split="official",
                  overrides={"stages.*.epochs": 1, "seq_len": 16}, runs_dir=str(tmp_path / "runs"),
                  model_options={"hidden": 8, "layers": 1})
    gru = TrainConfig(model="gru", **common)
    train_run(ready, gru, progress=False)
    lstm_dir = run_dir(ready, TrainConfig(model="lstm", **common))
    lstm_dir.mkdir(parents=True)
    shutil.copy(run_dir(ready, gru) / "checkpoint.pt", lstm_dir / "checkpoint.pt")
    before = (lstm_dir / "checkpoint.pt").read_bytes()
    args = ["train", "lstm", "--epochs", "1", "--seq-len", "16", "-o", "hidden=8", "-o", "layers=1",
            "--runs", str(tmp_path / "runs"), "--quiet"]
    proc = emotk(*args, workspace=ready.root, check=False)
    _clean(proc)
    assert "holds a 'gru' model, not 'lstm'" in proc.stderr and str(lstm_dir / "checkpoint.pt") in proc.stderr
    assert (lstm_dir / "checkpoint.pt").read_bytes() == before  # nothing deleted or overwritten
    (lstm_dir / "checkpoint.pt").write_bytes(before[:100])
    proc = emotk(*args, workspace=ready.root, check=False)
    _clean(proc)
    assert "not a readable emotk checkpoint" in proc.stderr and "delete it" in proc.stderr
    # other settings are another run (another folder); the unfinished one is left as it was
    (run_dir(ready, gru) / "metrics.json").unlink()
    other = TrainConfig(model="gru", **{**common, "overrides": {**common["overrides"], "stages.*.optimizer.lr": 1e-2}})
    assert run_dir(ready, other) != run_dir(ready, gru)
    with pytest.raises(RunError, match="--no-resume"):
        train_run(ready, gru, resume=False, progress=False)
    assert (run_dir(ready, gru) / "best.pt").exists()


def test_unreadable_feature_cache(ready, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    shutil.copytree(ready.dataset_dir("affwild2"), ws.dataset_dir("affwild2"))
    ws.feature_path("affwild2", "regnet_y_400mf").write_bytes(b"\x89HDF\r\n garbage")
    proc = emotk("train", "gru", "--epochs", "1", "--seq-len", "16", "--quiet", workspace=ws.root, check=False)
    _clean(proc)
    assert "regnet_y_400mf.h5 is not a readable HDF5 file" in proc.stderr and "delete it" in proc.stderr
