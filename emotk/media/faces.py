"""Face detectors (a registry) and face cropping for videos and frame sequences.

Detectors
    ``get_detector(name)`` returns an object with ``detect(rgb) -> float32 [N, 5]`` rows
    ``(x0, y0, x1, y1, score)`` in pixels. Registered here:

    - ``mtcnn`` (default): emotk's PyTorch MTCNN (:mod:`emotk.media.mtcnn`) with facenet-pytorch's MIT
      weights shipped as package data; rows carry five landmarks after the score (``[N, 15]``).
    - ``mtcnn_mesm``: the same detector with facenet-pytorch's ``extract_face`` crop (48 px, margin 2 px),
      the crops MESM's reference code trains on.
    - ``haar``: OpenCV's Haar frontal-face cascade, shipped inside opencv-python-headless 4.x
      (Apache-2.0 library, BSD-style Intel licence on the cascade file; no download, no torch).
    - ``center``: the central square of the frame, for videos that are already face crops.
    - ``landmarks``: not an image detector; boxes come from a dataset's facial landmarks (AFEW-VA).

    Add one with ``@register_detector("name", description=..., licence=...)`` on a class or factory.

Cropping policy (:func:`crop_video`)
    1. The detector runs on *key frames*: 0, every, 2·every, … and the last frame.
    2. A frame between two key frames that both found the face gets the linear interpolation of
       the two boxes.
    3. Otherwise a frame takes the last box found, if that box was found at most ``max_carry`` frames
       earlier (forward carry only).
    4. Otherwise the frame is invalid: no crop file is written and it counts in ``no_face_frames``.
    5. A box that cannot give a face crop makes its frame invalid too (listed in ``rejected_boxes``
       with the reason, never carried): its side is below :data:`MIN_FACE_SIDE` pixels of the
       source image, or less than :data:`MIN_INSIDE_FRACTION` of its square crop lies inside the
       frame (landmarks outside the picture, a 1×1 image) — the crop would be mostly black padding.
    Each box is made square around its centre, enlarged by ``margin`` of its side on every side,
    padded with black where it leaves the frame, and resized to ``face_size`` × ``face_size``.
    Two-person videos: ``side="left"`` / ``"right"`` picks the left-most / right-most face; one
    person: the face overlapping the previous box most, else the largest.

Spans, rates and halves (:class:`CropTarget`)
    A target may be a :class:`CropTarget` instead of a side: a time span ``[start, end)`` in seconds,
    a ``rate`` (frames per second kept; 0 = every frame) and a ``half`` (``"left"`` / ``"right"``:
    detect and crop in that half of a split-screen frame only). Its frames are numbered 0, 1, … in
    the order kept (:func:`span_frames` says which source frames), and the policy above runs over
    them. One decode serves every target of a video (IEMOCAP: all utterances of both speakers).

Output
    ``<faces_dir>/<sample_id>/NNNNN.jpg`` (0-based frame index, 5 digits) and ``crop.json`` (the
    options, decoder, counts, no-face frame ranges). A sample's crops are written into a hidden
    temporary folder which is renamed into place when complete, so a folder that exists is whole;
    a later run with the same options and source reuses it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from emotk import __version__
from emotk.media.video import MediaError, VideoStream
from emotk.registry import Registry

DEFAULT_DETECTOR = "mtcnn"
DEFAULT_FACE_SIZE = 112
DEFAULT_EVERY = 5
DEFAULT_MAX_CARRY = 10
DEFAULT_MARGIN = 0.2
META_NAME = "crop.json"
#: A face box (detector or landmarks) whose larger side is below this many source pixels is no face.
MIN_FACE_SIDE = 16
#: A square crop with less than this share of its area inside the frame is no face (mostly padding).
MIN_INSIDE_FRACTION = 0.5
#: The ``rejected_boxes`` reason of a frame whose image was given as None by :func:`crop_frames`' caller.
UNREADABLE_IMAGE = "the frame image cannot be decoded"


# =================================================================================================
# Detector registry
# =================================================================================================

@dataclass(frozen=True)
class DetectorInfo:
    name: str
    factory: Callable[..., object]
    description: str
    licence: str
    requires: str = ""  # pip package(s) it needs beyond emotk's own
    weights: str = ""  # where its model file(s) come from


DETECTORS: Registry = Registry("face detector", "See docs/faces.md.", MediaError)


def register_detector(name: str, *, description: str, licence: str, requires: str = "", weights: str = ""):
    """Decorator: register a detector class or factory under ``name`` (``--detector NAME``)."""

    def deco(factory):
        DETECTORS.register(name, DetectorInfo(name, factory, description, licence, requires, weights))
        return factory

    return deco


def list_detectors() -> dict[str, DetectorInfo]:
    return dict(DETECTORS)


def video_detectors() -> list[str]:
    """Names of the detectors that run on video frames (``landmarks`` does not: it needs annotations)."""
    return sorted(n for n in DETECTORS if n != "landmarks")


def open_detector(name: str, weights_dir: str | None = None):
    """``get_detector(name)``, loading its weights from ``weights_dir`` when given (``--detector-weights``);
    a detector without weight files refuses the option."""
    if weights_dir is None:
        return get_detector(name)
    import inspect

    info = DETECTORS.get(name)
    params = inspect.signature(info.factory).parameters
    if "weights_dir" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise MediaError(f"--detector-weights: detector {name!r} loads no weight files; drop the option or use mtcnn.")
    return get_detector(name, weights_dir=weights_dir)


def get_detector(name: str, **options):
    """An instance of the detector registered as ``name``."""
    if name not in DETECTORS:
        raise MediaError(f"unknown face detector {name!r}; available: {', '.join(sorted(DETECTORS))}.")
    return DETECTORS[name].factory(**options)


def to_rgb8(image) -> np.ndarray:
    """``image`` as a C-contiguous H×W×3 uint8 RGB array.

    Grey (H×W or H×W×1) is repeated to three channels; RGBA drops its alpha; uint16 maps 0–65535 to
    0–255 (÷257, rounded); floats are taken as 0–255 values (facenet-pytorch's and MESM's convention)
    and clipped; booleans become 0/255. Anything else is a :class:`MediaError`.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise MediaError(f"a frame must be H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA); got shape {a.shape}.")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == np.uint16:
        return np.ascontiguousarray(np.round(a.astype(np.float32) / 257.0).astype(np.uint8))
    if a.dtype == np.bool_:
        return np.ascontiguousarray(a.astype(np.uint8) * 255)
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer):
        f = a.astype(np.float64)
        if not np.isfinite(f).all():
            raise MediaError("a frame holds NaN or infinite pixel values.")
        return np.ascontiguousarray(np.clip(np.round(f), 0, 255).astype(np.uint8))
    raise MediaError(f"a frame of dtype {a.dtype} is not an image (expected uint8, uint16 or float).")


