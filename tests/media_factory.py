"""Real media for tests: a real face photo (scikit-image's astronaut, public domain) moving over a
background, encoded into real mp4/avi files with PyAV, plus miniatures of the raw dataset layouts
(EmoReact, AFEW-VA, AffWild2 videos) and deliberately broken files.

Nothing here is a mock: every file is decoded by the same decord / PyAV / OpenCV code a user runs.
"""

from __future__ import annotations

import json
import struct
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import skimage.data

# The astronaut's face in skimage.data.astronaut() (512x512): OpenCV's Haar cascade finds it at
# x=177, y=66, 95x95. PATCH is a square around it with hair and shoulders.
PATCH_RC = (25, 205, 140, 320)  # rows 25:205, cols 140:320 (180 x 180)
FACE_IN_PATCH = (37, 41, 132, 136)  # x0, y0, x1, y1 of the face inside PATCH, at 180 px


def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def face_patch(size: int, mirrored: bool = False) -> np.ndarray:
    r0, r1, c0, c1 = PATCH_RC
    p = astronaut()[r0:r1, c0:c1]
    if mirrored:
        p = p[:, ::-1].copy()
        p = np.clip(p.astype(np.int16) + np.array([30, -20, -20]), 0, 255).astype(np.uint8)  # tint: another "person"
    return cv2.resize(p, (size, size), interpolation=cv2.INTER_AREA)


def face_box_in_frame(x: int, y: int, size: int) -> tuple[float, float, float, float]:
    s = size / 180
    fx0, fy0, fx1, fy1 = FACE_IN_PATCH
    return (x + fx0 * s, y + fy0 * s, x + fx1 * s, y + fy1 * s)


