"""AFEW-VA: the real prepare flow on a miniature (png frames, JSON with 68 landmarks per frame)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from emotk.datasets import get_dataset, prepare_dataset, read_frame_labels
from emotk.datasets.afewva import LABEL_NAMES, bin20, mood_of
from emotk.errors import DatasetError
from emotk.workspace import MANIFEST_COLUMNS, Workspace
from media_factory import make_afewva


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("afewva-raw")
    make_afewva(root)  # 001, 002 (Jane Doe), 003 (John Roe, frames 3-4 without JSON), 004 (no JSON)
    return root


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    manifest, failures = prepare_dataset(ws, "afewva", raw, progress=False)
    return ws, manifest, failures


def test_task():
    t = get_dataset("afewva").task
    assert (t.kind, t.targets, t.metric, t.seq_len, t.n_classes) == ("clip_classification", ("mood",), "acc", 32, 3)


def test_manifest(prepared):
    ws, m, _ = prepared
    assert set(MANIFEST_COLUMNS) <= set(m.columns)
    assert m["sample_id"].to_list() == ["001", "002", "003"]
    assert m["subject"].to_list() == ["Jane Doe", "Jane Doe", "John Roe"]
    assert m["split"].null_count() == 3
    assert set(m["n_frames"]) == {12} and set(m["frame_base"]) == {0} and set(m["media_kind"]) == {"frames_dir"}
    assert m["mood"].to_list() == [1, 2, 1]  # ramp −2…6: positive; constant −3: negative
    assert m["unlabelled_frames"].to_list() == [0, 0, 2]
    for row in m.iter_rows(named=True):
        crops = ws.media_path("afewva", row)
        assert sorted(p.name for p in crops.glob("*.jpg")) == [f"{i:05d}.jpg" for i in range(12)]


def test_frame_labels_nan_where_json_has_no_entry(prepared):
    ws, _, _ = prepared
    labels = read_frame_labels(ws.labels_path("afewva"))
    assert set(labels) == {"001", "002", "003"}
    lab = labels["003"]
    assert lab.shape == (12, len(LABEL_NAMES)) and lab.dtype == np.float32
    assert np.isnan(lab[3:5]).all() and np.isfinite(lab[[0, 1, 2, 5, 11]]).all()
    assert lab[0, 0] == -2 and lab[0, 1] == -3  # raw −10…10 values
    assert (lab[np.isfinite(lab[:, 2]), 2] == 1).all()  # clip mood on every labelled frame
    info = json.loads(ws.info_path("afewva").read_text())
    assert info["label_names"] == list(LABEL_NAMES)
    assert any(n.startswith("003: 2 of 12 frames have no JSON entry") and "00003, 00004" in n for n in info["notes"])


def test_clip_without_json_is_a_failure_row(prepared):
    _, _, failures = prepared
    assert len(failures) == 1
    f = failures[0]
    assert f["sample_id"] == "004" and "004.json" in f["reason"] and f["what_to_do"]


def test_crops_follow_the_landmarks(prepared, raw):
    import cv2

    ws, _, _ = prepared
    meta = json.loads((raw / "AFEW-VA" / "001" / "001.json").read_text())
    pts = np.asarray(meta["frames"]["00007"]["landmarks"])
    frame = cv2.imread(str(raw / "AFEW-VA" / "001" / "00007.png"))
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    face = cv2.resize(frame[int(y0):int(y1), int(x0):int(x1)], (64, 64)).astype(float)
    crop = cv2.imread(str(ws.dataset_dir("afewva") / "faces" / "001" / "00007.jpg"))
    assert crop.shape == (112, 112, 3)
    inner = cv2.resize(crop[16:96, 16:96], (64, 64)).astype(float)  # margin 0.2: the box is the middle 1/1.4
    assert np.abs(inner - face).mean() < 20


def test_mood_rules_and_bins():
    v = np.array([1, 1, 1, -5, np.nan])
    assert mood_of(v, "mean") == 2 and mood_of(v, "majority") == 1
    assert mood_of(np.array([0.4, -0.2]), "mean", neutral_band=0.5) == 0
    assert mood_of(np.array([0, 0]), "mean") == 0
    assert mood_of(np.array([np.nan])) is None
    assert mood_of(np.array([2, -2]), "majority") == 0  # tie → neutral
    assert bin20(np.array([-10, -1, 0, 8, 9, 10, np.nan])).tolist()[:6] == [0, 9, 10, 18, 19, 19]
    assert np.isnan(bin20(np.array([np.nan]))[0])


def test_mood_option_reaches_the_manifest(raw, tmp_path):
    m, _ = prepare_dataset(Workspace.open(tmp_path), "afewva", raw, mood_neutral_band=5.0, progress=False)
    assert m["mood"].to_list() == [0, 0, 0]  # every clip's mean valence is within ±5
    with pytest.raises(DatasetError, match="mood_rule"):
        prepare_dataset(Workspace.open(tmp_path), "afewva", raw, mood_rule="median")


def test_nested_root_and_no_clips(tmp_path):
    make_afewva(tmp_path / "raw" / "part01", clips={"010": {"actor": "A"}}, n_frames=4)
    m, _ = prepare_dataset(Workspace.open(tmp_path / "ws"), "afewva", tmp_path / "raw", progress=False)
    assert m["sample_id"].to_list() == ["010"] and m.filter(pl.col("sample_id") == "010")["n_frames"][0] == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no AFEW-VA clip folders"):
        prepare_dataset(Workspace.open(tmp_path / "ws2"), "afewva", tmp_path / "empty")


def test_options_that_do_not_apply_are_clear_errors(raw, tmp_path):
    with pytest.raises(DatasetError, match="do not apply to AFEW-VA"):
        prepare_dataset(Workspace.open(tmp_path), "afewva", raw, every=3)
    with pytest.raises(DatasetError, match="landmarks"):
        prepare_dataset(Workspace.open(tmp_path), "afewva", raw, detector="haar")