def _mtcnn(**options):
    from emotk.media.mtcnn import MTCNN

    return MTCNN(**options)


_MTCNN_WEIGHTS = ("facenet-pytorch 2.6.0 wheel's data/pnet.pt, rnet.pt, onet.pt (MIT, (c) 2019 Timothy Esler), "
                  "shipped in emotk/media/weights/mtcnn/; or --detector-weights DIR")


@register_detector(
    "mtcnn",
    description="MTCNN (Zhang et al. 2016): P-, R-, O-Net cascade with five landmarks; emotk's PyTorch code, "
                "CUDA when present; min face 20 px, factor 0.709, thresholds 0.6/0.7/0.7",
    licence="MIT (weights from facenet-pytorch); emotk's code: emotk's licence",
    weights=_MTCNN_WEIGHTS,
)
def mtcnn_detector(**options):
    """emotk's MTCNN (:class:`emotk.media.mtcnn.MTCNN`); options: min_face_size, factor, thresholds,
    device, batch_size, weights_dir, and ``align=True`` (crops rotated so the eyes are level)."""
    align = bool(options.pop("align", False))
    det = _mtcnn(**options)
    det.align = align
    return det


#: The crop MESM's reference code trains on: facenet-pytorch MTCNN(image_size=48, margin=2, post_process=False).
MESM_CROP = {"crop": "facenet", "face_size": 48, "margin": 2.0}


@register_detector(
    "mtcnn_mesm",
    description="MTCNN with facenet-pytorch's extract_face crop as MESM uses it: box + 2 px margin (output "
                "pixels), no squaring, area-resized to 48x48, no post-processing",
    licence="MIT (weights from facenet-pytorch); emotk's code: emotk's licence",
    weights=_MTCNN_WEIGHTS,
)
def mtcnn_mesm_detector(**options):
    """MTCNN whose crops are facenet-pytorch's ``extract_face`` crops (:data:`MESM_CROP`)."""
    det = _mtcnn(**options)
    det.name = "mtcnn_mesm"
    det.crop, det.face_size, det.margin = MESM_CROP["crop"], MESM_CROP["face_size"], MESM_CROP["margin"]
    return det


@register_detector(
    "haar",
    description="OpenCV Haar cascade, frontal faces (haarcascade_frontalface_default.xml); CPU, offline",
    licence="Apache-2.0 (OpenCV >= 4.5); cascade file: Intel License Agreement (3-clause BSD-style)",
    requires="opencv-python-headless>=4.8,<5",
    weights="haarcascade_frontalface_default.xml inside the opencv-python-headless 4.x wheel",
)
class HaarDetector:
    """OpenCV's frontal-face Haar cascade, run on a grey copy downscaled to at most ``max_side`` pixels.

    ``equalize=True`` equalises the histogram first (helps on dark footage; off by default because a
    global equalisation dominated by the background lowers the face's contrast and loses detections).
    """

    name = "haar"

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5, max_side: int = 640, min_size: int = 24,
                 cascade: str = "haarcascade_frontalface_default.xml", equalize: bool = False):
        try:
            import cv2
        except ImportError:
            raise MediaError(
                "the haar face detector needs OpenCV 4: `pip install 'opencv-python-headless>=4.8,<5'` "
                "(one of emotk's own dependencies, missing from this environment)."
            ) from None
        if not hasattr(cv2, "CascadeClassifier") or not hasattr(cv2, "data"):
            raise MediaError(
                f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 removed them): "
                "`pip install 'opencv-python-headless>=4.8,<5'`."
            )
        path = Path(cv2.data.haarcascades) / cascade
        self._cv2 = cv2
        self._clf = cv2.CascadeClassifier(str(path))
        if self._clf.empty():
            raise MediaError(f"cannot load the Haar cascade {path}; reinstall opencv-python-headless<5.")
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.max_side, self.min_size, self.equalize = max_side, min_size, equalize

    def detect(self, image: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        gray = cv2.cvtColor(to_rgb8(image), cv2.COLOR_RGB2GRAY)
        h, w = gray.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        if self.equalize:
            gray = cv2.equalizeHist(gray)
        rects, _, weights = self._clf.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size), outputRejectLevels=True,
        )
        if len(rects) == 0:
            return np.zeros((0, 5), np.float32)
        rects = np.asarray(rects, np.float32) / scale
        out = np.zeros((len(rects), 5), np.float32)
        out[:, 0], out[:, 1] = rects[:, 0], rects[:, 1]
        out[:, 2], out[:, 3] = rects[:, 0] + rects[:, 2], rects[:, 1] + rects[:, 3]
        out[:, 4] = np.asarray(weights, np.float32).reshape(-1)
        return out