def background(w: int, h: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    bg = np.empty((h, w, 3), np.uint8)
    bg[:] = np.linspace(30, 110, w, dtype=np.uint8)[None, :, None]
    bg[..., 2] = np.linspace(90, 40, h, dtype=np.uint8)[:, None]
    noise = rng.integers(0, 12, (h, w, 1), dtype=np.uint8)
    return bg + noise


def face_positions(n: int, w: int, h: int, size: int, x_from: float = 0.05, x_to: float = 0.55):
    """Top-left corners of a face moving left → right and slightly down over n frames."""
    out = []
    for t in range(n):
        a = t / max(n - 1, 1)
        x = int((x_from + (x_to - x_from) * a) * (w - size))
        y = int((h - size) * (0.3 + 0.2 * a))
        out.append((x, y))
    return out


def face_frames(n: int = 30, w: int = 320, h: int = 240, size: int = 100, people: int = 1, seed: int = 0):
    """Frames with one moving face, or two faces (left: astronaut, right: mirrored, tinted)."""
    bg = background(w, h, seed)
    frames, boxes = [], []
    if people == 1:
        pos = face_positions(n, w, h, size)
        p = face_patch(size)
        for x, y in pos:
            f = bg.copy()
            f[y:y + size, x:x + size] = p
            frames.append(f)
            boxes.append(face_box_in_frame(x, y, size))
        return frames, boxes
    left, right = face_patch(size), face_patch(size, mirrored=True)
    for t in range(n):
        f = bg.copy()
        dy = int(4 * np.sin(t / 3))
        y = (h - size) // 2 + dy
        f[y:y + size, 8:8 + size] = left
        f[y:y + size, w - size - 8:w - 8] = right
        frames.append(f)
        boxes.append((face_box_in_frame(8, y, size), face_box_in_frame(w - size - 8, y, size)))
    return frames, boxes


def noface_frames(n: int = 20, w: int = 320, h: int = 240, seed: int = 3):
    bg = background(w, h, seed)
    out = []
    for t in range(n):
        f = bg.copy()
        cv2.rectangle(f, (20 + 4 * t, 60), (80 + 4 * t, 140), (200, 180, 40), -1)  # a moving box, no face
        out.append(f)
    return out


# --- encoding -------------------------------------------------------------------------------------

def write_video(path: Path, frames, fps: int = 25, codec: str | None = None, gop: int = 12, faststart: bool = False,
                bframes: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = codec or ("mpeg4" if path.suffix.lower() == ".avi" else "libx264")
    opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        s.pix_fmt = "yuv420p"
        s.codec_context.gop_size = gop
        s.codec_context.max_b_frames = bframes
        if codec == "libx264":
            s.codec_context.options = {"bf": str(bframes), "preset": "ultrafast"}
        for f in frames:
            for pk in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return path


def write_vfr_mp4(path: Path, frames) -> Path:
    """Variable frame rate: frame durations alternate 80 ms / 40 ms."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.codec_context.options = {"bf": "0"}
        s.time_base = Fraction(1, 1000)
        t = 0
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, s.time_base
            t += 40 if i % 2 else 80
            for pk in s.encode(vf):
                c.mux(pk)
        for pk in s.encode():
            c.mux(pk)
    return path


def write_overreported_mp4(path: Path, frames, extra: int = 20, payload: str = "eos") -> Path:
    """An mp4 whose sample table lists ``extra`` more frames than can be decoded.

    After the real frames, ``extra`` samples are muxed that each hold a lone H.264 NAL unit:
    ``eos`` (end of sequence) — the decoder outputs nothing for them, and decord, left alone, pads the
    tail with copies of the last frame up to its ``len()`` of len(frames)+extra; ``aud`` (access unit
    delimiter) — decord's threaded decoder errors out a few frames before the real end.
    """
    nal = {"eos": b"\x0a", "aud": b"\x09\xf0"}[payload]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        s.codec_context.options = {"bf": "0", "preset": "ultrafast"}
        last = 0
        for f in frames:
            for pk in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pk)
                last = pk.pts
        for pk in s.encode():
            c.mux(pk)
            last = pk.pts
        dur = int(round(1 / (25 * s.time_base)))
        for k in range(1, extra + 1):
            p = av.Packet(len(nal).to_bytes(4, "big") + nal)  # AVCC: 4-byte length, then the NAL unit
            p.stream, p.time_base = s, s.time_base
            p.pts = p.dts = last + k * dur
            p.duration = dur
            c.mux(p)
    return path


def write_overreported_avi(path: Path, frames, claimed: int) -> Path:
    """An AVI whose headers (avih dwTotalFrames, strh dwLength) claim ``claimed`` frames."""
    write_video(path, frames)
    data = bytearray(path.read_bytes())
    i = data.find(b"avih")
    data[i + 8 + 16:i + 8 + 20] = struct.pack("<I", claimed)
    j = data.find(b"strh")
    data[j + 8 + 32:j + 8 + 36] = struct.pack("<I", claimed)
    path.write_bytes(bytes(data))
    return path


def write_truncated_mp4(path: Path, frames, keep: float = 0.6) -> Path:
    """A download cut short: moov at the front (faststart), the media data cut at ``keep``."""
    write_video(path, frames, gop=5, faststart=True)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_garbage(path: Path, n: int = 10240) -> Path:
    path.write_bytes(np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def write_no_frames_mp4(path: Path) -> Path:
    """A well-formed mp4 with zero video frames (one second of silent audio only: the mp4 muxer
    drops a video stream that never received a frame)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        a = c.add_stream("aac", rate=16000)
        a.layout = "mono"
        for t in range(0, 16000, 1024):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, t
            for pk in a.encode(af):
                c.mux(pk)
        for pk in a.encode():
            c.mux(pk)
    return path


# --- dataset miniatures ---------------------------------------------------------------------------

def quote_matlab(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"


EMOREACT_CLIPS = {
    "Train": ["80'sTOYS115_2.mp4", "BULLYING12_2.mp4", "iPOD3_2.mp4"],
    "Validation": ["Gay_Marriage4_2.mp4", "SWING_COPTERS7_2.mp4"],
    "Test": ["BULLYING30_2.mp4", "iPOD9_2.mp4"],
}


def emoreact_label_line(i: int) -> str:
    flags = [(i + k) % 2 if k % 3 else (i * k) % 2 for k in range(8)]
    return ",".join(str(f) for f in flags) + f",{3 + (i % 5) * 0.3333:.4f}"


def make_emoreact(root: Path, n_frames: int = 16, noface: tuple[str, ...] = (), corrupt: tuple[str, ...] = (),
                  missing: tuple[str, ...] = (), names_in: str = "root", val_spelling: str = "val") -> Path:
    """EmoReact_V_1.0 miniature: Data/<Split>/*.mp4, Labels/*_labels.text, quoted *_names.txt."""
    base = Path(root) / "EmoReact_V_1.0"
    labels_dir = base / "Labels"
    labels_dir.mkdir(parents=True, exist_ok=True)
    files = {"Train": ("train", "Train"), "Validation": (val_spelling, "Val"), "Test": ("test", "Test")}
    i = 0
    for split, clips in EMOREACT_CLIPS.items():
        lab_stem, names_stem = files[split]
        lines, names = [], []
        for clip in clips:
            names.append(quote_matlab(clip))
            lines.append(emoreact_label_line(i))
            i += 1
            if clip in missing:
                continue
            path = base / "Data" / split / clip
            if clip in corrupt:
                path.parent.mkdir(parents=True, exist_ok=True)
                write_garbage(path)
            elif clip in noface:
                write_video(path, noface_frames(n_frames))
            else:
                frames, _ = face_frames(n_frames, seed=i)
                write_video(path, frames)
        (labels_dir / f"{lab_stem}_labels.text").write_text("\n".join(lines) + "\n")
        names_dir = base if names_in == "root" else labels_dir
        (names_dir / f"{names_stem}_names.txt").write_text("\n".join(names) + "\n\n")
    return base


def landmarks68(box) -> list[list[float]]:
    """68 [x, y] points whose bounding box is ``box``: jaw, brows, nose, eyes, mouth (iBUG order)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    pts = []
    for k in range(17):  # jaw: a U from the left temple to the right temple
        a = np.pi * k / 16
        pts.append((x0 + w / 2 - np.cos(a) * w / 2, y0 + 0.25 * h + np.sin(a) * 0.75 * h))
    for k in range(10):  # brows
        pts.append((x0 + w * (0.15 + 0.07 * k), y0 + (0.0 if k in (2, 7) else 0.05 * h)))
    for k in range(9):  # nose
        pts.append((x0 + w * (0.5 if k < 4 else 0.38 + 0.06 * (k - 4)), y0 + h * (0.3 + 0.08 * min(k, 4))))
    for k in range(12):  # eyes
        pts.append((x0 + w * (0.22 + 0.04 * (k % 6) + (0.35 if k >= 6 else 0)), y0 + h * 0.35))
    for k in range(20):  # mouth
        pts.append((x0 + w * (0.32 + 0.018 * k), y0 + h * (0.75 + 0.03 * ((k % 4) - 1.5))))
    return [[round(float(x), 2), round(float(y), 2)] for x, y in pts]


def make_afewva(root: Path, clips: dict | None = None, n_frames: int = 12) -> Path:
    """AFEW-VA miniature: NNN/NNNNN.png full frames + NNN/NNN.json (valence, arousal, 68 landmarks).

    clips: {clip_id: {"actor": str, "valence": list|None, "drop": [frame ids without JSON entry],
    "no_json": bool}}; valence defaults to a ramp.
    """
    root = Path(root) / "AFEW-VA"
    clips = clips or {
        "001": {"actor": "Jane Doe"},
        "002": {"actor": "Jane Doe", "valence": [-3] * n_frames},
        "003": {"actor": "John Roe", "drop": [3, 4]},
        "004": {"actor": "John Roe", "no_json": True},
    }
    for n, (cid, spec) in enumerate(clips.items()):
        d = root / cid
        d.mkdir(parents=True, exist_ok=True)
        frames, boxes = face_frames(n_frames, w=256, h=192, size=90, seed=n)
        val = spec.get("valence") or [int(v) for v in np.linspace(-2, 6, n_frames).round()]
        entries = {}
        for t, (f, b) in enumerate(zip(frames, boxes)):
            cv2.imwrite(str(d / f"{t:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
            if t in spec.get("drop", ()):
                continue
            entries[f"{t:05d}"] = {"valence": int(val[t]), "arousal": int((t % 7) - 3), "landmarks": landmarks68(b)}
        if not spec.get("no_json"):
            (d / f"{cid}.json").write_text(json.dumps({"actor": spec["actor"], "video_id": cid, "frames": entries}))
    return root


def make_affwild2_videos(root: Path, n_frames: int = 30) -> Path:
    """AffWild2 raw videos: batch1/{10-30-320x240.mp4, 102.avi}, batch2/5-25-320x240.mp4 (two people),
    plus an AppleDouble file that must be ignored."""
    root = Path(root)
    f1, _ = face_frames(n_frames, seed=1)
    write_video(root / "batch1" / "10-30-320x240.mp4", f1, fps=30)
    f2, _ = face_frames(n_frames, seed=2)
    write_video(root / "batch1" / "102.avi", f2, fps=25)
    f3, _ = face_frames(n_frames, people=2, seed=3)
    write_video(root / "batch2" / "5-25-320x240.mp4", f3, fps=25)
    (root / "batch1" / "._10-30-320x240.mp4").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    return root
