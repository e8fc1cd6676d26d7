"""CMU-MOSEI: the real prepare flow on a miniature in the SDK layout (real .csd HDF5, espeak-ng wavs,
segmented transcripts, mp4s with a face). Expected values come from what mosei_factory wrote."""

from __future__ import annotations

import csv
import json
import math

import h5py
import numpy as np
import polars as pl
import pytest
import soundfile as sf

from conftest import run_cli
from emotk.datasets import get_dataset, prepare_dataset
from emotk.datasets.csd import CSDEntryError, open_csd
from emotk.datasets.mosei import load_folds, match_segments, parse_transcript, split_clip_id
from emotk.errors import DatasetError
from emotk.workspace import MANIFEST_COLUMNS, Workspace
from media_factory import face_frames, write_video
from mosei_factory import make_mosei, write_csd

SDK_ORDER = ("happy", "sad", "anger", "surprise", "disgust", "fear")  # CSD columns 1..6 (SDK README)
MESM_ORDER = ("anger", "disgust", "fear", "happy", "sad", "surprise")
KEPT = {("aB-3_xY_9", 0): "aB-3_xY_9_0", ("aB-3_xY_9", 1): "aB-3_xY_9_1", ("aB-3_xY_9", 2): "aB-3_xY_9_2",
        ("81406", 0): "81406_0", ("81406", 1): "81406_1",
        ("-qZ_t7", 0): "v-qZ_t7_0", ("-qZ_t7", 1): "v-qZ_t7_1", ("-qZ_t7", 2): "v-qZ_t7_2"}


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("mosei-raw")
    return root, make_mosei(root)


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    root, written = raw
    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    manifest, failures = prepare_dataset(ws, "mosei", root, folds=str(written["folds_file"]), progress=False)
    return ws, manifest, failures


def _row(m: pl.DataFrame, sid: str) -> dict:
    return m.filter(pl.col("sample_id") == sid).row(0, named=True)


def test_task_is_multilabel_over_six_emotions():
    task = get_dataset("mosei").task
    assert (task.kind, task.targets, task.metric) == ("clip_multilabel", SDK_ORDER, "wacc")


def test_sample_ids_split_at_the_last_underscore(prepared):
    _, m, _ = prepared
    assert sorted(m["sample_id"]) == sorted(KEPT.values())
    for (vid, clip), sid in KEPT.items():
        row = _row(m, sid)
        assert (row["subject"], row["video_id"], row["clip"], row["kind"]) == (vid, vid, clip, "utterance")
    assert split_clip_id("aB-3_xY_9_2") == ("aB-3_xY_9", 2)
    assert split_clip_id("-qZ_t7_10") == ("-qZ_t7", 10)
    assert split_clip_id("81406_0") == ("81406", 0)
    for bad in ("81406", "abc_", "abc_x1", "_3"):
        with pytest.raises(ValueError):
            split_clip_id(bad)


def test_labels_presence_and_intervals_match_what_was_written(prepared, raw):
    _, m, _ = prepared
    segs = raw[1]["segments"]
    assert set(MANIFEST_COLUMNS) <= set(m.columns)
    for key, sid in KEPT.items():
        want, row = segs[key], _row(m, sid)
        values = want["values"]
        assert row["sentiment"] == pytest.approx(values[0], abs=1e-5)
        for name, v in zip(SDK_ORDER, values[1:]):
            assert row[f"{name}_intensity"] == pytest.approx(v, abs=1e-5)
            assert row[name] == (1 if v > 0 else 0)
        # the label sequence stores start + 0.0004, end - 0.0003 (see the factory)
        assert row["seg_start"] == pytest.approx(want["start"] + 0.0004, abs=1e-6)
        assert row["seg_end"] == pytest.approx(want["end"] - 0.0003, abs=1e-6)
        assert row["text"] == want["text"]
        if want["audio"]:
            assert row["audio"] == f"Raw/Audio/Full/WAV_16000/{key[0]}.wav"
            assert row["audio_start"] == pytest.approx(max(0.0, want["start"] + 0.0004), abs=1e-6)
            assert row["audio_end"] == pytest.approx(want["end"] - 0.0003, abs=1e-6)
            assert row["audio_channel"] is None
        else:
            assert row["audio"] is None and row["audio_start"] is None
    # presence is not constant in every column, so the test can tell columns apart
    assert all(m[name].n_unique() == 2 for name in ("happy", "anger", "disgust"))


