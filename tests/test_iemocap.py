"""IEMOCAP: the real prepare flow on a miniature in the release layout (espeak-ng speech, split-screen AVI)."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter

import cv2
import numpy as np
import polars as pl
import pytest
import soundfile as sf

from emotk import splits
from emotk.datasets import get_dataset, prepare_dataset
from emotk.datasets.iemocap import LABEL_MAPS, parse_transcription
from emotk.errors import DatasetError
from emotk.media.faces import CropTarget, crop_video, span_frames
from emotk.workspace import MANIFEST_COLUMNS, Workspace
from iemocap_factory import VIDEO_FPS, make_iemocap
from speech_factory import have_espeak

pytestmark = pytest.mark.skipif(not have_espeak(), reason="espeak-ng is not installed (apt-get install -y espeak-ng)")

# The maps as the docs state them (written out here, not read from the module under test).
MAPS = {
    "4class": ["neu", "hap", "ang", "sad"],
    "6class": ["ang", "exc", "fru", "hap", "neu", "sad"],
    "7class": ["ang", "exc", "hap", "sad", "fru", "sur", "neu"],
    "full": ["neu", "hap", "exc", "sad", "ang", "fru", "fea", "sur", "dis", "oth"],
}


def class_of(labels: str, code: str) -> str | None:
    if labels == "4class" and code == "exc":
        return "hap"
    return code if code in MAPS[labels] else None


@pytest.fixture(scope="session")
def mini(tmp_path_factory):
    return make_iemocap(tmp_path_factory.mktemp("iemocap-raw"))


@pytest.fixture(scope="session")
def prepared(mini, tmp_path_factory):
    ws = Workspace.open(tmp_path_factory.mktemp("ws"))
    manifest, failures = prepare_dataset(ws, "iemocap", mini.base.parent, progress=False)
    return ws, manifest, failures


def info_of(ws):
    return json.loads(ws.info_path("iemocap").read_text())


def test_rows_are_the_values_written(prepared, mini):
    ws, m, failures = prepared
    assert set(MANIFEST_COLUMNS) <= set(m.columns)
    want = {u.utt: u for u in mini.utterances if class_of("4class", u.code)}
    assert sorted(m["sample_id"]) == sorted(want)
    for row in m.iter_rows(named=True):
        u = want[row["sample_id"]]
        assert row["kind"] == "utterance" and row["split"] is None
        assert row["session"] == u.session and row["dialog"] == u.dialog
        assert row["speaker"] == row["subject"] == f"{u.session}_{u.letter}"  # the utterance letter
        assert (row["utt_start"], row["utt_end"]) == pytest.approx((u.start, u.end), abs=1e-4)
        assert (row["valence"], row["arousal"], row["dominance"]) == pytest.approx(u.vad)
        assert row["emotion_code"] == u.code
        assert row["label_name"] == class_of("4class", u.code) and row["label"] == MAPS["4class"].index(row["label_name"])
        assert row["text"] == u.text
        assert row["audio"] == f"IEMOCAP_full_release/Session{int(u.session[3:])}/sentences/wav/{u.dialog}/{u.utt}.wav"
        assert (row["audio_start"], row["audio_end"], row["audio_channel"]) == (None, None, None)
        info = sf.info(str(mini.base.parent / row["audio"]))
        assert (info.samplerate, info.channels) == (16000, 1)
    # a speaker from the dialog of the other actor: the letter of the utterance, not of the dialog
    assert m.filter(pl.col("sample_id") == "Ses01F_impro01_M000")["speaker"].item() == "Ses01_M"
    # exc is merged into hap in 4class
    exc = m.filter(pl.col("emotion_code") == "exc")
    assert exc.height == 2 and set(exc["label_name"]) == {"hap"} and set(exc["label"]) == {1}
    assert not [f for f in failures if f["stage"] != "faces"]


def test_summary_counts(prepared, mini):
    ws, m, _ = prepared
    info = info_of(ws)
    s = info["summary"]
    outside = Counter(u.code for u in mini.utterances if not class_of("4class", u.code))
    assert s["outside_map"] == dict(outside) and set(outside) == {"xxx", "fru", "sur"}
    assert s["outside_map_total"] == sum(outside.values())
    assert s["skipped_transcript_lines"] == mini.skipped_lines == 4
    assert s["missing_wavs"] == 0 and s["malformed_label_lines"] == 0
    per = Counter(class_of("4class", u.code) for u in mini.utterances if class_of("4class", u.code))
    assert s["per_class"] == {n: per[n] for n in MAPS["4class"]}
    assert s["utterances"] == m.height == sum(per.values())
    # every 4-class class occurs in every session
    assert m.group_by("session").agg(pl.col("label").n_unique())["label"].to_list() == [4, 4]


def test_task_and_classes_recorded(prepared):
    ws, _, _ = prepared
    info = info_of(ws)
    assert info["labels"] == "4class" and info["classes"] == MAPS["4class"]
    assert info["task"]["kind"] == "clip_classification" and info["task"]["n_classes"] == 4
    assert info["task"]["metric"] == "ua"
    from emotk.train.loop import dataset_task

    assert dataset_task(ws, "iemocap").n_classes == 4


@pytest.mark.parametrize("labels", ["6class", "7class", "full"])
def test_label_maps(mini, tmp_path, labels):
    ws = Workspace.open(tmp_path / "ws")
    m, _ = prepare_dataset(ws, "iemocap", mini.base, labels=labels, video=False, progress=False)
    want = {u.utt: class_of(labels, u.code) for u in mini.utterances if class_of(labels, u.code)}
    got = dict(zip(m["sample_id"], m["label_name"]))
    assert got == want
    assert all(MAPS[labels][lab] == name for lab, name in zip(m["label"], m["label_name"]))
    assert set(m["media_kind"]) == {"audio"} and set(m["n_frames"]) == {0}
    info = info_of(ws)
    assert info["classes"] == MAPS[labels] and info["task"]["n_classes"] == len(MAPS[labels])
    outside = Counter(u.code for u in mini.utterances if not class_of(labels, u.code))
    assert info["summary"]["outside_map"] == dict(outside) and "xxx" in outside
    assert list(LABEL_MAPS[labels][0]) == MAPS[labels]


def test_face_crops_follow_the_speakers_half(prepared, mini):
    ws, m, _ = prepared
    want = mini.by_id()
    tint = {}
    for row in m.iter_rows(named=True):
        u = want[row["sample_id"]]
        assert row["media_kind"] == "frames_dir" and row["media_root"] == "workspace" and row["fps"] == 3.0
        assert row["video_half"] == ("left" if u.left else "right")
        # n_frames: one per 1/3 s of the span (first frame at or after each time), ≈ 3 × duration
        assert row["n_frames"] == len(span_frames(VIDEO_FPS, u.start, u.end, 3.0))
        assert abs(row["n_frames"] - 3.0 * (u.end - u.start)) <= 1
        folder = ws.media_path("iemocap", row)
        crops = sorted(folder.glob("*.jpg"))
        assert len(crops) == row["n_frames"] - row["no_face_frames"] > 0
        img = cv2.cvtColor(cv2.imread(str(crops[0])), cv2.COLOR_BGR2RGB).astype(float)
        tint[row["sample_id"]] = (img[..., 0] - img[..., 1]).mean()  # the right actor is tinted +30 R, -20 G
        meta = json.loads((folder / "crop.json").read_text())
        assert meta["options"]["span"]["half"] == row["video_half"]
        assert meta["result"]["source_frames"] == span_frames(VIDEO_FPS, u.start, u.end, 3.0)
    left = [v for sid, v in tint.items() if want[sid].left]
    right = [v for sid, v in tint.items() if not want[sid].left]
    assert left and right and max(left) + 30 < min(right)


def test_split_by_session_is_disjoint(prepared):
    _, m, _ = prepared
    folds = splits.group_kfold(m, 2, by="session")
    joined = folds.join(m.select("sample_id", "session", "speaker"), on="sample_id")
    assert joined.group_by("session").agg(pl.col("fold").n_unique())["fold"].to_list() == [1, 1]
    assert joined.group_by("speaker").agg(pl.col("fold").n_unique())["fold"].max() == 1
    splits.check(folds)


def test_spans_outside_the_video(mini, tmp_path):
    video = mini.base / "Session1" / "dialog" / "avi" / "DivX" / "Ses01F_impro01.avi"
    n = 0
    import av

    with av.open(str(video)) as c:
        n = sum(1 for _ in c.decode(video=0))
    end = n / VIDEO_FPS
    res = crop_video(video, tmp_path, {
        "inside": CropTarget(start=0.5, end=1.5, rate=0, half="left"),
        "past_end": CropTarget(start=end - 0.5, end=end + 1.5, rate=0, half="right"),
        "outside": CropTarget(start=end + 5, end=end + 6, rate=3, half="left"),
    }, detector="center")
    assert res["inside"].ok and res["inside"].n_frames == 10 and res["inside"].source_frames == list(range(5, 15))
    assert res["past_end"].ok and res["past_end"].n_frames == 5 and res["past_end"].n_frames_reported == 20
    assert "past the video's end" in res["past_end"].decode_note
    assert not res["outside"].ok and "holds no frame" in res["outside"].error
    assert not (tmp_path / "outside").exists()
    # the same call again reuses the crops (crop.json records span and half)
    again = crop_video(video, tmp_path, {"inside": CropTarget(start=0.5, end=1.5, rate=0, half="left")},
                       detector="center")
    assert again["inside"].reused and again["inside"].source_frames == list(range(5, 15))


def test_missing_files_are_listed(mini, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(mini.base, raw / "IEMOCAP_full_release")
    base = raw / "IEMOCAP_full_release"
    (base / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav").unlink()
    (base / "Session2/dialog/avi/DivX/Ses02M_script01_1.avi").unlink()
    ev = base / "Session1/dialog/EmoEvaluation/Ses01M_script01_1.txt"
    lines = ev.read_text().splitlines()
    hit = next(i for i, ln in enumerate(lines) if "\tSes01M_script01_1_F000\t" in ln)
    lines[hit] = "[500.0000 - 501.0000]" + lines[hit][lines[hit].index("]") + 1:]  # beyond the video
    lines.insert(2, "[1.0 - 2.0]\tSes01M_script01_1_F009\tneu")  # a header-like line without V/A/D
    ev.write_text("\n".join(lines) + "\n")
    ws = Workspace.open(tmp_path / "ws")
    m, failures = prepare_dataset(ws, "iemocap", raw, detector="center", progress=False)
    by_id = {f["sample_id"]: f for f in failures}
    rows = {r["sample_id"]: r for r in m.iter_rows(named=True)}
    assert "Ses01F_impro01_F000" not in rows and by_id["Ses01F_impro01_F000"]["stage"] == "audio"
    for sid, row in rows.items():
        if sid.startswith("Ses02M_script01_1"):
            assert row["media_kind"] == "audio" and row["n_frames"] == 0 and "video is missing" in by_id[sid]["reason"]
    assert rows["Ses01M_script01_1_F000"]["media_kind"] == "audio"
    assert "holds no frame" in by_id["Ses01M_script01_1_F000"]["reason"]
    assert by_id["Ses01M_script01_1_F009"]["stage"] == "labels" and ":3" in by_id["Ses01M_script01_1_F009"]["file"]
    s = info_of(ws)["summary"]
    assert s["missing_wavs"] == 1 and s["malformed_label_lines"] == 1
    with open(ws.failures_path("iemocap"), newline="") as f:
        assert len(list(csv.DictReader(f))) == len(failures)


def test_transcription_lines():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "t.txt"
        p.write_text("Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.\n"
                     "M: [BREATHING]\n"
                     "Ses01F_impro01_MXX0 [010.0-011.0]: hm\n"
                     "Ses01F_impro02_F000 [010.0-011.0]: another dialog\n"
                     "Ses01F_impro01_M000 no timestamp here\n"
                     "\n"
                     "Ses01F_impro01_M001 [012.5000-014.0000]: Do you have your forms?\n")
        texts, skipped = parse_transcription(p, "Ses01F_impro01")
    assert texts == {"Ses01F_impro01_F000": "Excuse me.", "Ses01F_impro01_M001": "Do you have your forms?"}
    assert [no for no, _ in skipped] == [2, 3, 4, 5]


def test_broken_layout(tmp_path, mini):
    ws = Workspace.open(tmp_path / "ws")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="Session1"):
        prepare_dataset(ws, "iemocap", empty, video=False, progress=False)
    raw = tmp_path / "raw"
    shutil.copytree(mini.base / "Session1", raw / "Session1")
    shutil.rmtree(raw / "Session1" / "dialog" / "EmoEvaluation")
    with pytest.raises(DatasetError, match="EmoEvaluation is missing"):
        prepare_dataset(ws, "iemocap", raw, video=False, progress=False)
    with pytest.raises(DatasetError, match="labels"):
        prepare_dataset(ws, "iemocap", mini.base, labels="5class", progress=False)
    spec = get_dataset("iemocap")
    assert "Session1" in spec.layout and "leave-one-session-out" in spec.splits
