"""Miniatures of the facial-expression image releases in their real raw layouts, with real faces.

- FER2013: a real ``fer2013.csv`` (header ``emotion,pixels,Usage``, 2,304 integers per row) and the
  image-folder release (``train|test/<class>/*.jpg``), 48×48 grey faces cut from scikit-image's
  astronaut (public domain), each with its own noise; plus the bad rows the issue names.
- CK+: ``cohn-kanade-images/Sxxx/nnn/*.png`` + ``Emotion/Sxxx/nnn/*_emotion.txt`` (the release's
  ``'   3.0000000e+00'`` format), grey and RGB frames with the face at a known place.
- JAFFE: a flat folder of ``SS.EEn.N.tiff`` files (grey and RGB), a README and misnamed files.

Every image is a real PNG/TIFF/JPEG file decoded by the same code a user runs; the face positions are
known here (``media_factory.face_box_in_frame``), so tests can check the detector's boxes against them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from media_factory import background, face_box_in_frame, face_patch

FER_CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")


def fer_face(seed: int) -> np.ndarray:
    """A 48×48 grey face (the astronaut's) with per-image noise: uint8 [48, 48]."""
    rng = np.random.default_rng(seed)
    grey = cv2.cvtColor(face_patch(48, mirrored=bool(seed % 2)), cv2.COLOR_RGB2GRAY).astype(np.int16)
    return np.clip(grey + rng.integers(-20, 21, grey.shape), 0, 255).astype(np.uint8)


def pixels_text(image: np.ndarray) -> str:
    return " ".join(str(int(v)) for v in image.reshape(-1))


#: The bad rows of the miniature CSV: (emotion, pixels text maker, Usage, what is wrong).
def _bad_rows() -> list[tuple[str, str, str, str]]:
    ok = pixels_text(fer_face(999))
    short = " ".join(ok.split()[:-1])
    over = " ".join(ok.split()[:-1] + ["256"])
    negative = "-3 " + " ".join(ok.split()[1:])
    decimal = "12.5 " + " ".join(ok.split()[1:])
    return [("3", short, "Training", "2303 pixel values"),
            ("3", over, "Training", "outside 0-255"),
            ("2", negative, "PublicTest", "outside 0-255"),
            ("1", decimal, "Training", "not an integer"),
            ("7", ok, "Training", "not a class id"),
            ("x", ok, "PrivateTest", "not a class id"),
            ("0", ok, "Validation", "Usage")]


def make_fer2013_csv(root: Path, per_class: int = 3, header: str = "emotion,pixels,Usage",
                     folder: str = "") -> dict:
    """Write ``<root>/<folder>/fer2013.csv``: ``per_class`` rows per class (Usage cycling Training,
    Training, PublicTest, PrivateTest, …) with the bad rows interleaved. Returns
    ``{"good": {row: (label, usage, image)}, "bad": {row: reason text}, "path": csv path}``."""
    usages = ("Training", "Training", "PublicTest", "PrivateTest")
    good, bad, lines = {}, {}, [header]
    bad_rows = _bad_rows()
    row = 0
    for i in range(per_class * len(FER_CLASSES)):
        label = i % len(FER_CLASSES)
        usage = usages[(i // len(FER_CLASSES) + label) % len(usages)]
        image = fer_face(row)
        lines.append(f"{label},{pixels_text(image)},{usage}")
        good[row] = (label, usage, image)
        row += 1
        if i % 3 == 2 and bad_rows:
            emotion, pixels, usage_b, why = bad_rows.pop(0)
            lines.append(f"{emotion},{pixels},{usage_b}")
            bad[row] = why
            row += 1
    for emotion, pixels, usage_b, why in bad_rows:
        lines.append(f"{emotion},{pixels},{usage_b}")
        bad[row] = why
        row += 1
    path = Path(root) / folder / "fer2013.csv" if folder else Path(root) / "fer2013.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return {"good": good, "bad": bad, "path": path}


def make_fer2013_folders(root: Path, per_class: int = 2) -> dict:
    """The image-folder release: ``train|test/<class>/<Usage>_<n>.jpg`` (48×48 grey JPEG), plus one RGB
    JPEG (kept, converted), one 64×64 image, one undecodable file, one image in an unknown class
    folder and a PNG twin of a JPEG's name (all four reported). Returns ``{"good": {relative path: (label, split)}, "bad": {relative path: why}}``."""
    root = Path(root)
    good, bad = {}, {}
    n = 0
    for split, usage in (("train", "Training"), ("test", "PublicTest")):
        for label, name in enumerate(FER_CLASSES):
            folder = root / split / name.lower()
            folder.mkdir(parents=True, exist_ok=True)
            for _ in range(per_class):
                rel = f"{split}/{name.lower()}/{usage}_{n}.jpg"
                Image.fromarray(fer_face(n)).save(root / rel, quality=95)
                good[rel] = (label, split)
                n += 1
    rgb = "train/happy/Training_rgb.jpg"
    Image.fromarray(np.repeat(fer_face(500)[..., None], 3, axis=2)).save(root / rgb, quality=95)
    good[rgb] = (3, "train")
    big = "train/sad/Training_big.jpg"
    Image.fromarray(cv2.resize(fer_face(501), (64, 64))).save(root / big, quality=95)
    bad[big] = "64x64"
    broken = "test/fear/PublicTest_broken.jpg"
    (root / broken).write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 20)
    bad[broken] = "cannot be decoded"
    twin = "train/angry/Training_0.png"  # the same name as Training_0.jpg, another extension
    Image.fromarray(fer_face(503)).save(root / twin)
    bad[twin] = "same sample id"
    (root / "train" / "contempt").mkdir(parents=True, exist_ok=True)
    odd = "train/contempt/Training_odd.jpg"
    Image.fromarray(fer_face(502)).save(root / odd, quality=95)
    bad[odd] = "not a FER2013 class"
    return {"good": good, "bad": bad}


# --- CK+ and JAFFE: faces at known places -----------------------------------------------------------

def face_image(w: int, h: int, x: int, y: int, size: int, seed: int, rgb: bool, mirrored: bool = False):
    """A ``w``×``h`` image with the astronaut's face patch (``size`` px) at (x, y): (uint8 image, face box)."""
    frame = background(w, h, seed)
    frame[y:y + size, x:x + size] = face_patch(size, mirrored=mirrored)
    if not rgb:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return frame, face_box_in_frame(x, y, size)


def blank_image(w: int, h: int, seed: int, rgb: bool) -> np.ndarray:
    frame = background(w, h, seed)
    return frame if rgb else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


#: CK+ miniature: subject → sequence → (emotion code or None, frames, RGB?, what else). 3 subjects.
CKPLUS = {
    "S005": {"001": (3, 5, False, ""), "002": (None, 4, False, "")},
    "S010": {"001": (5, 5, True, ""), "002": (2, 4, False, ""), "003": (9, 4, False, "bad code")},
    "S011": {"001": (7, 5, False, ""), "002": (1, 4, False, "peak missing"), "003": (6, 5, False, "no face at peak")},
}


def ck_emotion_text(code: float) -> str:
    return f"   {code:.7e}\n"


def make_ckplus(root: Path, subjects: dict | None = None, w: int = 320, h: int = 240, size: int = 150) -> dict:
    """Write a CK+ miniature under ``root/CK+``. Returns ``{"boxes": {sample_id: face box}, "base": path}``:
    the face box of every frame that has a face (grey PNG, or RGB PNG for the sequences marked so)."""
    base = Path(root) / "CK+"
    boxes = {}
    seed = 0
    for subject, seqs in (subjects or CKPLUS).items():
        for seq, (code, n, rgb, special) in seqs.items():
            folder = base / "cohn-kanade-images" / subject / seq
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(1, n + 1):
                sid = f"{subject}_{seq}_{k:08d}"
                x, y = 40 + 6 * k, 30 + 3 * k
                if special == "no face at peak" and k == n:
                    image = blank_image(w, h, seed, rgb)
                else:
                    image, box = face_image(w, h, x, y, size, seed, rgb, mirrored=subject == "S010")
                    boxes[sid] = box
                Image.fromarray(image).save(folder / f"{sid}.png")
                seed += 1
            (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
            emo = base / "Emotion" / subject / seq
            emo.mkdir(parents=True, exist_ok=True)  # the release has empty Emotion folders too
            if code is not None:
                peak = n + 2 if special == "peak missing" else n
                (emo / f"{subject}_{seq}_{peak:08d}_emotion.txt").write_text(ck_emotion_text(code))
    return {"boxes": boxes, "base": base}


def jaffe_names(subjects=("KA", "KL", "KM")) -> list[str]:
    """JAFFE file names: each subject × the 7 expressions, plus a few second takes."""
    codes = ("AN", "DI", "FE", "HA", "NE", "SA", "SU")
    names, number = [], 1
    for s in subjects:
        for c in codes:
            names.append(f"{s}.{c}{1 + number % 2}.{number}.tiff")
            number += 1
    # second takes, so classes differ in size (as in the release: 29-32 images per class)
    extra = {"KA": ("AN", "SU"), "KL": ("HA",), "KM": ("SA", "AN")}
    for s in subjects:
        for c in extra.get(s, ()):
            names.append(f"{s}.{c}3.{number}.tiff")
            number += 1
    return names


JAFFE_BAD = {"KA.XX1.90.tiff": "expression code", "KA-AN1-91.tiff": "does not follow", "ka.an1.92.tiff": "does not follow"}


def make_jaffe(root: Path, names: list[str] | None = None, side: int = 160, size: int = 130) -> dict:
    """Write ``root/jaffe/`` with JAFFE-named TIFFs (grey; subject KL's in RGB), a README and the files of
    :data:`JAFFE_BAD`. Returns ``{"boxes": {sample_id: face box}, "folder": path}``."""
    folder = Path(root) / "jaffe"
    folder.mkdir(parents=True, exist_ok=True)
    boxes = {}
    for i, name in enumerate((names or jaffe_names()) + list(JAFFE_BAD)):
        x, y = 10 + (i % 5) * 3, 8 + (i % 3) * 3
        image, box = face_image(side, side, x, y, size, seed=i, rgb=name.startswith("KL."), mirrored=i % 2 == 1)
        Image.fromarray(image).save(folder / name, format="TIFF")
        boxes[name[: -len(".tiff")]] = box
    (folder / "README").write_text("The Japanese Female Facial Expression (JAFFE) Database\n")
    return {"boxes": boxes, "folder": folder}
