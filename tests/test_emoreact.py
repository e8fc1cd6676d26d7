"""EmoReact: the real prepare flow on a miniature in the release layout (real mp4 files, quoted names)."""

from __future__ import annotations

import csv
import json
import shutil

import polars as pl
import pytest

from emotk.datasets import get_dataset, prepare_dataset
from emotk.datasets.emoreact import EMOTIONS, parse_label_line, parse_names, sample_id_of
from emotk.errors import DatasetError
from emotk.workspace import MANIFEST_COLUMNS, Workspace
from media_factory import EMOREACT_CLIPS, emoreact_label_line, make_emoreact


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("emoreact-raw")
    make_emoreact(root, noface=("iPOD3_2.mp4",), corrupt=("BULLYING30_2.mp4",), missing=("iPOD9_2.mp4",))
    return root


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    manifest, failures = prepare_dataset(ws, "emoreact", raw, progress=False)
    return ws, manifest, failures


def test_task_and_spec():
    spec = get_dataset("emoreact")
    assert spec.task.kind == "clip_multilabel" and spec.task.targets == EMOTIONS
    assert (spec.task.metric, spec.task.seq_len, spec.task.head, spec.task.feature_dim_hint) == ("auc", 128, "last", 784)


def test_manifest_rows(prepared, raw):
    ws, m, _ = prepared
    assert set(MANIFEST_COLUMNS) <= set(m.columns) and set(EMOTIONS) <= set(m.columns)
    # the apostrophe of the release's file name cannot be in a sample id: it becomes '_' (source keeps the name)
    assert sorted(m["sample_id"]) == sorted(["80_sTOYS115_2", "BULLYING12_2", "Gay_Marriage4_2", "SWING_COPTERS7_2"])
    assert dict(zip(m["sample_id"], m["split"])) == {
        "80_sTOYS115_2": "train", "BULLYING12_2": "train", "Gay_Marriage4_2": "validation", "SWING_COPTERS7_2": "validation",
    }
    assert (m["subject"] == m["sample_id"]).all()
    assert set(m["media_kind"]) == {"frames_dir"} and set(m["media_root"]) == {"workspace"}
    assert set(m["frame_base"]) == {0} and set(m["n_frames"]) == {16} and set(m["fps"]) == {25.0}
    assert set(m["no_face_frames"]) == {0} and set(m["decoder"]) <= {"decord", "av"}
    row = m.filter(pl.col("sample_id") == "80_sTOYS115_2").row(0, named=True)
    assert row["source"] == "EmoReact_V_1.0/Data/Train/80'sTOYS115_2.mp4"
    crops = ws.media_path("emoreact", row)
    assert crops == ws.dataset_dir("emoreact") / "faces" / "80_sTOYS115_2"
    assert sorted(p.name for p in crops.glob("*.jpg")) == [f"{i:05d}.jpg" for i in range(16)]


def test_labels_follow_the_names_order(prepared):
    _, m, _ = prepared
    order = [c for clips in EMOREACT_CLIPS.values() for c in clips]
    for sid in m["sample_id"]:
        i = order.index(next(c for c in order if c.replace("'", "_").startswith(sid)))
        want = parse_label_line(emoreact_label_line(i))
        row = m.filter(pl.col("sample_id") == sid).row(0, named=True)
        assert {k: row[k] for k in (*EMOTIONS, "valence")} == pytest.approx(want)


def test_bad_clips_are_listed_not_fatal(prepared):
    ws, _, failures = prepared
    by = {f["sample_id"]: f for f in failures}
    assert set(by) == {"iPOD3_2", "BULLYING30_2", "iPOD9_2"}
    assert "no face" in by["iPOD3_2"]["reason"] and by["iPOD3_2"]["stage"] == "faces"
    assert "BULLYING30_2.mp4" in by["BULLYING30_2"]["reason"] and by["BULLYING30_2"]["what_to_do"]
    assert "not in" in by["iPOD9_2"]["reason"] and by["iPOD9_2"]["stage"] == "media"
    with open(ws.failures_path("emoreact"), newline="") as fh:
        assert {r["sample_id"] for r in csv.DictReader(fh)} == set(by)
    info = json.loads(ws.info_path("emoreact").read_text())
    assert info["splits_found"] == ["train", "validation", "test"] and info["faces"]["detector"] == "mtcnn"


def test_rerun_reuses_crops(prepared, raw):
    ws, m, _ = prepared
    crop = ws.dataset_dir("emoreact") / "faces" / "BULLYING12_2" / "00000.jpg"
    before = crop.stat().st_mtime_ns
    m2, _ = prepare_dataset(ws, "emoreact", raw, progress=False)
    assert crop.stat().st_mtime_ns == before
    assert m2.sort("sample_id").equals(m.sort("sample_id"))


