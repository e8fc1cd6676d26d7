"""AffWild2 crops from the raw videos (batch*/): track ↔ video mapping, left/right, the prepare flow."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from emotk.datasets.affwild2_videos import crop_tracks, find_videos, video_for_track
from media_factory import make_affwild2_videos


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return make_affwild2_videos(tmp_path_factory.mktemp("affwild2-videos"), n_frames=24)


def test_find_videos_ignores_hidden_and_appledouble(raw):
    videos, notes = find_videos(raw)
    assert set(videos) == {"10-30-320x240", "102", "5-25-320x240"}
    assert videos["102"].suffix == ".avi" and not notes
    assert video_for_track("5-25-320x240_left", videos) == (videos["5-25-320x240"], "left")
    assert video_for_track("5-25-320x240_right", videos) == (videos["5-25-320x240"], "right")
    assert video_for_track("102", videos) == (videos["102"], None)
    assert video_for_track("video99", videos) is None


def test_duplicate_stem_keeps_one_and_notes_it(raw, tmp_path):
    (tmp_path / "batch1").mkdir()
    (tmp_path / "batch2").mkdir()
    for b in ("batch1", "batch2"):
        (tmp_path / b / "7.mp4").write_bytes((raw / "batch1" / "10-30-320x240.mp4").read_bytes())
    videos, notes = find_videos(tmp_path)
    assert videos["7"].parent.name == "batch1" and len(notes) == 1 and "batch2/7.mp4" in notes[0]


def test_crop_tracks(raw, tmp_path):
    tracks = ["10-30-320x240", "102", "5-25-320x240_left", "5-25-320x240_right", "video99"]
    out = crop_tracks(raw, tmp_path, tracks)
    assert list(out) == tracks
    assert "reason" in out["video99"] and "video99" in out["video99"]["reason"] and out["video99"]["what_to_do"]
    for t in tracks[:4]:
        r = out[t]
        assert "reason" not in r, r
        assert r["media"] == f"faces/{t}" and r["frame_base"] == 0 and r["media_kind"] == "frames_dir"
        assert r["n_frames"] == 24 and r["no_face_frames"] == 0 and r["decoder"]
        assert len(list((tmp_path / r["media"]).glob("*.jpg"))) == 24
    assert out["10-30-320x240"]["fps"] == pytest.approx(30.0) and out["102"]["fps"] == pytest.approx(25.0)
    assert out["102"]["source"] == "batch1/102.avi"
    left = cv2.imread(str(tmp_path / "faces" / "5-25-320x240_left" / "00010.jpg")).astype(float)
    right = cv2.imread(str(tmp_path / "faces" / "5-25-320x240_right" / "00010.jpg")).astype(float)
    # the right person is the mirrored astronaut: flipping the right crop brings it close to the left one
    assert np.abs(left - right[:, ::-1]).mean() < np.abs(left - right).mean()
    first = tmp_path / "faces" / "102" / "00000.jpg"
    stamp = first.stat().st_mtime_ns
    again = crop_tracks(raw, tmp_path, ["102"])
    assert again["102"]["n_frames"] == 24 and first.stat().st_mtime_ns == stamp  # reused, not redone


def test_lead_reader_uses_crop_tracks(raw, tmp_path):
    """The AffWild2 reader with --faces detect runs the same code on annotation tracks."""
    from emotk.datasets import prepare_dataset
    from emotk.workspace import Workspace

    ann = raw / "6th_ABAW_Annotations" / "VA_Estimation_Challenge" / "Train_Set"
    ann.mkdir(parents=True, exist_ok=True)
    for t in ("102", "5-25-320x240_right"):
        (ann / f"{t}.txt").write_text("valence,arousal\n" + "0.1,0.2\n" * 24)
    try:
        m, failures = prepare_dataset(Workspace.open(tmp_path / "ws"), "affwild2", raw, faces="detect")
    finally:
        import shutil

        shutil.rmtree(raw / "6th_ABAW_Annotations")
    assert sorted(m["sample_id"]) == ["102", "5-25-320x240_right"]
    assert set(m["frame_base"]) == {0} and set(m["n_frames"]) == {24}