@register_detector(
    "center",
    description="the central square of each frame, no detection (videos that are already face crops)",
    licence="n/a (no model)",
)
class CenterDetector:
    name = "center"
    margin = 0.0  # the box already is the crop

    def detect(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        s = min(h, w)
        x0, y0 = (w - s) / 2, (h - s) / 2
        return np.array([[x0, y0, x0 + s, y0 + s, 1.0]], np.float32)


@register_detector(
    "landmarks",
    description="boxes from the dataset's own facial landmarks (AFEW-VA); not usable on raw videos",
    licence="n/a (no model)",
)
class LandmarkBoxes:
    name = "landmarks"

    def detect(self, image: np.ndarray) -> np.ndarray:
        raise MediaError(
            "the 'landmarks' detector takes face boxes from a dataset's landmark annotations (AFEW-VA) and "
            "cannot run on a video; use --detector haar (or another registered detector)."
        )


def box_from_landmarks(points) -> np.ndarray | None:
    """The bounding box ``[x0, y0, x1, y1]`` of facial landmarks (e.g. 68 × [x, y]); None if unusable."""
    try:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    except (TypeError, ValueError):
        return None
    pts = pts[np.isfinite(pts).all(axis=1)]
    if len(pts) < 3:
        return None
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return np.array([x0, y0, x1, y1], np.float64)


# =================================================================================================
# Crops
# =================================================================================================

def crop_square(image: np.ndarray, box, size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Square crop around ``box`` centre, side = max(w, h)·(1 + 2·margin), black outside, resized."""
    import cv2

    left, top, side = crop_region(box, margin)
    h, w = image.shape[:2]
    canvas = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image[sy0:sy1, sx0:sx1, :3]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(canvas, (size, size), interpolation=interp)


def crop_region(box, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int]:
    """``(left, top, side)`` of the square :func:`crop_square` cuts around ``box``, in source pixels."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(2, int(round(max(x1 - x0, y1 - y0) * (1 + 2 * margin))))
    return int(round(cx - side / 2)), int(round(cy - side / 2)), side


def _padded(image: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    """The ``side``×``side`` region at (left, top) of ``image``, black where it leaves the image."""
    h, w = image.shape[:2]
    canvas = np.zeros((side, side, 3), np.uint8)
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = image[sy0:sy1, sx0:sx1, :3]
    return canvas


def eye_angle(points) -> float:
    """Angle in degrees of the line from the left eye (point 0) to the right eye (point 1); 0 when level,
    positive when the right eye (image right) is lower (image y grows downwards)."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return float(np.degrees(np.arctan2(p[1, 1] - p[0, 1], p[1, 0] - p[0, 0])))


def crop_aligned(image: np.ndarray, box, points, size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Like :func:`crop_square` (same centre and side), but rotated about the box centre so the eyes are level.

    A similarity transform (rotation + scale): the region around the box is cut with black padding,
    area-resized to the output scale, then rotated by :func:`eye_angle` with bilinear interpolation.
    """
    import cv2

    x0, y0, x1, y1 = (float(v) for v in box[:4])
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = crop_region(box, margin)[2]
    half = int(np.ceil(side * 0.75))  # covers the square's corners after any rotation (√2/2 < 0.75)
    region = _padded(image, int(round(cx)) - half, int(round(cy)) - half, 2 * half)
    n = max(2, int(round(2 * half * size / side)))
    interp = cv2.INTER_AREA if n < 2 * half else cv2.INTER_LINEAR
    region = cv2.resize(region, (n, n), interpolation=interp)
    # the box centre, in the resized region (sub-pixel: the region starts at a rounded centre)
    c = ((cx - (int(round(cx)) - half)) * n / (2 * half), (cy - (int(round(cy)) - half)) * n / (2 * half))
    m = cv2.getRotationMatrix2D(c, eye_angle(points), 1.0)
    m[0, 2] += size / 2 - c[0]
    m[1, 2] += size / 2 - c[1]
    return cv2.warpAffine(region, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0))


def box_problem(box, image_shape: tuple[int, ...], margin: float = DEFAULT_MARGIN) -> str | None:
    """Why ``box`` cannot give a face crop in an image of ``image_shape`` (None when it can).

    Refused: a box whose larger side is below :data:`MIN_FACE_SIDE` px, or whose square crop (with
    ``margin``) has less than :data:`MIN_INSIDE_FRACTION` of its area inside the image.
    """
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    if not all(np.isfinite([x0, y0, x1, y1])):
        return "the face box is not finite"
    face = max(x1 - x0, y1 - y0)
    if face < MIN_FACE_SIDE:
        return f"the face box is {face:.0f} px, below the minimum of {MIN_FACE_SIDE} px"
    h, w = image_shape[:2]
    left, top, side = crop_region(box, margin)
    inside_w = max(0, min(left + side, w) - max(left, 0))
    inside_h = max(0, min(top + side, h) - max(top, 0))
    inside = inside_w * inside_h / float(side * side)
    if inside < MIN_INSIDE_FRACTION:
        return (f"only {inside:.0%} of the {side} px crop around the face box lies inside the {w}x{h} image "
                f"(minimum {MIN_INSIDE_FRACTION:.0%})")
    return None


def _check_sid(sample_id: str) -> str:
    if not sample_id or "/" in sample_id or "\\" in sample_id or sample_id.startswith(".") or "\0" in sample_id:
        raise MediaError(f"sample id {sample_id!r} cannot name a faces folder (empty, has a slash, or starts with '.').")
    return sample_id


class _SampleWriter:
    """Writes one sample's crops into a hidden temporary folder; ``commit`` renames it into place."""

    def __init__(self, faces_dir: Path, sample_id: str, jpeg_quality: int = 95):
        import cv2

        self._cv2 = cv2
        self.final = Path(faces_dir) / _check_sid(sample_id)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.final.parent.iterdir():  # left by a killed run (prepare runs one process)
            if stale.name.startswith((f".{sample_id}.tmp-", f".{sample_id}.old-")):
                shutil.rmtree(stale, ignore_errors=True)
        self.tmp = self.final.parent / f".{sample_id}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.tmp.mkdir()
        self.params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        self.n_written = 0

    def write(self, index: int, rgb: np.ndarray) -> None:
        path = self.tmp / f"{index:05d}.jpg"
        if not self._cv2.imwrite(str(path), self._cv2.cvtColor(rgb, self._cv2.COLOR_RGB2BGR), self.params):
            raise OSError(f"cannot write {path} (disk full or not writable?)")
        self.n_written += 1

    def commit(self, meta: dict) -> None:
        (self.tmp / META_NAME).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        trash = None
        if self.final.exists():
            trash = self.final.parent / f".{self.final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(self.final, trash)
        os.replace(self.tmp, self.final)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def _ranges(indices: list[int]) -> list[list[int]]:
    """[1,2,3,7,8] → [[1,3],[7,8]] (inclusive)."""
    out: list[list[int]] = []
    for i in indices:
        if out and i == out[-1][1] + 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


class _FaceTrack:
    """One output sample: turns key-frame boxes into a box for every frame and writes the crops."""

    def __init__(self, writer: _SampleWriter, *, side: str | None, max_carry: int, face_size: int, margin: float,
                 crop: str = "square", align: bool = False):
        self.writer, self.side = writer, side
        self.max_carry, self.face_size, self.margin = max_carry, face_size, margin
        self.crop, self.align = crop, align
        # box_problem's square-crop check: facenet crops have a margin in output pixels, not a fraction
        self.check_margin = margin if crop == "square" else 0.0
        self.landmarks: list[list] = []  # [key frame index, [[x, y] × 5]] for each face the detector found
        self.prev_key: tuple[int, np.ndarray | None] | None = None  # (index, box found there or None)
        self.last_box: np.ndarray | None = None
        self.last_found = -(10**9)
        self.no_face: list[int] = []
        self.rejected: list[list] = []  # [frame index, why its box gives no face crop]
        self.n_frames = 0

    def _carry(self, idx: int) -> np.ndarray | None:
        return self.last_box if self.last_box is not None and idx - self.last_found <= self.max_carry else None

    def _emit(self, idx: int, frame: np.ndarray | None, box: np.ndarray | None) -> None:
        self.n_frames = max(self.n_frames, idx + 1)
        problem = None if box is None or frame is None else box_problem(box, frame.shape, self.check_margin)
        if problem is not None:
            self.rejected.append([idx, problem])
        if box is None or frame is None or problem is not None:
            self.no_face.append(idx)
        else:
            self.writer.write(idx, self._crop(frame, box))

    def _crop(self, frame: np.ndarray, box: np.ndarray) -> np.ndarray:
        if self.crop == "facenet":
            from emotk.media.mtcnn import crop_facenet

            return crop_facenet(frame, box, self.face_size, self.margin)
        if self.align and len(box) >= 8:
            return crop_aligned(frame, box, box[4:8], self.face_size, self.margin)
        return crop_square(frame, box, self.face_size, self.margin)

    def key(self, idx: int, frame: np.ndarray | None, box: np.ndarray | None,
            pending: list[tuple[int, np.ndarray | None]] = ()) -> None:
        """A key frame with its box (None: no face), after the non-key frames since the previous key."""
        prev_idx, prev_box = self.prev_key if self.prev_key else (None, None)
        rejected = box is not None and frame is not None and box_problem(box, frame.shape, self.check_margin) is not None
        if box is not None and not rejected and len(box) >= 14:
            self.landmarks.append([idx, np.round(np.asarray(box[4:14], np.float64), 2).reshape(5, 2).tolist()])
        usable = None if rejected else box  # a rejected box is neither interpolated towards nor carried
        for i, f in pending:
            if prev_box is not None and usable is not None:
                t = (i - prev_idx) / (idx - prev_idx)
                b = (1 - t) * prev_box + t * usable
            else:
                b = self._carry(i)
            self._emit(i, f, b)
        if rejected:
            self._emit(idx, frame, box)  # listed in self.rejected; the frame has no face
        else:
            if box is not None:
                self.last_box, self.last_found = box, idx
            self._emit(idx, frame, box if box is not None else self._carry(idx))
        self.prev_key = (idx, usable)

    def finish(self, pending: list[tuple[int, np.ndarray | None]] = ()) -> None:
        for i, f in pending:
            self._emit(i, f, self._carry(i))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _plausible(dets: np.ndarray, min_rel: float = 0.4) -> np.ndarray:
    """Drop detections much smaller than the largest one (background faces, false positives)."""
    if len(dets) <= 1:
        return dets
    sides = np.maximum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1])
    return dets[sides >= min_rel * sides.max()]


