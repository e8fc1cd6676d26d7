"""Face detectors on hard views: detection rate and frames/s per group, Haar vs MTCNN, in one run.

    python bench/faces.py [--n 8] [--detectors haar,mtcnn] [--gpu-frames 64]

Views are built offline from real photographs shipped in scikit-image: the astronaut's head (known face
box (177, 66, 272, 161) in the 512² photograph) and faces of the LFW subset, placed on other photographs
(coffee, rocket, chelsea, cameraman). A face counts as found when a detection overlaps its known box
with IoU ≥ 0.5; for a rotated face the known box is the upright square of the same side around the
rotated face centre. Groups: frontal, rotation ±20° and ±40°, faces 24–40 px and 200–400 px, dark,
over-exposed, blur, JPEG quality 20, half occlusion, several faces per frame (4–6 LFW faces).
frames/s is single-frame detection on this machine's CPU; with CUDA, MTCNN's batched frames/s too.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import skimage.data

from emotk.media.faces import get_detector

HEAD = (20, 230, 120, 330)  # rows, cols of the astronaut's head-and-shoulders patch (210 × 210)
FACE = (177 - 120, 66 - 20, 272 - 120, 161 - 20)  # the face box inside that patch


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _backgrounds():
    cam = skimage.data.camera()[..., None].repeat(3, 2)
    return [skimage.data.coffee(), skimage.data.rocket(), skimage.data.chelsea(), cam]


def _head_view(rng, bgs, face_px: float, angle: float = 0.0, frame=(320, 240)):
    """The astronaut's head scaled so its face box is ``face_px`` wide, rotated, pasted at a random place."""
    r0, r1, c0, c1 = HEAD
    patch = skimage.data.astronaut()[r0:r1, c0:c1]
    orig = patch.shape[0]
    s = face_px / (FACE[2] - FACE[0])
    side = max(8, int(round(patch.shape[0] * s)))
    patch = cv2.resize(patch, (side, side), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    w, h = max(frame[0], side + 8), max(frame[1], side + 8)
    bg = cv2.resize(bgs[rng.integers(len(bgs))], (w, h), interpolation=cv2.INTER_AREA)
    x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    img = bg.copy()
    img[y:y + side, x:x + side] = patch
    fx0, fy0, fx1, fy1 = (v * side / orig for v in FACE)
    cx, cy, half = x + (fx0 + fx1) / 2, y + (fy0 + fy1) / 2, (fx1 - fx0) / 2
    if angle:
        m = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
        img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    return img, [(cx - half, cy - half, cx + half, cy + half)]


def _lfw_view(rng, bgs, n_faces: int):
    faces = skimage.data.lfw_subset()[:100]  # the first 100 are faces
    size, pad, cols = 72, 20, 3
    rows = (n_faces + cols - 1) // cols
    w, h = cols * (size + 2 * pad), rows * (size + 2 * pad)
    img = cv2.resize(bgs[rng.integers(len(bgs))], (w, h), interpolation=cv2.INTER_AREA)
    truth = []
    for k, i in enumerate(rng.choice(100, n_faces, replace=False)):
        f = (np.clip(cv2.resize(faces[i], (size, size), interpolation=cv2.INTER_CUBIC), 0, 1) * 255).astype(np.uint8)
        r, c = divmod(k, cols)
        y, x = r * (size + 2 * pad) + pad, c * (size + 2 * pad) + pad
        img[y:y + size, x:x + size] = f[..., None]
        inset = 0.12 * size  # LFW's 25 px crops are tight on the face: the face is the tile minus a rim
        truth.append((x + inset, y + inset, x + size - inset, y + size - inset))
    return img, truth


def _jpeg(img, q):
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def build_groups(n: int, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    bgs = _backgrounds()
    head = lambda **kw: _head_view(rng, bgs, **kw)  # noqa: E731
    g: dict[str, list] = {}
    g["frontal 60-100 px"] = [head(face_px=rng.uniform(60, 100)) for _ in range(n)]
    g["rotation ±20°"] = [head(face_px=80, angle=rng.choice([-1, 1]) * rng.uniform(12, 20)) for _ in range(n)]
    g["rotation ±40°"] = [head(face_px=80, angle=rng.choice([-1, 1]) * rng.uniform(30, 40)) for _ in range(n)]
    g["small 24-40 px"] = [head(face_px=rng.uniform(24, 40)) for _ in range(n)]
    g["large 200-400 px"] = [head(face_px=rng.uniform(200, 400), frame=(480, 360)) for _ in range(n)]
    dark, bright, blur, jpeg, occl = [], [], [], [], []
    for _ in range(n):
        img, t = head(face_px=rng.uniform(60, 100))
        dark.append(((img * rng.uniform(0.12, 0.25)).astype(np.uint8), t))
        img, t = head(face_px=rng.uniform(60, 100))
        bright.append((np.clip(img.astype(np.float32) * 1.6 + rng.uniform(80, 110), 0, 255).astype(np.uint8), t))
        img, t = head(face_px=rng.uniform(60, 100))
        blur.append((cv2.GaussianBlur(img, (0, 0), rng.uniform(2.5, 4.0)), t))
        img, t = head(face_px=rng.uniform(60, 100))
        jpeg.append((_jpeg(img, 20), t))
        img, t = head(face_px=rng.uniform(70, 100))
        x0, y0, x1, y1 = (int(round(v)) for v in t[0])
        occluded = img.copy()
        if rng.random() < 0.5:  # lower half (mask, hand) or one side
            occluded[(y0 + y1) // 2:y1, x0:x1] = 40
        else:
            occluded[y0:y1, x0:(x0 + x1) // 2] = 40
        occl.append((occluded, t))
    g["dark"], g["over-exposed"], g["blur"], g["JPEG q20"], g["half occluded"] = dark, bright, blur, jpeg, occl
    g["several faces (4-6)"] = [_lfw_view(rng, bgs, int(rng.integers(4, 7))) for _ in range(n)]
    return g


def run(det, views) -> tuple[float, float, int]:
    """(share of faces found, frames/s, false detections) of ``det`` on ``views``."""
    found = total = false = 0
    t0 = time.perf_counter()
    outs = [det.detect(img) for img, _ in views]
    fps = len(views) / (time.perf_counter() - t0)
    for (img, truth), dets in zip(views, outs):
        used = set()
        for box in truth:
            total += 1
            ious = [_iou(box, d[:4]) for d in dets]
            if ious and max(ious) >= 0.5:
                found += 1
                used.add(int(np.argmax(ious)))
        false += len(dets) - len(used)
    return found / max(total, 1), fps, false


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="views per group")
    ap.add_argument("--detectors", default="haar,mtcnn")
    ap.add_argument("--gpu-frames", type=int, default=64, help="frames for the batched CUDA figure (0: skip)")
    args = ap.parse_args()
    groups = build_groups(args.n)
    names = args.detectors.split(",")
    dets = {name: get_detector(name, device="cpu") if name.startswith("mtcnn") else get_detector(name) for name in names}
    for d in dets.values():
        d.detect(groups["frontal 60-100 px"][0][0])  # warm-up
    header = "| group | " + " | ".join(f"{n} found | {n} fps | {n} false" for n in names) + " |"
    print(header)
    print("|" + "---|" * (1 + 3 * len(names)))
    for gname, views in groups.items():
        cells = []
        for name in names:
            rate, fps, false = run(dets[name], views)
            cells += [f"{rate:.0%}", f"{fps:.1f}", str(false)]
        print(f"| {gname} | " + " | ".join(cells) + " |", flush=True)
    import torch

    if args.gpu_frames and torch.cuda.is_available() and "mtcnn" in names:
        from emotk.media.mtcnn import MTCNN

        frames = [v[0] for v in groups["frontal 60-100 px"]]
        frames = (frames * (args.gpu_frames // len(frames) + 1))[:args.gpu_frames]
        for bs in (1, 16, 64):
            m = MTCNN(device="cuda", batch_size=bs)
            m.detect_batch(frames[:bs])
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            m.detect_batch(frames)
            torch.cuda.synchronize()
            print(f"MTCNN on {torch.cuda.get_device_name()}: batch {bs}: {len(frames) / (time.perf_counter() - t0):.1f} frames/s "
                  f"(320x240)")
    else:
        print("(no CUDA device: batched GPU frames/s not measured)")


if __name__ == "__main__":
    main()