def test_audio_interval_holds_the_spoken_sentence(prepared, raw):
    ws, m, _ = prepared
    root = raw[0]
    row = _row(m, "aB-3_xY_9_1")
    y, sr = sf.read(root / row["audio"], dtype="float32")
    inside = y[int(row["audio_start"] * sr):int(row["audio_end"] * sr)]
    gap = y[int((row["audio_start"] - 0.2) * sr):int((row["audio_start"] - 0.05) * sr)]  # silence between sentences
    assert np.sqrt(np.mean(inside ** 2)) > 0.02 and np.abs(gap).max() < 1e-3


def test_clamped_kept_no_media_skipped_unmatched_listed(prepared):
    ws, m, failures = prepared
    by = {}
    for f in failures:
        by.setdefault(f["sample_id"], []).append(f)
    assert set(by) == {"aB-3_xY_9_0", "81406_2", "-qZ_t7[3]"}
    clamp = by["aB-3_xY_9_0"]
    assert len(clamp) == 1 and clamp[0]["stage"] == "prepare" and "clamped to 0" in clamp[0]["reason"]
    assert _row(m, "aB-3_xY_9_0")["audio_start"] == 0.0 and _row(m, "aB-3_xY_9_0")["seg_start"] < 0
    nomedia = by["81406_2"]
    assert len(nomedia) == 1 and "no media" in nomedia[0]["reason"] and "81406_2.mp4" in nomedia[0]["reason"]
    assert "81406_2" not in set(m["sample_id"])
    assert "50.000..51.500" in by["-qZ_t7[3]"][0]["reason"]
    with open(ws.failures_path("mosei"), newline="") as fh:
        assert sorted(r["sample_id"] for r in csv.DictReader(fh)) == sorted(f["sample_id"] for f in failures)
    info = json.loads(ws.info_path("mosei").read_text())
    s = info["summary"]
    assert (s["label_videos"], s["label_segments"], s["segments_kept"]) == (3, 10, 8)
    assert (s["clamped_starts"], s["no_media"], s["unmatched_segments"]) == (1, 1, 1)
    assert (s["transcript_lines_skipped"], s["transcript_lines_unlabelled"]) == (1, 1)
    assert info["task"]["targets"] == list(SDK_ORDER)


def test_overlapping_segments_are_both_kept(prepared):
    _, m, _ = prepared
    a, b = _row(m, "v-qZ_t7_0"), _row(m, "v-qZ_t7_1")
    assert b["seg_start"] < a["seg_end"]


def test_official_split_from_folds_file(prepared):
    _, m, _ = prepared
    got = dict(zip(m["sample_id"], m["split"]))
    assert {got[s] for s in ("aB-3_xY_9_0", "aB-3_xY_9_1", "aB-3_xY_9_2")} == {"train"}
    assert {got[s] for s in ("81406_0", "81406_1")} == {"validation"}
    assert {got[s] for s in ("v-qZ_t7_0", "v-qZ_t7_1", "v-qZ_t7_2")} == {"test"}


def test_faces_cropped_from_segmented_videos(prepared):
    ws, m, _ = prepared
    assert set(m["media_kind"]) == {"frames_dir"} and set(m["media_root"]) == {"workspace"}
    assert set(m["n_frames"]) == {6} and set(m["fps"]) == {25.0} and set(m["no_face_frames"]) == {0}
    row = _row(m, "81406_1")
    assert row["video"] == "Raw/Videos/Segmented/Combined/81406_1.mp4" and row["audio"] is None
    crops = ws.media_path("mosei", row)
    assert crops == ws.dataset_dir("mosei") / "faces" / "81406_1"
    assert sorted(p.name for p in crops.glob("*.jpg")) == [f"{i:05d}.jpg" for i in range(6)]


def test_shipped_sdk_folds():
    fold_of, source = load_folds(None)
    counts = {s: sum(v == s for v in fold_of.values()) for s in ("train", "validation", "test")}
    assert counts == {"train": 2249, "validation": 300, "test": 678}  # datasets.md §8 (d), counted in the SDK
    assert fold_of["81406"] == "train" and "CMU-MultimodalSDK" in source


