"""emotk's MTCNN: the peer comparison with facenet-pytorch, weight-file errors, odd frames, crops.

The peer test needs facenet-pytorch 2.6.0 installed without its dependencies
(`pip install --no-deps facenet-pytorch==2.6.0 requests`, as `.ci/run` does); it skips otherwise.
Images are real photographs shipped in scikit-image (astronaut, cameraman, the LFW subset), rescaled,
rotated and placed on other photographs.
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from emotk.media.faces import crop_aligned, crop_square, crop_video, eye_angle, get_detector, list_detectors, to_rgb8
from emotk.media.mtcnn import MTCNN, WEIGHTS_DIR, crop_facenet, pyramid_scales
from emotk.media.video import MediaError
from media_factory import face_frames, write_video

ASTRONAUT_FACE = (177, 66, 272, 161)  # where the face is in skimage's astronaut (512 x 512)


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def det():
    return MTCNN(device="cpu")


def _rotate(img, deg):
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def _lfw_tiles(ids, bg, size=64, cols=3, pad=14, grey=False):
    faces = skimage.data.lfw_subset()
    rows = (len(ids) + cols - 1) // cols
    img = cv2.resize(bg, (cols * (size + 2 * pad), rows * (size + 2 * pad)), interpolation=cv2.INTER_AREA)
    for k, i in enumerate(ids):
        f = (np.clip(cv2.resize(faces[i], (size, size), interpolation=cv2.INTER_CUBIC), 0, 1) * 255).astype(np.uint8)
        r, c = divmod(k, cols)
        y, x = r * (size + 2 * pad) + pad, c * (size + 2 * pad) + pad
        img[y:y + size, x:x + size] = f[..., None]
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None].repeat(3, 2) if grey else img


def _paste(bg, patch, x, y):
    out = bg.copy()
    out[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
    return out


def peer_images() -> dict[str, np.ndarray]:
    """Real photographs with one or several faces (≥ 20 images, ≤ 400 px so the test stays quick)."""
    astro = skimage.data.astronaut()
    head = astro[20:230, 120:330]  # the astronaut's head and shoulders
    coffee, rocket, chelsea = skimage.data.coffee(), skimage.data.rocket(), skimage.data.chelsea()
    camera = skimage.data.camera()[..., None].repeat(3, 2)
    s = lambda im, side: cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA)  # noqa: E731
    bg = lambda im, w, h: cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)  # noqa: E731
    imgs = {
        "astro_256": s(astro, 256), "astro_320": s(astro, 320), "astro_400": s(astro, 400),
        "rot_+12": _rotate(s(astro, 320), 12), "rot_-12": _rotate(s(astro, 320), -12),
        "rot_+30": _rotate(s(astro, 320), 30), "rot_-30": _rotate(s(astro, 320), -30),
        "coffee_head": _paste(bg(coffee, 360, 240), s(head, 120), 200, 60),
        "rocket_head_small": _paste(bg(rocket, 380, 250), s(head, 64), 40, 150),
        "chelsea_head": _paste(bg(chelsea, 360, 240), s(head, 150), 20, 40),
        "two_heads": _paste(_paste(bg(coffee, 400, 200), s(head, 110), 20, 50), s(head[:, ::-1], 140), 230, 30),
        "camera_384": s(camera, 384),
        "astro_grey": cv2.cvtColor(s(astro, 300), cv2.COLOR_RGB2GRAY)[..., None].repeat(3, 2),
        "astro_dark": (s(astro, 300) * 0.35).astype(np.uint8),
        "astro_bright": np.clip(s(astro, 300).astype(np.int16) + 70, 0, 255).astype(np.uint8),
        "astro_blur": cv2.GaussianBlur(s(astro, 300), (0, 0), 2.0),
        "lfw_4": _lfw_tiles([0, 1, 2, 3], coffee, cols=2),
        "lfw_6": _lfw_tiles([4, 5, 6, 7, 8, 9], rocket),
        "lfw_6_grey": _lfw_tiles([10, 11, 12, 13, 14, 15], chelsea, grey=True),
        "lfw_9_small": _lfw_tiles(list(range(16, 25)), coffee, size=44, pad=10),
        "astro_wide": bg(astro, 400, 240),
    }
    return imgs


@pytest.fixture(scope="module")
def peer():
    pytest.importorskip(
        "facenet_pytorch",
        reason="facenet-pytorch (the peer) is not installed: `pip install --no-deps facenet-pytorch==2.6.0 requests`",
    )
    from facenet_pytorch import MTCNN as PeerMTCNN
    from facenet_pytorch.models.utils.detect_face import extract_face

    return PeerMTCNN(keep_all=True, device="cpu", image_size=48, margin=2, post_process=False), extract_face


def test_matches_facenet_pytorch(det, peer):
    peer_net, extract_face = peer
    images = peer_images()
    assert len(images) >= 20
    n_faces = 0
    for name, img in images.items():
        boxes, probs, points = peer_net.detect(img, landmarks=True)
        ref = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, float).reshape(-1, 4)
        ref_pts = np.zeros((0, 5, 2)) if points is None else np.asarray(points, float).reshape(-1, 5, 2)
        mine = det.detect(img)
        assert len(mine) == len(ref), f"{name}: {len(mine)} faces, facenet-pytorch {len(ref)}"
        n_faces += len(ref)
        frame = torch.as_tensor(img).float()  # MESM gives facenet-pytorch float frames (0-255, HWC)
        for k, box in enumerate(ref):
            j = int(np.argmax([iou(box, m[:4]) for m in mine]))
            assert iou(box, mine[j, :4]) >= 0.98, f"{name} face {k}"
            assert np.abs(mine[j, 5:].reshape(5, 2) - ref_pts[k]).max() <= 1.5, f"{name} face {k} landmarks"
            want = extract_face(frame, box, 48, 2).permute(1, 2, 0).numpy()
            got = crop_facenet(img, mine[j, :4], 48, 2)
            assert got.shape == (48, 48, 3) and np.abs(got.astype(float) - want).max() <= 1, f"{name} crop {k}"
    assert n_faces >= 30  # several faces per image where placed


def test_pyramid_scales_by_formula():
    # 100 x 200, min face 20: m = 12/20; levels while 100·m·0.709^k ≥ 12 → k = 0..4 (60, 42.5, 30.2, 21.4, 15.2)
    assert np.allclose(pyramid_scales(100, 200, 20, 0.709), [0.6 * 0.709 ** k for k in range(5)])
    assert pyramid_scales(19, 300, 20, 0.709) == []  # shorter side below the minimum face: no level


def test_finds_the_astronaut_with_landmarks(det):
    d = det.detect(skimage.data.astronaut())
    assert d.shape == (1, 15) and d.dtype == np.float32 and iou(d[0, :4], ASTRONAUT_FACE) > 0.6
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = d[0, 5:].reshape(5, 2)
    x0, y0, x1, y1 = d[0, :4]
    assert x0 < lx < nx < rx < x1 and x0 < mlx < mrx < x1  # eyes and mouth corners either side of the nose
    assert y0 < ly < ny < mly < y1 and ry < ny < mry < y1  # eyes above the nose above the mouth


def test_registry_lists_licence_and_weights_source():
    info = list_detectors()
    assert {"mtcnn", "mtcnn_mesm", "haar"} <= set(info)
    assert "MIT" in info["mtcnn"].licence and "facenet-pytorch 2.6.0" in info["mtcnn"].weights
    assert "opencv" in info["haar"].weights
    for f in ("pnet.pt", "rnet.pt", "onet.pt", "LICENSE-facenet-pytorch.txt", "README.md"):
        assert (WEIGHTS_DIR / f).is_file()
    assert "Timothy Esler" in (WEIGHTS_DIR / "LICENSE-facenet-pytorch.txt").read_text()


@pytest.fixture()
def weights_copy(tmp_path):
    d = tmp_path / "w"
    shutil.copytree(WEIGHTS_DIR, d)
    return d


def test_missing_weight_file_is_one_clear_error(weights_copy):
    (weights_copy / "rnet.pt").unlink()
    with pytest.raises(MediaError, match=r"rnet\.pt is missing.*reinstall emotk.*facenet-pytorch 2\.6\.0"):
        get_detector("mtcnn", weights_dir=weights_copy)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickled_code", "wrong_net", "not_tensors"])
def test_corrupt_weight_file_is_one_clear_error(weights_copy, damage):
    target = weights_copy / "onet.pt"
    if damage == "garbage":
        target.write_bytes(b"this is not a torch file\n" * 40)
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:5000])
    elif damage == "pickled_code":
        torch.save({"conv1.weight": torch.zeros(1), "fn": shutil.rmtree}, target)  # weights_only refuses it
    elif damage == "wrong_net":
        shutil.copy(weights_copy / "pnet.pt", target)
    else:
        torch.save({"conv1.weight": [1, 2, 3]}, target)
    with pytest.raises(MediaError, match=r"onet\.pt.*(cannot be read|does not hold|not a state dict).*reinstall emotk"):
        MTCNN(weights_dir=weights_copy)


def test_grey_rgba_16bit_and_float_frames(det):
    rgb = cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    want = det.detect(rgb)
    assert len(want) == 1
    rgba = np.concatenate([rgb, np.full((256, 256, 1), 7, np.uint8)], axis=2)
    deep = rgb.astype(np.uint16) * 257  # 16-bit: 0..255 → 0..65535
    for variant in (rgba, deep, rgb.astype(np.float32)):
        assert np.array_equal(det.detect(variant), want)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    for g in (grey, grey[..., None]):
        found = det.detect(g)
        assert len(found) == 1 and iou(found[0, :4], want[0, :4]) > 0.8
    assert np.array_equal(to_rgb8(grey)[..., 1], grey)
    with pytest.raises(MediaError, match="H x W"):
        det.detect(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(MediaError, match="NaN"):
        det.detect(np.full((30, 30, 3), np.nan, np.float32))


def test_tiny_and_empty_frames_and_twenty_faces(det):
    for shape in ((10, 10, 3), (19, 300, 3), (1, 1, 3)):
        out = det.detect(np.full(shape, 128, np.uint8))
        assert out.shape == (0, 15)
    flat = np.zeros((240, 320, 3), np.uint8)
    flat[:] = np.linspace(20, 200, 320, dtype=np.uint8)[None, :, None]
    assert det.detect(flat).shape == (0, 15)
    # twenty LFW faces in a 5 x 4 grid: each tile holds exactly one detection
    size, pad, cols = 72, 16, 5
    img = _lfw_tiles(list(range(20)), skimage.data.coffee(), size=size, pad=pad, cols=cols)
    found = det.detect(img)
    tiles = [(int(cy // (size + 2 * pad)), int(cx // (size + 2 * pad)))
             for cx, cy in zip((found[:, 0] + found[:, 2]) / 2, (found[:, 1] + found[:, 3]) / 2)]
    assert len(found) == 20 and len(set(tiles)) == 20


def test_batch_equals_one_by_one(det):
    astro = cv2.resize(skimage.data.astronaut(), (200, 200), interpolation=cv2.INTER_AREA)
    frames = [astro, _rotate(astro, 15), np.zeros_like(astro), cv2.resize(skimage.data.coffee(), (200, 200))]
    batched = MTCNN(device="cpu", batch_size=4).detect_batch(frames + [astro[:150]])  # two sizes: two groups
    for f, b in zip(frames + [astro[:150]], batched):
        single = det.detect(f)
        assert b.shape == single.shape and np.allclose(b, single, atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: batched GPU detection not checked here")
def test_cuda_batch_matches_cpu(det):
    astro = cv2.resize(skimage.data.astronaut(), (320, 320), interpolation=cv2.INTER_AREA)
    frames = [astro, _rotate(astro, -20), _rotate(astro, 25), astro[:, ::-1].copy()] * 4
    gpu = MTCNN(device="cuda", batch_size=16).detect_batch(frames)
    for f, g in zip(frames, gpu):
        c = det.detect(f)
        assert len(c) == len(g) and all(iou(a[:4], b[:4]) > 0.98 for a, b in zip(c, g))


def test_crop_facenet_region_by_hand():
    # box (10, 20, 50, 70), size 48, margin 2: grows by 2·40/46 and 2·50/46 → [9, 18) .. [50, 71) after int()
    img = np.zeros((100, 100, 3), np.uint8)
    img[18:71, 9:50] = 200
    img[18, 9:50] = 90  # the region's top row, averaged into the crop's top row
    out = crop_facenet(img, (10, 20, 50, 70), 48, 2)
    assert out.shape == (48, 48, 3) and (out[1:] == 200).all() and (out[0] < 200).all()
    assert crop_facenet(img, (-50, -50, -40, -40), 48, 2) is None  # entirely outside


def test_eye_level_alignment_undoes_a_rotation(det):
    astro = skimage.data.astronaut()
    cx, cy = (ASTRONAUT_FACE[0] + ASTRONAUT_FACE[2]) / 2, (ASTRONAUT_FACE[1] + ASTRONAUT_FACE[3]) / 2
    m = cv2.getRotationMatrix2D((cx, cy), 20, 1.0)  # 20° counter-clockwise on screen about the face
    turned = cv2.warpAffine(astro, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
    d0, d1 = det.detect(astro)[0], det.detect(turned)[0]
    # landmarks follow the rotation: the eye line turns by 20° (clockwise in y-down terms → angle − 20)
    assert abs((eye_angle(d1[5:9]) - eye_angle(d0[5:9])) - (-20)) < 4
    level = crop_aligned(astro, d0[:4], d0[5:9], 96)
    fixed = crop_aligned(turned, d1[:4], d1[5:9], 96)
    plain = crop_square(turned, d1[:4], 96)
    err_fixed = np.abs(fixed.astype(float) - level).mean()
    err_plain = np.abs(plain.astype(float) - level).mean()
    assert err_fixed < 0.6 * err_plain


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    frames, boxes = face_frames(12, w=256, h=192, size=110)
    return write_video(tmp_path_factory.mktemp("mtcnnclip") / "one.mp4", frames), frames


def test_crop_video_writes_landmarks_and_aligns(clip, tmp_path):
    path, frames = clip
    res = crop_video(path, tmp_path / "faces", "c", every=5)["c"]
    assert res.ok and res.no_face_frames == 0
    meta = json.loads((tmp_path / "faces" / "c" / "crop.json").read_text())
    assert meta["options"]["detector"] == "mtcnn" and meta["options"]["detector_options"]["min_face_size"] == 20
    keys = [k for k, _ in meta["result"]["landmarks"]]
    assert keys == [0, 5, 10, 11]  # every key frame (0, 5, 10 and the last) found the face
    for _, pts in meta["result"]["landmarks"]:
        (lx, ly), (rx, ry), _, (mlx, mly), _ = pts
        assert lx < rx and ly < mly and ry < mly
    again = crop_video(path, tmp_path / "faces", "c", every=5)["c"]
    assert again.reused and again.landmarks == res.landmarks
    aligned = crop_video(path, tmp_path / "faces", "c", every=5, align=True)["c"]
    assert not aligned.reused and aligned.no_face_frames == 0
    assert json.loads((tmp_path / "faces" / "c" / "crop.json").read_text())["options"]["align"] is True
    with pytest.raises(MediaError, match="align needs a detector that finds landmarks"):
        crop_video(path, tmp_path / "faces", "h", detector="haar", align=True)


def test_mesm_crops(clip, tmp_path):
    path, frames = clip
    res = crop_video(path, tmp_path / "faces", "m", detector="mtcnn_mesm", every=5)["m"]
    assert res.ok and res.no_face_frames == 0
    crop0 = cv2.imread(str(tmp_path / "faces" / "m" / "00000.jpg"))
    assert crop0.shape == (48, 48, 3)
    opts = json.loads((tmp_path / "faces" / "m" / "crop.json").read_text())["options"]
    assert (opts["detector"], opts["crop"], opts["face_size"], opts["margin"]) == ("mtcnn_mesm", "facenet", 48, 2.0)
