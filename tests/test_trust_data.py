"""Issue 10 (trust), datasets and media: wrong raw input is a named defect in failures.csv or one clear
error (exit 2, no traceback, the file and the fix named) — never a silently wrong result.

Expected values come from what the tests wrote (the synthetic labels, the geometry of the boxes), not
from the code under test.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil

import cv2
import h5py
import numpy as np
import polars as pl
import pytest

from emotk.datasets import DATASETS, DatasetSpec, Prepared, Task, prepare_dataset, read_frame_labels
from emotk.datasets.base import SAMPLE_ID_PATTERN, number, sample_id_problem
from emotk.errors import DatasetError, WorkspaceError
from emotk.media.faces import MIN_FACE_SIDE, MIN_INSIDE_FRACTION, box_problem
from emotk.media.video import MIN_DECODED_FRACTION, frame_shortfall
from emotk.synth import make_affwild2
from emotk.workspace import Workspace
from media_factory import (
    face_frames,
    landmarks68,
    make_afewva,
    make_emoreact,
    write_overreported_mp4,
    write_truncated_mp4,
    write_video,
)
from tests.procs import emotk

ANN = "6th_ABAW_Annotations/VA_Estimation_Challenge"
TRACKS = {"40-30-640x360": ("Train_Set", 14), "41-30-640x360": ("Validation_Set", 12)}


def _clean(proc, *needles: str) -> str:
    """Exit 2, no traceback, exactly one `error:` line, which names every needle."""
    err = proc.stderr
    assert proc.returncode == 2 and "Traceback" not in err and err.count("error:") == 1, (proc.returncode, err)
    for n in needles:
        assert n in err, (n, err)
    return err


def _failures(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _digest(folder) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def aw2(tmp_path_factory):
    """A two-track Aff-Wild2 miniature and the labels it wrote (rows of -5 where a frame has no label)."""
    root = tmp_path_factory.mktemp("aw2")
    labels = make_affwild2(root, tracks=TRACKS, seed=5, invalid_rows=2, missing_crops=0, size=48)
    return root, labels


def _copy(aw2, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(aw2[0], raw)
    return raw


def _expected(rows: np.ndarray) -> np.ndarray:
    """What a label row means, by the ABAW rule: the written value (3 decimals), NaN where it is -5."""
    want = np.round(rows.astype(np.float64), 3)
    want[(rows == -5).any(axis=1)] = np.nan
    return want


# --- 1. AffWild2 annotation lines never shift -------------------------------------------------------

def test_bad_annotation_lines_keep_every_later_frame_in_place(aw2, tmp_path):
    raw = _copy(aw2, tmp_path)
    track = "40-30-640x360"
    path = raw / ANN / "Train_Set" / f"{track}.txt"
    lines = path.read_text().splitlines()  # lines[k + 1] is frame k
    broken = {3: "", 5: "0.1,0.2,0.3", 7: "abc,0.1", 9: "1.7,0.0"}
    for k, text in broken.items():
        lines[k + 1] = text
    lines[11] = "-1,-1"  # frame 10: the most negative valence and arousal, a valid label in the VA files
    path.write_text("\n".join(lines) + "\n\n\n")  # trailing blank lines: not frames
    ws = tmp_path / "ws"
    out = emotk("prepare", "affwild2", "--root", str(raw), "--quiet", workspace=ws)
    assert "problems listed in" in out.stdout and "Traceback" not in out.stderr

    want = _expected(aw2[1][track])
    want[list(broken)] = np.nan
    want[10] = (-1, -1)
    with h5py.File(ws / "affwild2" / "labels.h5") as f:
        got = f[track][()]
    assert got.shape == (14, 2)
    np.testing.assert_allclose(got, want, atol=1e-5)  # NaN where expected, every other frame unshifted

    rows = [r for r in _failures(ws / "affwild2" / "failures.csv") if r["sample_id"] == track]
    for k in broken:
        hit = [r for r in rows if r["file"].endswith(f"{track}.txt:{k + 2}")]
        assert len(hit) == 1 and hit[0]["stage"] == "prepare" and f"line {k + 2}" in hit[0]["reason"], rows
        assert "unlabelled" in hit[0]["reason"] and hit[0]["what_to_do"]
    manifest = pl.read_parquet(ws / "affwild2" / "manifest.parquet")
    row = manifest.filter(pl.col("sample_id") == track).row(0, named=True)
    assert row["n_label_lines"] == 14 and row["label_defects"] == 4


def test_many_bad_lines_are_listed_up_to_a_cap_then_counted(aw2, tmp_path):
    from emotk.datasets.affwild2 import LINE_DEFECTS_LISTED, read_va_annotation

    path = tmp_path / "t.txt"
    n_bad = LINE_DEFECTS_LISTED + 5
    path.write_text("valence,arousal\n" + "x,y\n" * n_bad + "0.5,0.25\n")
    values, defects = read_va_annotation(path)
    assert len(defects) == n_bad and values.shape == (n_bad + 1, 2)
    assert np.isnan(values[:n_bad]).all() and values[n_bad].tolist() == [0.5, 0.25]
    from emotk.datasets.affwild2 import annotation_defect_rows

    rows = annotation_defect_rows("t", path, defects)
    assert len(rows) == LINE_DEFECTS_LISTED + 1 and f"{n_bad} lines that are not numbers" in rows[-1]["reason"]


# --- 2. Truncated videos ----------------------------------------------------------------------------

def test_frame_shortfall_rule():
    assert MIN_DECODED_FRACTION == 0.9
    assert frame_shortfall(60, {"the container": 60}) is None
    assert frame_shortfall(60, {"the container": 0}) is None  # unknown count: nothing claimed
    s = frame_shortfall(2, {"the container": 60})
    assert s.exclude and s.expected == 60 and "decoded 2 of 60" in s.describe() and "excluded" in s.describe()
    s = frame_shortfall(55, {"the container": 56, "the annotation": 60})
    assert not s.exclude and s.expected == 60 and "the annotation claims 60" in s.describe()  # 55/60 = 91.7 %
    assert frame_shortfall(53, {"the annotation": 60}).exclude  # 88.3 %
    assert not frame_shortfall(2, {"the container": 60}, min_fraction=0.01).exclude


@pytest.fixture(scope="module")
def emoreact_raw(tmp_path_factory):
    """EmoReact miniature with a truncated clip (60 frames claimed, about half decodable), a clip whose
    container claims 2 frames more than it holds, a nan valence; the other clips are good."""
    root = tmp_path_factory.mktemp("emoreact")
    base = make_emoreact(root, n_frames=10)
    frames, _ = face_frames(60, seed=11)
    write_truncated_mp4(base / "Data" / "Train" / "BULLYING12_2.mp4", frames, keep=0.5)
    frames, _ = face_frames(30, seed=12)
    write_overreported_mp4(base / "Data" / "Validation" / "Gay_Marriage4_2.mp4", frames, extra=2)
    labels = base / "Labels" / "train_labels.text"
    lines = labels.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",nan"  # iPOD3_2
    labels.write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def emoreact_prepared(emoreact_raw, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws-emoreact")
    out = emotk("prepare", "emoreact", "--root", str(emoreact_raw), "--quiet", workspace=ws)
    return ws, out


def test_truncated_clip_is_reported_and_excluded_small_shortfall_kept(emoreact_prepared, emoreact_raw):
    from emotk.media.video import VideoStream

    ws, _ = emoreact_prepared
    manifest = pl.read_parquet(ws / "emoreact" / "manifest.parquet")
    rows = {(r["sample_id"], r["stage"]): r for r in _failures(ws / "emoreact" / "failures.csv")}
    decodable = len(list(VideoStream(emoreact_raw / "EmoReact_V_1.0/Data/Train/BULLYING12_2.mp4", decoder="av")))
    assert 0 < decodable < 0.9 * 60
    cut = rows[("BULLYING12_2", "media")]
    assert f"decoded {decodable} of 60 expected frames" in cut["reason"] and "excluded" in cut["reason"]
    assert cut["file"].endswith("Data/Train/BULLYING12_2.mp4") and "re-download" in cut["what_to_do"]
    assert "BULLYING12_2" not in manifest["sample_id"].to_list()
    over = rows[("Gay_Marriage4_2", "media")]
    assert "decoded 30 of 32 expected frames" in over["reason"] and "kept" in over["reason"]
    assert manifest.filter(pl.col("sample_id") == "Gay_Marriage4_2")["n_frames"].to_list() == [30]


def test_decoded_fraction_is_an_option(emoreact_raw, emoreact_prepared, tmp_path):
    ws, _ = emoreact_prepared
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)  # crops are reused, so this is quick
    manifest, failures = prepare_dataset(Workspace.open(copy), "emoreact", emoreact_raw, progress=False,
                                         min_decoded_fraction=0.2)
    assert "BULLYING12_2" in manifest["sample_id"].to_list()
    assert any(f["sample_id"] == "BULLYING12_2" and "kept" in f["reason"] for f in failures)
    with pytest.raises(DatasetError, match=r"min_decoded_fraction 0.*\(0.0, 1.0\]"):
        prepare_dataset(Workspace.open(copy), "emoreact", emoreact_raw, min_decoded_fraction=0.0)


def test_affwild2_video_shorter_than_its_container_or_annotation(tmp_path):
    raw = tmp_path / "raw"
    frames, _ = face_frames(60, seed=1)
    write_truncated_mp4(raw / "batch1" / "50-25-320x240.mp4", frames, keep=0.5)
    frames, _ = face_frames(24, seed=2)
    write_video(raw / "batch1" / "51-25-320x240.mp4", frames)
    ann = raw / ANN / "Train_Set"
    ann.mkdir(parents=True)
    (ann / "50-25-320x240.txt").write_text("valence,arousal\n" + "0.1,0.2\n" * 60)
    (ann / "51-25-320x240.txt").write_text("valence,arousal\n" + "0.1,0.2\n" * 26)  # 24 of 26: 92 %, kept
    ws = Workspace.open(tmp_path / "ws")
    manifest, failures = prepare_dataset(ws, "affwild2", raw, faces="detect", progress=False)
    by = {f["sample_id"]: f for f in failures}
    assert "excluded" in by["50-25-320x240"]["reason"] and "of 60 expected frames" in by["50-25-320x240"]["reason"]
    assert "decoded 24 of 26 expected frames" in by["51-25-320x240"]["reason"]
    assert "the annotation claims 26" in by["51-25-320x240"]["reason"] and "kept" in by["51-25-320x240"]["reason"]
    assert manifest["sample_id"].to_list() == ["51-25-320x240"]


# --- 3. AFEW-VA boxes outside the image or too small --------------------------------------------------

def test_box_problem_geometry():
    assert (MIN_FACE_SIDE, MIN_INSIDE_FRACTION) == (16, 0.5)
    shape = (100, 100, 3)
    assert box_problem((0, 0, 40, 40), shape, margin=0.0) is None  # wholly inside
    assert "6%" in box_problem((-30, -30, 10, 10), shape, margin=0.0)  # 10x10 of 40x40 inside
    assert box_problem((60, 60, 100, 100), shape, margin=0.25) is None  # side 60 at (50, 50): 50x50 = 69 %
    assert "44%" in box_problem((70, 70, 110, 110), shape, margin=0.25)  # side 60 at (60, 60): 40x40 = 44 %
    assert "below the minimum" in box_problem((10, 10, 20, 20), shape, margin=0.2)  # a 10 px face
    assert box_problem((10, 10, 30, 26), (1, 1, 3), margin=0.2) is not None  # a 1x1 image


def test_afewva_landmarks_outside_or_tiny_are_failures_not_black_faces(tmp_path):
    raw = make_afewva(tmp_path / "raw", clips={"001": {"actor": "A"}, "002": {"actor": "B"}}, n_frames=8)
    meta = json.loads((raw / "001" / "001.json").read_text())
    for key in ("00002", "00003"):  # landmarks 1000 px right of the 256x192 frame
        meta["frames"][key]["landmarks"] = [[x + 1000, y] for x, y in meta["frames"][key]["landmarks"]]
    meta["frames"]["00005"]["landmarks"] = landmarks68((100, 80, 110, 90))  # a 10 px face
    (raw / "001" / "001.json").write_text(json.dumps(meta))
    for png in (raw / "002").glob("*.png"):
        cv2.imwrite(str(png), np.full((1, 1, 3), 128, np.uint8))  # 1x1 frames
    ws = Workspace.open(tmp_path / "ws")
    manifest, failures = prepare_dataset(ws, "afewva", raw.parent, progress=False)
    assert manifest["sample_id"].to_list() == ["001"]
    written = sorted(int(p.stem) for p in (ws.dataset_dir("afewva") / "faces" / "001").glob("*.jpg"))
    assert written == [0, 1, 4, 6, 7]  # no crop, and no carried box, for 2, 3 and 5
    assert manifest["no_face_frames"].to_list() == [3]
    rows = {f["file"]: f for f in failures if f["sample_id"] == "001"}
    for t, why in ((2, "inside"), (3, "inside"), (5, "below the minimum of 16 px")):
        r = rows[f"AFEW-VA/001/{t:05d}.png"]
        assert r["stage"] == "faces" and f"frame {t:05d}" in r["reason"] and why in r["reason"]
    clip2 = [f for f in failures if f["sample_id"] == "002"]
    assert len(clip2) == 1 and "no frame of 8 has usable landmarks" in clip2[0]["reason"]
    assert "1x1 image" in clip2[0]["reason"]
    # a rerun reuses the crops and reports the same frames again
    _, again = prepare_dataset(ws, "afewva", raw.parent, progress=False)
    assert sorted(f["file"] for f in again) == sorted(f["file"] for f in failures)


# --- 4. Sample ids ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sid", ["10-60-1280x720_left", "video45_1", "001", "80_sTOYS115_2", "a.b"])
def test_valid_sample_ids(sid):
    assert sample_id_problem(sid) is None and SAMPLE_ID_PATTERN.fullmatch(sid)


@pytest.mark.parametrize("sid,why", [
    ("mask", "internal group"), ("mask/evil", "'/'"), ("../../evil", "'..'"), ("a/b\\c", "'\\\\'"), (".hidden", "start"),
    ("a..b", "'..'"), ("clip 7 été", "' '"), ("80'sTOYS", "\"'\""), ("", "empty"), ("x" * 201, "longer"),
])
def test_invalid_sample_ids(sid, why):
    assert why in sample_id_problem(sid)


def test_reserved_ids_cover_the_feature_store_groups():
    from emotk.datasets.base import RESERVED_SAMPLE_IDS
    from emotk.features.store import MASK

    assert MASK in RESERVED_SAMPLE_IDS


def test_affwild2_track_named_like_an_internal_group_is_skipped(aw2, tmp_path):
    raw = _copy(aw2, tmp_path)
    os.rename(raw / "cropped_aligned" / "41-30-640x360", raw / "cropped_aligned" / "mask")
    os.rename(raw / ANN / "Validation_Set" / "41-30-640x360.txt", raw / ANN / "Validation_Set" / "mask.txt")
    manifest, failures = prepare_dataset(Workspace.open(tmp_path / "ws"), "affwild2", raw)
    assert manifest["sample_id"].to_list() == ["40-30-640x360"]
    row = next(f for f in failures if f["sample_id"] == "mask")
    assert "cannot be a sample id" in row["reason"] and row["file"].endswith("mask.txt") and "rename" in row["what_to_do"]


@pytest.fixture
def fake_dataset():
    """A registered dataset whose reader returns the sample id it is given (what a buggy reader might do)."""
    def prepare(raw_root, out_dir, sid="ok", progress=False):
        row = {"sample_id": sid, "subject": "s", "split": None, "kind": "video", "media": "m", "media_root": "raw",
               "media_kind": "frames_dir", "frame_base": 0, "n_frames": 1, "fps": 1.0, "source": "names.txt"}
        return Prepared(rows=[row])

    spec = DatasetSpec("trustfake", "Fake", "-", "-", Task("clip_classification", ("y",), "acc", 4, "last", 2),
                       prepare, options={"sid": lambda name, value: None})
    DATASETS["trustfake"] = spec
    yield spec
    DATASETS.pop("trustfake")


@pytest.mark.parametrize("sid", ["mask/evil", "../../evil", "mask"])
def test_prepare_refuses_ids_that_are_paths_or_internal_names(fake_dataset, sid, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(DatasetError) as ei:
        prepare_dataset(ws, "trustfake", tmp_path, sid=sid)
    msg = str(ei.value)
    assert repr(sid) in msg and "names.txt" in msg and "Rename" in msg
    assert not ws.manifest_path("trustfake").exists()
    manifest, _ = prepare_dataset(ws, "trustfake", tmp_path, sid="fine-1")
    assert manifest["sample_id"].to_list() == ["fine-1"]


# --- 5. EmoReact nan valence --------------------------------------------------------------------------

def test_emoreact_nan_valence_is_reported_and_kept_as_null(emoreact_prepared):
    ws, out = emoreact_prepared
    assert "problems listed in" in out.stdout
    rows = [r for r in _failures(ws / "emoreact" / "failures.csv") if r["sample_id"] == "iPOD3_2" and r["stage"] == "labels"]
    assert len(rows) == 1 and rows[0]["file"] == "train_labels.text:3" and "'nan'" in rows[0]["reason"]
    assert "null valence" in rows[0]["reason"]


def test_emoreact_valence_rules():
    from emotk.datasets.emoreact import parse_label_line

    assert parse_label_line("0,1,0,0,1,0,0,0,3.5")["valence"] == 3.5
    for bad in ("nan", "inf", "0.5", "7.5", "x"):
        assert parse_label_line(f"0,1,0,0,1,0,0,0,{bad}")["valence"] is None
    assert parse_label_line("0,1,0,0,1,0,0,0")["valence"] is None


# --- 6. Unreadable raw files --------------------------------------------------------------------------

def test_annotation_that_is_a_folder_is_one_clear_error_and_keeps_earlier_outputs(aw2, tmp_path):
    raw = _copy(aw2, tmp_path)
    ws = tmp_path / "ws"
    emotk("prepare", "affwild2", "--root", str(raw), "--quiet", workspace=ws)
    before = _digest(ws)
    bad = raw / ANN / "Train_Set" / "40-30-640x360.txt"
    bad.unlink()
    bad.mkdir()
    proc = emotk("prepare", "affwild2", "--root", str(raw), "--quiet", workspace=ws, check=False)
    _clean(proc, str(bad), "is a folder", "restore the file")
    assert _digest(ws) == before


def test_emoreact_and_afewva_files_that_are_folders(tmp_path):
    raw = make_emoreact(tmp_path / "er", n_frames=4)
    (raw / "Train_names.txt").unlink()
    (raw / "Train_names.txt").mkdir()
    with pytest.raises(DatasetError, match="names file .*Train_names.txt is a folder"):
        prepare_dataset(Workspace.open(tmp_path / "ws1"), "emoreact", raw, progress=False)
    av = make_afewva(tmp_path / "av", clips={"001": {"actor": "A"}}, n_frames=3)
    (av / "001" / "001.json").unlink()
    (av / "001" / "001.json").mkdir()
    proc = emotk("prepare", "afewva", "--root", str(av), "--quiet", workspace=tmp_path / "ws2", check=False)
    _clean(proc, "001.json is a folder")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied_crop_folder(aw2, tmp_path):
    raw = _copy(aw2, tmp_path)
    crops = raw / "cropped_aligned" / "40-30-640x360"
    crops.chmod(0)
    try:
        proc = emotk("prepare", "affwild2", "--root", str(raw), "--quiet", workspace=tmp_path / "ws", check=False)
    finally:
        crops.chmod(0o755)
    _clean(proc, str(crops), "permission denied", "chmod")


# --- 7. Paths in an EmoReact names file ---------------------------------------------------------------

@pytest.mark.parametrize("name,what", [("/etc/passwd.mp4", "an absolute path"), ("../../x.mp4", "'..'"),
                                       ("sub/x.mp4", "a path")])
def test_names_file_with_a_path_is_one_clear_error(tmp_path, name, what):
    raw = make_emoreact(tmp_path / "er", n_frames=4)
    names = raw / "Train_names.txt"
    lines = names.read_text().splitlines()
    lines[1] = "'" + name + "'"
    names.write_text("\n".join(lines) + "\n")
    proc = emotk("prepare", "emoreact", "--root", str(raw), "--quiet", workspace=tmp_path / "ws", check=False)
    _clean(proc, "Train_names.txt, line 2", what, "Restore the names file")
    assert not (tmp_path / "ws" / "emoreact" / "manifest.parquet").exists()


# --- 8. Invalid prepare options -----------------------------------------------------------------------

def test_bogus_faces_is_rejected_before_anything_is_written(aw2, tmp_path):
    ws = tmp_path / "ws"
    proc = emotk("prepare", "affwild2", "--root", str(aw2[0]), "--faces", "bogus", workspace=ws, check=False)
    # the CLI's own choice check (typer) or the library's: exit 2, no traceback, the valid values named
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "bogus" in proc.stderr and "provided" in proc.stderr and "detect" in proc.stderr
    assert not ws.exists()


@pytest.mark.parametrize("dataset,options,needles", [
    ("affwild2", {"faces": "bogus"}, ("faces 'bogus'", "provided, detect")),
    ("emoreact", {"faces": "provided"}, ("faces 'provided'", "detect")),
    ("emoreact", {"detector": "bogus"}, ("detector 'bogus'", "center", "haar")),
    ("emoreact", {"detector": "landmarks"}, ("detector 'landmarks'", "haar")),
    ("emoreact", {"decoder": "ffmpeg"}, ("decoder 'ffmpeg'", "auto, decord, av")),
    ("emoreact", {"every": 0}, ("every 0", ">= 1")),
    ("emoreact", {"face_size": 2}, ("face_size 2", ">= 8")),
    ("afewva", {"mood_rule": "median"}, ("mood_rule 'median'", "mean, majority")),
    ("afewva", {"mood_neutral_band": -1.0}, ("mood_neutral_band -1.0",)),
    ("afewva", {"faces": "detect"}, ("faces 'detect'", "landmarks")),
    ("affwild2", {"faces": "detect", "detector": "nope"}, ("detector 'nope'",)),
    ("affwild2", {"mood_rule": "mean"}, ("mood_rule do not apply",)),
])
def test_invalid_option_values_name_the_valid_ones(tmp_path, dataset, options, needles):
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(DatasetError) as ei:
        prepare_dataset(ws, dataset, tmp_path, **options)
    for n in needles:
        assert n in str(ei.value), (n, str(ei.value))
    assert not ws.root.exists()


def test_video_option_with_provided_crops_is_refused_before_writing(aw2, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(DatasetError, match=r"\['every'\] apply only when cropping faces from the videos"):
        prepare_dataset(ws, "affwild2", aw2[0], every=3)
    assert not ws.root.exists()


def test_number_validator_text():
    with pytest.raises(DatasetError, match=r"invalid x True: expected an integer >= 1"):
        number(int, 1)("x", True)


# --- 9. A garbage labels.h5 ---------------------------------------------------------------------------

def test_garbage_labels_file_says_to_prepare_again(tmp_path):
    path = tmp_path / "labels.h5"
    path.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(WorkspaceError, match="not a readable HDF5 labels file.*emotk prepare"):
        read_frame_labels(path)
    with h5py.File(path, "w") as f:
        f.attrs["label_names"] = ["valence", "arousal"]
        f.create_dataset("a", data=np.zeros((5, 2), np.float32))
        f.create_dataset("b", data=np.zeros(5, np.float32))  # [T], not [T, 2]
        f.create_dataset("c", data=np.zeros((5, 3), np.float32))
    assert read_frame_labels(path, ["a"])["a"].shape == (5, 2)
    with pytest.raises(WorkspaceError, match=r"'b' have shape \[5\], expected \[frames, 2\].*prepare"):
        read_frame_labels(path, ["a", "b"])
    with pytest.raises(WorkspaceError, match=r"'c' have shape \[5, 3\]"):
        read_frame_labels(path, ["c"])
    with pytest.raises(WorkspaceError, match=r"no labels for 1 sample.*'z'.*prepare"):
        read_frame_labels(path, ["a", "z"])
    with pytest.raises(WorkspaceError, match="missing.*prepare"):
        read_frame_labels(tmp_path / "nope.h5")