def test_default_folds_audio_only_mesm_order_through_the_cli(raw, tmp_path):
    root, written = raw
    ws_dir = tmp_path / "ws"
    proc = run_cli("prepare", "mosei", "--root", str(root), "-o", "video=false", "-o", "order=mesm", "--quiet",
                   workspace=ws_dir)
    assert "prepared mosei: 6 samples" in proc.stdout
    ws = Workspace.open(ws_dir)
    m = pl.read_parquet(ws.manifest_path("mosei"))
    assert set(m["media_kind"]) == {"audio"} and set(m["media_root"]) == {"raw"}
    assert m["media"].to_list() == m["audio"].to_list()
    # 81406 has no wav: without video its segments have no media; with the SDK's folds only 81406 is in a fold
    assert not any(s.startswith("81406") for s in m["sample_id"])
    assert m["split"].null_count() == 6
    info = json.loads(ws.info_path("mosei").read_text())
    assert info["task"]["targets"] == list(MESM_ORDER) and info["summary"]["rows_outside_folds"] == 6
    assert info["summary"]["videos_outside_folds"] == 2 and info["summary"]["no_media"] == 3


def test_sdk_folds_py_read_with_ast_not_executed(tmp_path):
    py = tmp_path / "cmu_mosei_std_folds.py"
    py.write_text("raise SystemExit('executed')\nstandard_train_fold=['a-b_c', '81406']\n"
                  "standard_valid_fold=['x']\nstandard_test_fold=['y']\n")
    fold_of, _ = load_folds(str(py))
    assert fold_of == {"a-b_c": "train", "81406": "train", "x": "validation", "y": "test"}
    both = tmp_path / "both.json"
    both.write_text(json.dumps({"train": ["a"], "valid": ["a"], "test": []}))
    with pytest.raises(DatasetError, match="both train and validation"):
        load_folds(str(both))


def test_transcript_lines_parsed_or_counted(tmp_path):
    t = tmp_path / "v_1-x.txt"
    t.write_text("v_1-x___0___0.000___1.500___hello there\n"
                 "v_1-x___1___1.500___bad___broken time\n"
                 "other___2___2.0___3.0___another video's line\n"
                 "v_1-x___3___3.0___4.0___text with ___ inside\n"
                 "\n"
                 "v_1-x___4___5.0___6.0___first\n"
                 "v_1-x___4___7.0___8.0___second\n")
    lines, bad = parse_transcript(t, "v_1-x")
    assert sorted(lines) == [0, 3]
    assert lines[3].text == "text with ___ inside" and (lines[0].start, lines[0].end, lines[0].line) == (0.0, 1.5, 1)
    assert sorted(no for no, _ in bad) == [2, 3, 6, 7]
    picks = match_segments(np.array([[0.01, 1.49], [3.0, 4.0], [5.0, 6.0]]), lines, 0.05)
    assert picks[0] == (0, None) and picks[1] == (3, None) and picks[2][0] is None


def test_csd_reader_and_its_errors(tmp_path):
    good = write_csd(tmp_path / "good.csd", {"a_b-1": (np.ones((2, 7)), np.array([[0, 1], [1, 2.5]]))})
    with open_csd(good) as seq:
        feats, ivals = seq.read("a_b-1")
        assert seq.video_ids() == ["a_b-1"] and feats.shape == (2, 7) and ivals[1].tolist() == [1.0, 2.5]
        assert seq.root_name == "All Labels" and seq.metadata["dimension names"][0] == "sentiment"
    text = tmp_path / "text.csd"
    text.write_text("not hdf5 at all\n")
    with pytest.raises(DatasetError, match="not an HDF5"):
        open_csd(text)
    nodata = tmp_path / "nodata.csd"
    with h5py.File(nodata, "w") as f:
        f.create_group("All Labels").create_group("metadata")
    with pytest.raises(DatasetError, match="no '<root>/data' group"):
        open_csd(nodata)
    mismatch = write_csd(tmp_path / "mismatch.csd", {"vid9": (np.ones((3, 7)), np.zeros((2, 2)))})
    with open_csd(mismatch) as seq, pytest.raises(CSDEntryError) as err:
        seq.read("vid9")
    assert "mismatch.csd" in str(err.value) and "'vid9'" in str(err.value) and "3 feature rows but 2" in str(err.value)
    aligned = write_csd(tmp_path / "aligned.csd", {"vid9[0]": (np.ones((1, 7)), np.zeros((1, 2)))})
    with pytest.raises(DatasetError, match="aligned"):
        open_csd(aligned)


