"""prepare affwild2 on a miniature in the real ABAW layout."""

import shutil

import h5py
import numpy as np
import polars as pl
import pytest

from emotk.datasets import prepare_dataset
from emotk.datasets.affwild2 import subject_of
from emotk.errors import DatasetError
from emotk.workspace import MANIFEST_COLUMNS, Workspace
from tests.conftest import MINI_TRACKS


@pytest.fixture(scope="module")
def prepared(mini_affwild2, tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    manifest, failures = prepare_dataset(ws, "affwild2", mini_affwild2)
    return ws, manifest, failures


def test_manifest_contract(prepared):
    ws, manifest, _ = prepared
    on_disk = pl.read_parquet(ws.manifest_path("affwild2"))
    assert set(MANIFEST_COLUMNS) <= set(on_disk.columns)
    assert sorted(on_disk["sample_id"].to_list()) == sorted(MINI_TRACKS)
    assert on_disk["sample_id"].n_unique() == on_disk.height
    splits = dict(zip(on_disk["sample_id"], on_disk["split"]))
    assert splits["102"] == "train" and splits["video45_1"] == "validation"


def test_subjects_from_track_names(prepared):
    _, manifest, _ = prepared
    subj = dict(zip(manifest["sample_id"], manifest["subject"]))
    assert subj["10-60-1280x720_left"] != subj["10-60-1280x720_right"]  # two people in one video
    assert subj["122-60-1920x1080-1"] == subj["122-60-1920x1080-2"]  # one person, two parts
    assert subject_of("video45_2") == "video45"
    assert subject_of("102") != subject_of("102-30-640x360")


def test_per_frame_labels_invalid_and_mismatch(prepared, mini_affwild2):
    ws, manifest, _ = prepared
    row = manifest.filter(pl.col("sample_id") == "102").to_dicts()[0]
    assert row["n_label_lines"] == 45 and row["n_frames"] == 45  # one extra label line beyond the 44 frames
    assert row["n_crops"] == 42 and row["missing_crops"] == 3
    with h5py.File(ws.labels_path("affwild2")) as f:
        va = f["102"][()]
    raw = (mini_affwild2 / "6th_ABAW_Annotations/VA_Estimation_Challenge/Train_Set/102.txt").read_text().splitlines()[1:]
    minus5 = [i for i, line in enumerate(raw) if line.startswith("-5")]
    assert len(minus5) == 3
    assert np.isnan(va[minus5]).all()
    ok = [i for i in range(len(raw)) if i not in minus5]
    expected = np.array([[float(x) for x in raw[i].split(",")] for i in ok], dtype=np.float32)
    np.testing.assert_allclose(va[ok], expected, atol=1e-6)
    crops = {int(p.stem) - 1 for p in (mini_affwild2 / "cropped_aligned" / "102").glob("*.jpg")}
    assert row["n_valid"] == sum(1 for i in range(len(va)) if i in crops and np.isfinite(va[i]).all())


def test_annotation_folder_found_by_content(mini_affwild2, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(mini_affwild2, raw)
    (raw / "6th_ABAW_Annotations").rename(raw / "3rd ABAW Annotations")
    manifest, _ = prepare_dataset(Workspace.open(tmp_path / "ws"), "affwild2", raw)
    assert manifest.height == len(MINI_TRACKS)


def test_bad_inputs_are_clear(mini_affwild2, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(mini_affwild2, raw)
    ann = raw / "6th_ABAW_Annotations/VA_Estimation_Challenge/Train_Set"
    (ann / "102.txt").write_text("valence,arousal\n0.1,0.2\nabc,0.1\n")  # malformed line
    shutil.rmtree(raw / "cropped_aligned" / "video45_1")  # annotated but no crops
    ws = Workspace.open(tmp_path / "ws")
    manifest, failures = prepare_dataset(ws, "affwild2", raw)
    reasons = {f["sample_id"]: f["reason"] for f in failures}
    assert any(f["sample_id"] == "102" and f["file"].endswith("102.txt:3") and "line 3" in f["reason"] for f in failures)
    assert "no crop folder" in reasons["video45_1"]
    # the malformed line's frame (1) is unlabelled; the track is kept and line 2 is still frame 0
    assert "102" in manifest["sample_id"].to_list()
    with h5py.File(ws.labels_path("affwild2")) as f:
        va = f["102"][()]
    np.testing.assert_allclose(va[0], [0.1, 0.2], atol=1e-6)
    assert np.isnan(va[1:]).all()
    text = ws.failures_path("affwild2").read_text()
    assert "video45_1" in text and "what_to_do" in text

    with pytest.raises(DatasetError, match="VA annotation folder"):
        prepare_dataset(ws, "affwild2", raw / "cropped_aligned")
