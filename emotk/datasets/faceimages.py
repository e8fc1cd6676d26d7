"""What the still-image expression datasets (FER2013, CK+, JAFFE) share: options, face cropping of a
list of image files into the image store, the image task, and Miskow's per-image split.

The readers (``fer2013.py``, ``ckplus.py``, ``jaffe.py``) find the images and their labels; this
module turns them into ``images.h5`` (see ``emotk.features.images``) and manifest rows.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from emotk.atomic import write_parquet
from emotk.datasets.base import Task, choice, dynamic_choice, failure, number, progress_bar
from emotk.errors import DatasetError, SplitError
from emotk.features.images import COLORS, crop_face, read_image_file, resize_square, to_channels, write_image_store
from emotk.media.faces import DEFAULT_DETECTOR as FACES_DEFAULT_DETECTOR
from emotk.media.faces import open_detector, video_detectors
from emotk.workspace import Workspace

#: Miskow's input: 48×48, one grey channel.
DEFAULT_SIZE = 48
DEFAULT_COLOR = "grey"
#: The project's default face detector (``emotk.media.faces.DEFAULT_DETECTOR``: MTCNN, weights shipped).
DEFAULT_DETECTOR = FACES_DEFAULT_DETECTOR
#: Miskow's crops are the detector's box itself (no margin); see docs/datasets/ckplus.md.
DEFAULT_MARGIN = 0.0
STORE_NAME = "images.h5"

#: Miskow's split: split-folders' per-class 80/20 with this seed, then Keras' validation_split.
MISKOW_SEED = 1337
MISKOW_TEST = 0.2
MISKOW_VALIDATION = 0.3
MISKOW_SPLIT_NAME = "miskow"

SIZE_OPTION = number(int, 16, 1024)
COLOR_OPTION = choice(*COLORS)
def _folder_or_none(name: str, value) -> None:
    if value is not None and not isinstance(value, str):
        raise DatasetError(f"invalid {name} {value!r}: expected a folder path.")


CROP_OPTIONS = {"face_size": SIZE_OPTION, "color": COLOR_OPTION, "detector": dynamic_choice(video_detectors),
                "margin": number(float, 0.0, 2.0), "detector_weights": _folder_or_none}


def image_task(n_classes: int) -> Task:
    """The task of a single-image expression dataset with ``n_classes`` classes (label = class id)."""
    return Task(kind="clip_classification", targets=("label",), metric="acc", seq_len=1, head="logits",
                n_classes=n_classes, feature_dim_hint=0)


def image_row(sample_id: str, subject: str, split: str | None, media: str, label: int, label_name: str, **extra) -> dict:
    """A manifest row of one still image (``media`` relative to the raw root)."""
    return {"sample_id": sample_id, "subject": subject, "split": split, "kind": "image", "media": media,
            "media_root": "raw", "media_kind": "image", "frame_base": 0, "n_frames": 1, "fps": 0.0,
            "label": int(label), "label_name": label_name, **extra}


@dataclass
class ImageJob:
    """One image file to crop: its manifest row (without the crop columns) and the file."""
    row: dict
    path: Path


@dataclass
class Cropped:
    rows: list[dict] = field(default_factory=list)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    image_attrs: dict[str, dict] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    colour_files: int = 0  # source files that were RGB (converted when the store is grey)


def crop_images(jobs: list[ImageJob], raw_root: Path, *, detector: str, face_size: int, color: str, margin: float,
                progress: bool, title: str, detector_weights: str | None = None) -> Cropped:
    """Decode each job's file, crop the largest face, resize to ``face_size``, convert to ``color``.

    A file that cannot be decoded, or in which no usable face is found, is a failures.csv row (stage
    ``media`` / ``faces``) and gets no manifest row. Each kept row gains ``box_x0 … box_y1`` (the
    detector's box in source pixels), ``box_score``, ``source_height``, ``source_width`` and
    ``source_channels``.
    """
    out = Cropped()
    if not jobs:
        return out
    det = open_detector(detector, detector_weights)  # one instance for all images
    channels = COLORS[color]
    for job in progress_bar(jobs, progress, f"{title} faces", "image"):
        sid = job.row["sample_id"]
        rel = job.path.relative_to(raw_root).as_posix()
        try:
            pixels = read_image_file(job.path)
        except (OSError, ValueError) as exc:
            out.failures.append(failure(sid, "media", rel, f"the image cannot be decoded ({str(exc)[:160]})",
                                        "restore the file from the release; the image is skipped"))
            continue
        out.colour_files += pixels.ndim == 3
        face = crop_face(pixels, det, face_size, channels, margin)
        if face.image is None:
            where = "" if face.box is None else " (box " + ", ".join(f"{v:.0f}" for v in face.box) + ")"
            out.failures.append(failure(sid, "faces", rel, f"{face.problem}{where} (detector {detector})",
                                        "check the image; try another --detector; the image is skipped"))
            continue
        out.images[sid] = face.image
        out.image_attrs[sid] = {"box": np.asarray(face.box, np.float32), "score": np.float32(face.score)}
        x0, y0, x1, y1 = face.box
        out.rows.append({**job.row, "box_x0": x0, "box_y0": y0, "box_x1": x1, "box_y1": y1, "box_score": face.score,
                         "source_height": int(pixels.shape[0]), "source_width": int(pixels.shape[1]),
                         "source_channels": 1 if pixels.ndim == 2 else 3})
    return out


def crop_settings(detector: str, margin: float) -> dict:
    """The crop settings recorded in the store's attributes and dataset.json."""
    return {"detector": detector, "margin": float(margin), "box": "largest detection", "shape": "square around the box"}


def write_store(out_dir: Path, images: dict[str, np.ndarray], attrs: dict, image_attrs: dict | None = None) -> None:
    """Write ``<out_dir>/images.h5`` (nothing when there is no image: prepare then fails without a manifest)."""
    if images:
        write_image_store(Path(out_dir) / STORE_NAME, images, attrs, image_attrs)


def fit_precropped(image: np.ndarray, face_size: int, color: str) -> np.ndarray:
    """An already-cropped face image (FER2013) at ``face_size`` and ``color``."""
    return to_channels(resize_square(image, face_size), COLORS[color])



# --- Miskow's split -----------------------------------------------------------------------------------

def miskow_split(manifest: pl.DataFrame, seed: int = MISKOW_SEED) -> pl.DataFrame:
    """Miskow's per-image protocol as a split table (``sample_id``, ``subject``, ``split``).

    - Test part: the dataset's own held-out images when it has an official split with a train part
      (FER2013: PublicTest and PrivateTest, or the image-folder release's ``test/``); otherwise, per
      class, the sample ids in name order shuffled with ``random.Random(seed)`` (as split-folders'
      ``ratio`` does with its file names), the first ``int(0.8 · n)`` kept for training, the rest test.
    - Validation part: per class, the first ``int(0.3 · n)`` training sample ids in name order (as
      Keras' ``validation_split=0.3`` takes the first 30 % of each class folder's files).

    It ignores subjects, so on CK+ and JAFFE one person's images land in several parts:
    ``emotk split --check miskow`` reports the leak, and training on it needs ``--allow-leak``.
    """
    if "label" not in manifest.columns:
        raise SplitError("Miskow's split needs the manifest's 'label' column (an image dataset: fer2013, ckplus, jaffe).")
    official = manifest["split"].to_list()
    use_official = "train" in official and any(s not in (None, "train") for s in official)
    part: dict[str, str] = {}
    train_by_class: dict[int, list[str]] = {}
    for label in sorted(set(manifest["label"].to_list())):
        rows = manifest.filter(pl.col("label") == label)
        ids = sorted(rows["sample_id"].to_list())
        if use_official:
            split_of = dict(zip(rows["sample_id"].to_list(), rows["split"].to_list()))
            train = [s for s in ids if split_of[s] == "train"]
            test = [s for s in ids if split_of[s] not in (None, "train")]
        else:
            shuffled = list(ids)
            random.Random(seed).shuffle(shuffled)
            n_train = int((1 - MISKOW_TEST) * len(shuffled))
            train, test = shuffled[:n_train], shuffled[n_train:]
        for s in test:
            part[s] = "test"
        train_by_class[label] = sorted(train)
    for train in train_by_class.values():
        n_val = int(MISKOW_VALIDATION * len(train))
        for i, s in enumerate(train):
            part[s] = "validation" if i < n_val else "train"
    frame = manifest.select("sample_id", "subject").filter(pl.col("sample_id").is_in(list(part)))
    return frame.with_columns(pl.col("sample_id").replace_strict(part, return_dtype=pl.Utf8).alias("split"))


def write_miskow_split(ws: Workspace, dataset: str, seed: int = MISKOW_SEED, name: str = MISKOW_SPLIT_NAME) -> Path:
    """Write :func:`miskow_split` of ``dataset`` as ``splits/<name>.parquet``; returns its path."""
    frame = miskow_split(ws.read_manifest(dataset), seed)
    path = ws.split_path(dataset, name)
    write_parquet(path, frame)
    return path
