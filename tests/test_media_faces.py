"""Face detection and cropping on real images and real videos."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from emotk.media.faces import (
    DEFAULT_DETECTOR,
    MediaError,
    box_from_landmarks,
    crop_frames,
    crop_square,
    crop_video,
    get_detector,
    list_detectors,
)
from media_factory import astronaut, face_frames, landmarks68, noface_frames, write_garbage, write_video

ASTRONAUT_FACE = (177, 66, 272, 161)  # where the face is in skimage's astronaut (512 x 512)


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def read_rgb(p):
    return cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)


def test_default_detector_finds_the_astronaut():
    assert DEFAULT_DETECTOR == "mtcnn"
    found = get_detector(DEFAULT_DETECTOR).detect(astronaut())
    assert found.shape == (1, 15) and iou(found[0, :4], ASTRONAUT_FACE) > 0.6


def test_haar_finds_the_astronaut():
    det = get_detector("haar")
    boxes = det.detect(astronaut())
    assert boxes.shape == (1, 5)
    assert iou(boxes[0, :4], ASTRONAUT_FACE) > 0.7
    # a large frame is downscaled for detection; the box comes back in full-resolution pixels
    big = cv2.resize(astronaut(), (1536, 1536))
    b2 = det.detect(big)
    assert len(b2) == 1 and iou(b2[0, :4] / 3, ASTRONAUT_FACE) > 0.6


def test_registry():
    names = list_detectors()
    assert {"haar", "center", "landmarks"} <= set(names)
    assert "BSD" in names["haar"].licence
    with pytest.raises(MediaError, match="unknown face detector 'openface'"):
        get_detector("openface")
    with pytest.raises(MediaError, match="landmark"):
        get_detector("landmarks").detect(astronaut())
    c = get_detector("center").detect(np.zeros((100, 160, 3), np.uint8))
    assert c[0, :4].tolist() == [30, 0, 130, 100]


def test_crop_square_pads_outside_the_frame():
    img = np.full((100, 100, 3), 200, np.uint8)
    out = crop_square(img, (-20, -20, 40, 40), size=32, margin=0.0)  # half of the box is outside
    assert out.shape == (32, 32, 3)
    assert out[2, 2].max() == 0 and out[-3, -3].min() == 200


def test_box_from_landmarks():
    pts = landmarks68((10, 20, 50, 80))
    box = box_from_landmarks(pts)
    assert np.allclose(box, [10, 20, 50, 80], atol=0.01)
    assert box_from_landmarks(None) is None and box_from_landmarks([[1, 2]]) is None and box_from_landmarks("x") is None


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("faceclips")
    one, boxes = face_frames(30)
    two, boxes2 = face_frames(25, people=2)
    vanish = [f if t < 10 else noface_frames(1, seed=3)[0] for t, f in enumerate(face_frames(30, seed=4)[0])]
    return {
        "one": (write_video(d / "one.mp4", one), one, boxes),
        "two": (write_video(d / "two.avi", two), two, boxes2),
        "none": (write_video(d / "none.mp4", noface_frames(20)), None, None),
        "vanish": (write_video(d / "vanish.mp4", vanish), vanish, None),
        "garbage": (write_garbage(d / "garbage.mp4"), None, None),
    }


def test_crop_video_one_person(clips, tmp_path):
    path, frames, boxes = clips["one"]
    faces = tmp_path / "faces"
    # the true boxes (media_factory.FACE_IN_PATCH) follow Haar's box geometry, so this checks Haar's crops;
    # MTCNN's taller box is checked against the peer in tests/test_mtcnn.py
    res = crop_video(path, faces, "clip1", detector="haar")["clip1"]
    assert res.ok and res.has_face
    assert (res.n_frames, res.no_face_frames, res.media, res.fps) == (30, 0, "faces/clip1", 25.0)
    files = sorted(p.name for p in (faces / "clip1").glob("*.jpg"))
    assert files == [f"{i:05d}.jpg" for i in range(30)]
    assert [p.name for p in faces.iterdir()] == ["clip1"]  # no temporary folder left behind
    # every crop (key frame or interpolated) shows the moving face: it matches a crop at the true box
    for i in (0, 3, 12, 29):
        got = read_rgb(faces / "clip1" / f"{i:05d}.jpg").astype(float)
        want = crop_square(frames[i], boxes[i], 112, 0.2).astype(float)
        off = crop_square(frames[i], np.add(boxes[i], [40, 30, 40, 30]), 112, 0.2).astype(float)
        assert np.abs(got - want).mean() < 0.5 * np.abs(got - off).mean()
    meta = json.loads((faces / "clip1" / "crop.json").read_text())
    assert meta["options"]["detector"] == "haar" and meta["result"]["n_frames"] == 30


def test_crop_video_reuses_complete_crops_and_redoes_on_new_options(clips, tmp_path):
    path = clips["one"][0]
    faces = tmp_path / "faces"
    first = crop_video(path, faces, "c")["c"]
    again = crop_video(path, faces, "c")["c"]
    assert not first.reused and again.reused and again.n_frames == first.n_frames
    bigger = crop_video(path, faces, "c", face_size=64)["c"]
    assert not bigger.reused
    assert read_rgb(faces / "c" / "00000.jpg").shape == (64, 64, 3)
    assert sorted(p.name for p in faces.iterdir()) == ["c"]  # old folder replaced, nothing left over


def test_two_people_left_and_right(clips, tmp_path):
    path, frames, boxes = clips["two"]
    faces = tmp_path / "faces"
    out = crop_video(path, faces, {"v_left": "left", "v_right": "right"})
    assert set(out) == {"v_left", "v_right"}
    for sid, k in (("v_left", 0), ("v_right", 1)):
        r = out[sid]
        assert r.ok and r.n_frames == 25 and r.no_face_frames == 0 and r.decoder
        for i in (0, 7, 24):
            got = read_rgb(faces / sid / f"{i:05d}.jpg").astype(float)
            mine = crop_square(frames[i], boxes[i][k], 112, 0.2).astype(float)
            other = crop_square(frames[i], boxes[i][1 - k], 112, 0.2).astype(float)
            assert np.abs(got - mine).mean() < np.abs(got - other).mean()


def test_clip_without_a_face(clips, tmp_path):
    res = crop_video(clips["none"][0], tmp_path / "faces", "nf")["nf"]
    assert res.ok and not res.has_face
    assert res.n_frames == 20 and res.no_face_frames == 20 and res.no_face_ranges == [[0, 19]]
    assert not list((tmp_path / "faces" / "nf").glob("*.jpg"))


def test_no_face_policy_carries_then_invalidates(clips, tmp_path):
    # face visible in frames 0-9, gone from 10; detection on 0, 5, 10, …; carry at most 3 frames
    res = crop_video(clips["vanish"][0], tmp_path / "faces", "v", every=5, max_carry=3)["v"]
    written = sorted(int(p.stem) for p in (tmp_path / "faces" / "v").glob("*.jpg"))
    # 0-5 found/interpolated; key frame 10 finds nothing, so 6-8 carry frame 5's box, then invalid
    assert written == list(range(9))
    assert res.no_face_frames == 30 - 9 and res.no_face_ranges == [[9, 29]]


def test_unreadable_video_is_a_result_not_a_traceback(clips, tmp_path):
    res = crop_video(clips["garbage"][0], tmp_path / "faces", "g")["g"]
    assert not res.ok and "garbage.mp4" in res.error and "re-encode" in res.error
    assert not (tmp_path / "faces" / "g").exists()
    assert not [p for p in (tmp_path / "faces").iterdir()]  # the temporary folder is gone
    missing = crop_video(tmp_path / "nope.mp4", tmp_path / "faces", "n")["n"]
    assert not missing.ok and "does not exist" in missing.error


def test_center_detector_for_precropped_video(tmp_path):
    frames = [np.full((64, 64, 3), 40 + 5 * t, np.uint8) for t in range(6)]
    path = write_video(tmp_path / "crop.mp4", frames)
    res = crop_video(path, tmp_path / "faces", "p", detector="center", face_size=32)["p"]
    assert res.no_face_frames == 0 and len(list((tmp_path / "faces" / "p").glob("*.jpg"))) == 6


def test_crop_frames_from_boxes_with_gaps(tmp_path):
    frames, boxes = face_frames(8, w=200, h=150, size=80)
    # frame 2: no box (carried); frame 5: no image file (invalid)
    items = [(t, frames[t], None if t == 2 else np.asarray(boxes[t])) for t in range(8) if t != 5]
    res = crop_frames(items, tmp_path / "faces", "s", n_frames=8, max_carry=1, fps=25.0)
    written = sorted(int(p.stem) for p in (tmp_path / "faces" / "s").glob("*.jpg"))
    assert written == [0, 1, 2, 3, 4, 6, 7]
    assert res.no_face_frames == 1 and res.no_face_ranges == [[5, 5]] and res.n_frames == 8


def test_bad_sample_id(tmp_path, clips):
    with pytest.raises(MediaError, match="sample id"):
        crop_video(clips["one"][0], tmp_path, "../escape")