def select_faces(dets: np.ndarray, tracks: Mapping[str, _FaceTrack], width: float) -> dict[str, np.ndarray | None]:
    """Pick one detection per track: by side (left-most / right-most) or by continuity / size.

    A chosen face is its box ``[x0, y0, x1, y1]`` followed by the detector's landmark columns, if any
    (the score is dropped), so landmarks are interpolated and carried with the box.
    """
    dets = np.asarray(dets, np.float64)
    dets = _plausible(dets.reshape(-1, dets.shape[-1] if dets.ndim == 2 and dets.shape[-1] >= 5 else 5))
    out: dict[str, np.ndarray | None] = {sid: None for sid in tracks}
    if not len(dets):
        return out
    dets = np.concatenate([dets[:, :4], dets[:, 5:]], axis=1)  # score dropped; landmarks kept
    cx = (dets[:, 0] + dets[:, 2]) / 2
    sided = {sid: t for sid, t in tracks.items() if t.side in ("left", "right")}
    if len(dets) == 1 and len(sided) > 1:
        # One face for two people: it belongs to the side whose last box is nearest, when both are
        # known; otherwise to the side of the frame it is on.
        known = {sid: t.last_box for sid, t in sided.items() if t.last_box is not None}
        if len(known) == len(sided):
            owner = min(known, key=lambda s: abs((known[s][0] + known[s][2]) / 2 - cx[0]))
        else:
            want = "left" if cx[0] < width / 2 else "right"
            owner = next((sid for sid, t in sided.items() if t.side == want), None)
        if owner is not None:
            out[owner] = dets[0]
    else:
        for sid, t in sided.items():
            out[sid] = dets[int(np.argmin(cx) if t.side == "left" else np.argmax(cx))]
    for sid, t in tracks.items():
        if sid in sided:
            continue
        if t.last_box is not None:
            ious = [_iou(d, t.last_box) for d in dets]
            if max(ious) > 0.05:
                out[sid] = dets[int(np.argmax(ious))]
                continue
        areas = (dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1])
        out[sid] = dets[int(np.argmax(areas))]
    return out