def test_prepare_with_a_broken_label_file_is_one_clear_error(raw, tmp_path):
    root, _ = raw
    bad = tmp_path / "broken.csd"
    bad.write_text("garbage")
    ws = Workspace.open(tmp_path / "ws")
    with pytest.raises(DatasetError, match="broken.csd is not an HDF5"):
        prepare_dataset(ws, "mosei", root, labels=str(bad), video=False, progress=False)
    assert not ws.manifest_path("mosei").exists()


def test_fps_and_a_segment_cut_from_the_full_video(tmp_path):
    """-o fps=10 keeps frames at start + k/10 s; a clip without a segmented video is cut from the full one."""
    root = tmp_path / "raw"
    written = make_mosei(root, videos=1, segments=2)
    (root / "Raw/Videos/Segmented/Combined/aB-3_xY_9_1.mp4").unlink()
    frames, _ = face_frames(100, seed=5)  # 4 s at 25 fps: covers clip 1
    write_video(root / "Raw/Videos/Full/Combined/aB-3_xY_9.mp4", frames)
    ws = Workspace.open(tmp_path / "ws")
    m, failures = prepare_dataset(ws, "mosei", root, folds=str(written["folds_file"]), fps=10, progress=False)
    assert [f["sample_id"] for f in failures] == ["aB-3_xY_9_0"]  # the clamp only
    seg, cut = _row(m, "aB-3_xY_9_0"), _row(m, "aB-3_xY_9_1")
    assert seg["video"].endswith("Segmented/Combined/aB-3_xY_9_0.mp4") and seg["n_frames"] == 3  # 6 frames: t 0, .1, .2
    assert cut["video"] == "Raw/Videos/Full/Combined/aB-3_xY_9.mp4" and cut["fps"] == 10.0
    s, e = cut["seg_start"], cut["seg_end"]
    assert cut["n_frames"] == math.floor((e - s) * 10 - 1e-9) + 1  # times s + k/10 < e
    meta = json.loads((ws.dataset_dir("mosei") / "faces" / "aB-3_xY_9_1" / "crop.json").read_text())
    assert meta["result"]["source_frames"][0] == math.ceil(s * 25)
    assert len(list((ws.dataset_dir("mosei") / "faces" / "aB-3_xY_9_1").glob("*.jpg"))) == cut["n_frames"]


def test_mesm_mosei_raw_layout(tmp_path):
    """MESM's MOSEI_Raw/{Audio/WAV_16000, Transcript/Combined}; MTurk CSVs alone are refused clearly."""
    root = tmp_path / "data"
    written = make_mosei(root, videos=1, segments=2, video=False)
    (root / "Raw").rename(root / "MOSEI_Raw")
    mesm = root / "MOSEI_Raw"
    (mesm / "Audio/Full/WAV_16000").rename(mesm / "Audio/WAV_16000")
    (mesm / "Transcript/Segmented/Combined").rename(mesm / "Transcript/Combined")
    ws = Workspace.open(tmp_path / "ws")
    m, _ = prepare_dataset(ws, "mosei", root, folds=str(written["folds_file"]), progress=False)
    assert sorted(m["sample_id"]) == ["aB-3_xY_9_0", "aB-3_xY_9_1"]
    assert set(m["audio"]) == {"MOSEI_Raw/Audio/WAV_16000/aB-3_xY_9.wav"} and set(m["media_kind"]) == {"audio"}
    assert _row(m, "aB-3_xY_9_1")["text"] == written["segments"][("aB-3_xY_9", 1)]["text"]
    (root / "CMU_MOSEI_Labels.csd").unlink()
    (mesm / "Labels").mkdir()
    (mesm / "Labels" / "batch1.csv").write_text("Input.VIDEO_ID,Input.CLIP,Answer.anger\n")
    with pytest.raises(DatasetError, match="MTurk CSVs"):
        prepare_dataset(ws, "mosei", root, progress=False)