def test_names_parsing(tmp_path):
    p = tmp_path / "Train_names.txt"
    p.write_text("'80''sTOYS115_2.mp4'\r\n'BULLYING12_2.mp4'\n\n")
    assert parse_names(p) == ["80'sTOYS115_2.mp4", "BULLYING12_2.mp4"]
    assert [sample_id_of(n) for n in parse_names(p)] == ["80_sTOYS115_2", "BULLYING12_2"]
    with pytest.raises(ValueError):
        parse_label_line("0,1,0,1")
    with pytest.raises(ValueError):
        parse_label_line("0,1,0,1,0,0,2,0,4.0")


def test_validation_spelling_and_names_in_labels_folder(tmp_path):
    raw = tmp_path / "raw"
    make_emoreact(raw, n_frames=6, names_in="labels", val_spelling="validation")
    for clip in ("BULLYING12_2.mp4", "iPOD3_2.mp4", "BULLYING30_2.mp4", "iPOD9_2.mp4"):  # keep it small
        for split in ("Train", "Test"):
            (raw / "EmoReact_V_1.0" / "Data" / split / clip).unlink(missing_ok=True)
    m, failures = prepare_dataset(Workspace.open(tmp_path / "ws"), "emoreact", raw / "EmoReact_V_1.0", progress=False)
    assert set(m["split"]) == {"train", "validation"}
    assert "Gay_Marriage4_2" in m["sample_id"].to_list()
    assert {f["stage"] for f in failures} == {"media"}


def test_names_and_labels_count_mismatch_is_fatal_and_names_both_files(tmp_path):
    raw = tmp_path / "raw"
    make_emoreact(raw, n_frames=4)
    labels = raw / "EmoReact_V_1.0" / "Labels" / "val_labels.text"
    labels.write_text(labels.read_text() + "1,0,0,0,0,0,0,0,4.0\n")
    with pytest.raises(DatasetError) as ei:
        prepare_dataset(Workspace.open(tmp_path / "ws"), "emoreact", raw, progress=False)
    msg = str(ei.value)
    assert "Val_names.txt" in msg and "val_labels.text" in msg and "2 clips" in msg and "3 label lines" in msg


def test_not_emoreact(tmp_path):
    (tmp_path / "raw" / "something").mkdir(parents=True)
    with pytest.raises(DatasetError, match="Data/ and Labels/"):
        prepare_dataset(Workspace.open(tmp_path / "ws"), "emoreact", tmp_path / "raw")


def test_missing_labels_file_is_fatal(tmp_path):
    raw = tmp_path / "raw"
    make_emoreact(raw, n_frames=4)
    shutil.move(raw / "EmoReact_V_1.0" / "Labels" / "test_labels.text", tmp_path / "x")
    with pytest.raises(DatasetError, match="test split.*labels file not found"):
        prepare_dataset(Workspace.open(tmp_path / "ws"), "emoreact", raw)


def test_align_and_detector_weights_options(raw, tmp_path):
    """--align crops with level eyes (recorded in crop.json); --detector-weights takes the shipped files' copy
    for mtcnn and is refused for a detector without weight files."""
    from emotk.media import mtcnn
    from tests.procs import emotk

    weights = tmp_path / "weights"
    shutil.copytree(mtcnn.__file__.rsplit("/", 1)[0] + "/weights/mtcnn", weights)
    ws = tmp_path / "ws"
    emotk("prepare", "emoreact", "--root", str(raw), "--align", "--detector-weights", str(weights), "--quiet", workspace=ws)
    info = json.loads((ws / "emoreact/dataset.json").read_text())
    assert info["faces"]["align"] is True and info["options"]["detector_weights"] == str(weights)
    crop_json = next((ws / "emoreact/faces").glob("*/crop.json"))
    assert json.loads(crop_json.read_text())["options"].get("align") is True
    proc = emotk("prepare", "emoreact", "--root", str(raw), "--detector", "haar", "--detector-weights", str(weights),
                 workspace=tmp_path / "ws2", check=False)
    assert proc.returncode == 2 and "loads no weight files" in proc.stderr and "Traceback" not in proc.stderr
    proc = emotk("prepare", "emoreact", "--root", str(raw), "--detector-weights", str(tmp_path / "nowhere"),
                 workspace=tmp_path / "ws3", check=False)
    assert proc.returncode == 2 and "not an existing folder" in proc.stderr