@dataclass
class CropResult:
    """What cropping one sample produced. ``error`` set → the sample has no usable crops."""

    sample_id: str
    media: str = ""  # "faces/<sample_id>", relative to the dataset's workspace folder
    n_frames: int = 0  # frames decoded (the frame axis; crops exist only for valid frames)
    fps: float = 0.0
    decoder: str = ""
    n_frames_reported: int = 0
    no_face_frames: int = 0  # frames without a crop
    decode_note: str | None = None  # decoding stopped early, or the container over-reported
    error: str | None = None
    reused: bool = False
    no_face_ranges: list = field(default_factory=list)
    rejected_boxes: list = field(default_factory=list)  # [[frame index, why the box gives no face crop], ...]
    landmarks: list = field(default_factory=list)  # [[key frame index, [[x, y] × 5]], ...] (detectors with landmarks)
    source_frames: list = field(default_factory=list)  # span targets: the source frame index of each frame kept

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def has_face(self) -> bool:
        return self.ok and self.no_face_frames < self.n_frames


def _options(detector: str, face_size: int, every: int, max_carry: int, margin: float, side: str | None,
             det: object = None) -> dict:
    opts = {"detector": detector, "face_size": int(face_size), "every": int(every), "max_carry": int(max_carry),
            "margin": float(margin), "side": side,
            "box_rules": {"min_face_side": MIN_FACE_SIDE, "min_inside_fraction": MIN_INSIDE_FRACTION}}
    # keys added only when they matter, so crops made before they existed stay reusable
    crop = getattr(det, "crop", "square")
    if crop != "square":
        opts["crop"] = crop
    if getattr(det, "align", False):
        opts["align"] = True
    if callable(getattr(det, "options", None)):
        opts["detector_options"] = det.options()
    return opts


def _source(path: Path) -> dict:
    st = path.stat()
    return {"name": path.name, "size": st.st_size}


def _reuse(faces_dir: Path, sid: str, options: dict, source: dict) -> CropResult | None:
    meta_path = Path(faces_dir) / sid / META_NAME
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("options") != options or meta.get("source") != source:
        return None
    r = meta.get("result", {})
    try:
        return CropResult(sample_id=sid, media=f"faces/{sid}", n_frames=int(r["n_frames"]), fps=float(r["fps"]),
                          decoder=r["decoder"], n_frames_reported=int(r["n_frames_reported"]),
                          no_face_frames=int(r["no_face_frames"]), decode_note=r.get("decode_note"), reused=True,
                          no_face_ranges=r.get("no_face_ranges", []), rejected_boxes=r.get("rejected_boxes", []),
                          landmarks=r.get("landmarks", []), source_frames=r.get("source_frames", []))
    except (KeyError, TypeError, ValueError):
        return None


def _meta(result: CropResult, options: dict, source: dict) -> dict:
    r = asdict(result)
    for k in ("reused", "error", "sample_id", "media"):
        r.pop(k)
    if not r["source_frames"]:
        r.pop("source_frames")  # whole-video crops: crop.json as before spans existed
    return {"sample_id": result.sample_id, "options": options, "source": source, "result": r,
            "emotk_version": __version__, "frame_naming": "NNNNN.jpg, 0-based frame index"}


@dataclass(frozen=True)
class CropTarget:
    """What one output sample of :func:`crop_video` takes from the video.

    side: None (the one person), ``"left"`` / ``"right"`` (the left-most / right-most face).
    start, end: the time span in seconds, ``[start, end)``; None = the video's start / end.
    rate: frames per second to keep (:func:`span_frames`); 0 = every frame.
    half: None (the whole frame), ``"left"`` / ``"right"``: that half of a split-screen frame is cut
    out first; detection, boxes and crops all happen inside it (the other half's person never shows).
    """

    side: str | None = None
    start: float | None = None
    end: float | None = None
    rate: float = 0.0
    half: str | None = None

    def __post_init__(self):
        for name in ("side", "half"):
            if getattr(self, name) not in (None, "left", "right"):
                raise ValueError(f"{name} must be None, 'left' or 'right', not {getattr(self, name)!r}")
        for name in ("start", "end"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not math.isfinite(float(v)) or float(v) < 0):
                raise ValueError(f"{name} must be a time >= 0 in seconds or None, not {v!r}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"the span must end after it starts (start {self.start}, end {self.end})")
        if not math.isfinite(float(self.rate)) or self.rate < 0:
            raise ValueError(f"rate must be >= 0 frames per second (0 = every frame), not {self.rate!r}")

    @property
    def whole(self) -> bool:
        """Whether this target is a plain side (the whole video, every frame, the whole picture)."""
        return self.start is None and self.end is None and not self.rate and self.half is None

    def options(self) -> dict:
        return {"start": self.start, "end": self.end, "rate": float(self.rate), "half": self.half}


_EPS = 1e-6  # seconds × fps: a time that falls on a frame's timestamp up to rounding is that frame's


def _iter_span(fps: float, start: float | None, end: float | None, rate: float) -> Iterator[int]:
    lo = float(start or 0.0)
    hi = None if end is None else math.ceil(float(end) * fps - _EPS)  # first frame at or after ``end``
    if not rate or rate >= fps:
        i = max(0, math.ceil(lo * fps - _EPS))
        while hi is None or i < hi:
            yield i
            i += 1
        return
    k, last = 0, -1
    while True:
        t = lo + k / rate
        i = max(0, math.ceil(t * fps - _EPS))
        if hi is not None and i >= hi:
            return
        if i > last:
            yield i
            last = i
        k += 1


def span_frames(fps: float, start: float | None = None, end: float | None = None, rate: float = 0.0,
                n_frames: int | None = None) -> list[int]:
    """Source frame indices a :class:`CropTarget` keeps, frame ``i`` being at ``i / fps`` seconds.

    Every frame with ``start <= i/fps < end`` when ``rate`` is 0 or at least ``fps``; otherwise, for
    the times ``start + k/rate < end`` (k = 0, 1, …), the first frame at or after each. ``n_frames``
    bounds the list (needed when ``end`` is None).
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, not {fps!r}")
    if end is None and n_frames is None:
        raise ValueError("span_frames needs end or n_frames")
    out = []
    for i in _iter_span(fps, start, end, rate):
        if n_frames is not None and i >= n_frames:
            break
        out.append(i)
    return out


def crop_video(
    video: str | Path,
    faces_dir: str | Path,
    targets: Mapping[str, str | None | CropTarget] | str,
    *,
    detector: str | object = DEFAULT_DETECTOR,
    face_size: int = DEFAULT_FACE_SIZE,
    every: int = DEFAULT_EVERY,
    max_carry: int = DEFAULT_MAX_CARRY,
    margin: float = DEFAULT_MARGIN,
    decoder: str = "auto",
    jpeg_quality: int = 95,
    reuse: bool = True,
    align: bool = False,
) -> dict[str, CropResult]:
    """Crop faces from one video into ``<faces_dir>/<sample_id>/NNNNN.jpg`` for each target.

    targets: ``{sample_id: side}`` with side None (the one person), ``"left"`` or ``"right"``
    (two-person videos: one decode serves both), a :class:`CropTarget` (a time span, a frame rate
    and/or one half of a split-screen frame; one decode serves every target), or a single sample id.
    Never raises for a bad video: the result's ``error`` says why (MediaError message). Disk errors
    (OSError) do propagate. See the module docstring for the detection / carry / no-face policy.

    A detector instance may set ``margin``, ``face_size`` and ``crop`` (``"square"`` or ``"facenet"``)
    attributes, which take the place of the arguments (``mtcnn_mesm`` does); ``align=True`` (or the
    detector's ``align`` attribute) rotates each square crop so the eyes are level, which needs a
    detector with landmarks. A detector with ``detect_batch`` and ``batch_size`` > 1 gets that many key
    frames at once (MTCNN on CUDA); the boxes are then used in frame order exactly as one by one.
    """
    video = Path(video)
    faces_dir = Path(faces_dir)
    if isinstance(targets, str):
        targets = {targets: None}
    spans = {sid: t if isinstance(t, CropTarget) else CropTarget(side=t) for sid, t in targets.items()}
    targets = {sid: t.side for sid, t in spans.items()}
    if every < 1 or max_carry < 0 or face_size < 8:
        raise ValueError("every >= 1, max_carry >= 0 and face_size >= 8 are required")
    det = get_detector(detector) if isinstance(detector, str) else detector
    det_name = detector if isinstance(detector, str) else getattr(det, "name", type(det).__name__)
    margin = float(getattr(det, "margin", margin))
    face_size = int(getattr(det, "face_size", face_size))
    crop = getattr(det, "crop", "square")
    align = bool(align or getattr(det, "align", False))
    if align:
        if crop != "square":
            raise ValueError(f"align applies to square crops, not to the {crop!r} crop of detector {det_name!r}")
        if not getattr(det, "has_landmarks", False):
            raise MediaError(f"--align needs a detector that finds landmarks (mtcnn); {det_name!r} does not.")
        if not getattr(det, "align", False):
            try:
                det.align = True  # recorded in crop.json's options
            except AttributeError:
                raise MediaError(f"detector {det_name!r} cannot record the align option.") from None
    try:
        source = _source(video)
    except OSError:
        return {sid: CropResult(sid, error=f"video {video} does not exist") for sid in targets}
    if not all(t.whole for t in spans.values()):
        return _crop_spans(video, faces_dir, spans, det, det_name, source, face_size=face_size, every=every,
                           max_carry=max_carry, margin=margin, crop=crop, align=align, decoder=decoder,
                           jpeg_quality=jpeg_quality, reuse=reuse)

    results: dict[str, CropResult] = {}
    todo: dict[str, str | None] = {}
    for sid, side in targets.items():
        _check_sid(sid)
        opts = _options(det_name, face_size, every, max_carry, margin, side, det)
        cached = _reuse(faces_dir, sid, opts, source) if reuse else None
        if cached is not None:
            results[sid] = cached
        else:
            todo[sid] = side
    if not todo:
        return results

    stream = VideoStream(video, decoder=decoder)
    writers = {sid: _SampleWriter(faces_dir, sid, jpeg_quality) for sid in todo}
    tracks = {sid: _FaceTrack(writers[sid], side=side, max_carry=max_carry, face_size=face_size, margin=margin,
                              crop=crop, align=align)
              for sid, side in todo.items()}
    batch = max(1, int(getattr(det, "batch_size", 1) or 1)) if hasattr(det, "detect_batch") else 1
    committed = False
    try:
        pending: list[tuple[int, np.ndarray]] = []
        queue: list[tuple[int, np.ndarray, list]] = []  # key frames waiting for a batched detection

        def flush() -> None:
            frames = [f for _, f, _ in queue]
            found = det.detect_batch(frames) if len(frames) > 1 else [det.detect(f) for f in frames]
            for (idx, frame, pend), dets in zip(queue, found):
                boxes = select_faces(dets, tracks, frame.shape[1])
                for sid, track in tracks.items():
                    track.key(idx, frame, boxes[sid], pend)
            queue.clear()

        def on_key(idx: int, frame: np.ndarray, pend) -> None:
            queue.append((idx, frame, pend))
            if len(queue) >= batch:
                flush()

        try:
            for idx, frame in stream:
                if idx % every == 0:
                    on_key(idx, frame, pending)
                    pending = []
                else:
                    pending.append((idx, frame))
            if pending:  # the last frame is a key frame too: it bounds the interpolation
                last_idx, last_frame = pending.pop()
                on_key(last_idx, last_frame, pending)
                pending = []
            flush()
        except MediaError as exc:
            for w in writers.values():
                w.abort()
            return {**results, **{sid: CropResult(sid, error=str(exc)) for sid in todo}}
        notes = "; ".join(([stream.error] if stream.error else []) + stream.notes) or None
        for sid, track in tracks.items():
            track.finish()
            res = CropResult(
                sample_id=sid, media=f"faces/{sid}", n_frames=stream.n_decoded, fps=float(stream.fps),
                decoder=stream.decoder_used or "", n_frames_reported=int(stream.n_frames_reported),
                no_face_frames=len(track.no_face), decode_note=notes, no_face_ranges=_ranges(track.no_face),
                rejected_boxes=track.rejected, landmarks=track.landmarks,
            )
            writers[sid].commit(_meta(res, _options(det_name, face_size, every, max_carry, margin, todo[sid], det),
                                      source))
            results[sid] = res
        committed = True
    finally:
        if not committed:
            for w in writers.values():
                w.abort()
    return results


class _SpanSample:
    """One span target while its video streams: which source frames it keeps, its track and writer."""

    def __init__(self, sid: str, target: CropTarget, fps: float):
        self.sid, self.target = sid, target
        self._next = _iter_span(fps, target.start, target.end, target.rate)
        self.want = next(self._next, None)  # the next source frame it keeps (None: the span is over)
        self.source_frames: list[int] = []
        self.pending: list[tuple[int, np.ndarray]] = []
        self.writer: _SampleWriter | None = None
        self.track: _FaceTrack | None = None
        self.closed = False

    def advance(self) -> None:
        self.want = next(self._next, None)


def _half(frame: np.ndarray, half: str | None) -> np.ndarray:
    if half is None:
        return frame
    w = frame.shape[1]
    return np.ascontiguousarray(frame[:, : w // 2] if half == "left" else frame[:, w // 2:])


def _crop_spans(video: Path, faces_dir: Path, spans: Mapping[str, CropTarget], det, det_name: str, source: dict, *,
                face_size: int, every: int, max_carry: int, margin: float, crop: str, align: bool, decoder: str,
                jpeg_quality: int, reuse: bool) -> dict[str, CropResult]:
    """:func:`crop_video` for :class:`CropTarget` targets: one decode, each target's frames as it keeps them.

    Crops go to each target's temporary folder as its span streams by; all are committed when the
    video has been read (a target whose span lies wholly outside the video gets an ``error``).
    """
    def opts_of(t: CropTarget) -> dict:
        return {**_options(det_name, face_size, every, max_carry, margin, t.side, det), "span": t.options()}

    results: dict[str, CropResult] = {}
    todo: dict[str, CropTarget] = {}
    for sid, t in spans.items():
        _check_sid(sid)
        cached = _reuse(faces_dir, sid, opts_of(t), source) if reuse else None
        if cached is not None:
            results[sid] = cached
        else:
            todo[sid] = t
    if not todo:
        return results

    stream = VideoStream(video, decoder=decoder)
    samples: dict[str, _SpanSample] = {}
    batch = max(1, int(getattr(det, "batch_size", 1) or 1)) if hasattr(det, "detect_batch") else 1
    queue: list[tuple[tuple, np.ndarray, _SpanSample, int, list]] = []  # key frames waiting for detection

    def flush() -> None:
        unique: dict[tuple, np.ndarray] = {}
        for key, image, *_ in queue:
            unique.setdefault(key, image)  # two samples keying the same frame and half: detect once
        keys = list(unique)
        images = [unique[k] for k in keys]
        found = det.detect_batch(images) if len(images) > 1 else [det.detect(f) for f in images]
        dets = dict(zip(keys, found))
        for key, image, smp, j, pend in queue:
            boxes = select_faces(dets[key], {smp.sid: smp.track}, image.shape[1])
            smp.track.key(j, image, boxes[smp.sid], pend)
        queue.clear()

    def on_key(smp: _SpanSample, key: tuple, j: int, image: np.ndarray, pend) -> None:
        queue.append((key, image, smp, j, pend))
        if len(queue) >= batch:
            flush()

    def close(smp: _SpanSample) -> None:
        """The span is over: its last frame is a key frame too (it bounds the interpolation)."""
        smp.closed = True
        if smp.track is None:
            return
        if smp.pending:
            j, image = smp.pending.pop()
            on_key(smp, (smp.source_frames[j], smp.target.half), j, image, smp.pending)
            smp.pending = []
        flush()
        smp.track.finish()

    committed: set[str] = set()
    try:
        try:
            for idx, frame in stream:
                if not samples:
                    if not stream.fps > 0:
                        raise MediaError(f"video {video} states no frame rate, so time spans cannot be cut from it; "
                                         f"{FIX_HINT_SPANS}")
                    samples = {sid: _SpanSample(sid, t, float(stream.fps)) for sid, t in todo.items()}
                halves: dict[str | None, np.ndarray] = {}
                for smp in samples.values():
                    if smp.closed:
                        continue
                    if smp.want == idx:
                        if smp.track is None:
                            smp.writer = _SampleWriter(faces_dir, smp.sid, jpeg_quality)
                            smp.track = _FaceTrack(smp.writer, side=smp.target.side, max_carry=max_carry,
                                                   face_size=face_size, margin=margin, crop=crop, align=align)
                        if smp.target.half not in halves:
                            halves[smp.target.half] = _half(frame, smp.target.half)
                        image = halves[smp.target.half]
                        j = len(smp.source_frames)
                        smp.source_frames.append(idx)
                        if j % every == 0:
                            on_key(smp, (idx, smp.target.half), j, image, smp.pending)
                            smp.pending = []
                        else:
                            smp.pending.append((j, image))
                        smp.advance()
                    if smp.want is None:
                        close(smp)
            for smp in samples.values():
                if not smp.closed:
                    close(smp)
            flush()
        except MediaError as exc:
            return {**results, **{sid: CropResult(sid, error=str(exc)) for sid in todo}}
        notes = "; ".join(([stream.error] if stream.error else []) + stream.notes) or None
        fps = float(stream.fps)
        duration = stream.n_decoded / fps
        for sid, t in todo.items():
            smp = samples[sid]
            bound = None if t.end is not None else max(stream.n_frames_reported, stream.n_decoded)
            expected = len(span_frames(fps, t.start, t.end, t.rate, bound))
            got = len(smp.source_frames)
            span_text = f"{t.start or 0:.2f}-{'end' if t.end is None else f'{t.end:.2f}'} s"
            if smp.track is None:
                results[sid] = CropResult(sid, error=(
                    f"the span {span_text} holds no frame of the video ({stream.n_decoded} frames at {fps:g} fps "
                    f"= {duration:.2f} s)"))
                continue
            note = notes
            if got < expected:
                short = f"the span {span_text} runs past the video's end at {duration:.2f} s: {got} of {expected} frames"
                note = f"{short}; {notes}" if notes else short
            rate = float(t.rate) if t.rate and t.rate < fps else fps
            res = CropResult(
                sample_id=sid, media=f"faces/{sid}", n_frames=got, fps=rate, decoder=stream.decoder_used or "",
                n_frames_reported=expected, no_face_frames=len(smp.track.no_face), decode_note=note,
                no_face_ranges=_ranges(smp.track.no_face), rejected_boxes=smp.track.rejected,
                landmarks=smp.track.landmarks, source_frames=list(smp.source_frames),
            )
            smp.writer.commit(_meta(res, opts_of(t), source))
            committed.add(sid)
            results[sid] = res
    finally:
        for sid, smp in samples.items():
            if sid not in committed and smp.writer is not None:
                smp.writer.abort()
    return results


#: What to do about a video whose time axis cannot be read.
FIX_HINT_SPANS = "re-encode it with `ffmpeg -i IN -c:v libx264 -r 30 OUT` (a constant frame rate)"


def crop_frames(
    frames: Iterable[tuple[int, np.ndarray | None, np.ndarray | None]],
    faces_dir: str | Path,
    sample_id: str,
    n_frames: int,
    *,
    face_size: int = DEFAULT_FACE_SIZE,
    max_carry: int = DEFAULT_MAX_CARRY,
    margin: float = DEFAULT_MARGIN,
    fps: float = 0.0,
    source: dict | None = None,
    options: dict | None = None,
    jpeg_quality: int = 95,
    reuse: bool = True,
) -> CropResult:
    """Crop a frame sequence whose face boxes are known (e.g. from landmarks), every frame a key frame.

    frames: ``(index, rgb or None, box or None)`` in increasing index order; indices below
    ``n_frames`` that never appear (missing image files) are invalid frames; an rgb of None (the
    image file exists but cannot be decoded) is an invalid frame listed in ``rejected_boxes``. A frame with no box takes
    the last box found at most ``max_carry`` frames earlier, else it is invalid (no crop).
    ``source``/``options`` identify the input for reuse by a later run.
    """
    faces_dir = Path(faces_dir)
    _check_sid(sample_id)
    opts = {**_options("landmarks", face_size, 1, max_carry, margin, None), **(options or {})}
    source = source or {}
    if reuse:
        cached = _reuse(faces_dir, sample_id, opts, source)
        if cached is not None:
            return cached
    writer = _SampleWriter(faces_dir, sample_id, jpeg_quality)
    committed = False
    try:
        track = _FaceTrack(writer, side=None, max_carry=max_carry, face_size=face_size, margin=margin)
        expected = 0
        for idx, image, box in frames:
            if idx >= n_frames:
                continue
            for missing in range(expected, idx):  # no image file for these indices
                track.key(missing, None, None)
            if image is None:
                track.rejected.append([idx, UNREADABLE_IMAGE])
            track.key(idx, image, None if image is None else box)
            expected = idx + 1
        for missing in range(expected, n_frames):
            track.key(missing, None, None)
        res = CropResult(sample_id=sample_id, media=f"faces/{sample_id}", n_frames=n_frames, fps=float(fps),
                         decoder="images", n_frames_reported=n_frames, no_face_frames=len(track.no_face),
                         no_face_ranges=_ranges(track.no_face), rejected_boxes=track.rejected)
        writer.commit(_meta(res, opts, source))
        committed = True
        return res
    finally:
        if not committed:
            writer.abort()


def crop_files(faces_dir: str | Path, sample_id: str) -> Iterator[Path]:
    """The crop files of a sample, in frame order."""
    yield from sorted((Path(faces_dir) / sample_id).glob("[0-9]*.jpg"))
