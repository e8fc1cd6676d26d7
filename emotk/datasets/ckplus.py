"""CK+ (Extended Cohn-Kanade, Lucey et al., CVPR-W 2010): posed expression sequences, neutral → peak.

Raw layout (``--root`` may point here or at the folder above)::

    cohn-kanade-images/S005/001/S005_001_00000001.png … S005_001_00000011.png
    Emotion/S005/001/S005_001_00000011_emotion.txt      one float, e.g. '   3.0000000e+00'

Only sequences with an emotion file are labelled (327 of 593 in the release); the numbered frame
of the emotion file is the sequence's peak, its last frame. The protocol is an option, recorded in
dataset.json (see docs/datasets/ckplus.md):

- ``last_k`` (default 3): the k frames ending at the peak frame take the sequence's label;
- ``first_neutral`` (default off): the sequence's first frame is added as ``neutral``;
- ``contempt`` (default on): keep contempt (7 classes, 8 with neutral) or drop its sequences
  (6 classes, 7 with neutral).

Class ids follow the release's code order (0 neutral, 1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy,
6 sadness, 7 surprise) with the classes not used left out; the default gives 0 anger … 6 surprise,
the seven classes of the Kaggle "CK+48" copy Miskow trained on. ``ck_code`` keeps the release's code.
Subject = the ``Sxxx`` folder. Faces are cropped with the detector registry (largest face, default
MTCNN, no margin) and stored at ``face_size`` (default 48) in ``color`` (default grey); the box and
detector are recorded. Some CK+ frames are RGB: the store's colour is one setting for all.

Reported in failures.csv, never guessed: an emotion file whose value is not a code 1–7, a sequence
with several emotion files, a peak frame missing from the images, an undecodable image, no face found.
"""

from __future__ import annotations

import re
from pathlib import Path

from emotk.datasets.base import (
    DatasetSpec,
    Prepared,
    bad_sample_id,
    check_options,
    failure,
    flag,
    list_raw_dir,
    number,
    read_raw_text,
    register_dataset,
    sample_id_problem,
)
from emotk.datasets.faceimages import (
    CROP_OPTIONS,
    DEFAULT_COLOR,
    DEFAULT_DETECTOR,
    DEFAULT_MARGIN,
    DEFAULT_SIZE,
    ImageJob,
    crop_images,
    crop_settings,
    image_row,
    image_task,
    write_store,
)
from emotk.errors import DatasetError
from emotk.features.images import COLORS, store_attrs

#: The release's emotion codes (0 never appears in an emotion file: it is the first frame's class).
CODES = ("neutral", "anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
CONTEMPT = 2
DEFAULT_LAST_K = 3
IMAGES_DIR = "cohn-kanade-images"
EMOTION_DIR = "Emotion"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

LAYOUT = """CK+/                                  (--root may point here or at the folder above)
  cohn-kanade-images/Sxxx/nnn/Sxxx_nnn_0000000k.png   frames of each sequence, neutral → peak
  Emotion/Sxxx/nnn/Sxxx_nnn_0000000k_emotion.txt      one code 1-7 for labelled sequences (k = peak frame)"""


def class_names(first_neutral: bool, contempt: bool) -> tuple[str, ...]:
    """The classes in id order for the protocol: release code order, unused classes left out."""
    return tuple(name for code, name in enumerate(CODES)
                 if (code != 0 or first_neutral) and (code != CONTEMPT or contempt))


def find_base(raw_root: Path) -> Path:
    """The folder holding ``cohn-kanade-images/`` and ``Emotion/``: the root or one of its sub-folders."""
    def ok(p: Path) -> bool:
        return (p / IMAGES_DIR).is_dir() and (p / EMOTION_DIR).is_dir()

    if ok(raw_root):
        return raw_root
    for child in list_raw_dir(raw_root, "raw root"):
        if child.is_dir() and not child.name.startswith(".") and ok(child):
            return child
    raise DatasetError(f"{raw_root} does not look like CK+: no {IMAGES_DIR}/ and {EMOTION_DIR}/ folders in it or in a "
                       f"sub-folder. Point --root at the unpacked release. Expected layout:\n{LAYOUT}")


def parse_emotion(text: str) -> int | None:
    """The code of an emotion file (``'   3.0000000e+00'`` → 3) if it is an integer 1–7, else None."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    if not value.is_integer() or not 1 <= value <= 7:
        return None
    return int(value)


_FRAME = re.compile(r"_(\d+)(?:_emotion)?$")


def frame_number(stem: str) -> int | None:
    """The frame number at the end of a CK+ file stem (``S005_001_00000011`` → 11)."""
    m = _FRAME.search(stem)
    return int(m.group(1)) if m else None


def _visible_dirs(folder: Path, what: str) -> list[Path]:
    return [p for p in list_raw_dir(folder, what) if p.is_dir() and not p.name.startswith(".")]


def find_jobs(raw_root: Path, base: Path, last_k: int, first_neutral: bool, contempt: bool):
    """The frames to crop (``ImageJob``), failures, and counts of what the protocol leaves out."""
    names = class_names(first_neutral, contempt)
    jobs, failures = [], []
    counts = {"sequences": 0, "labelled": 0, "unlabelled": 0, "contempt_dropped": 0, "short_sequences": 0}
    for subject_dir in _visible_dirs(base / IMAGES_DIR, "CK+ image folder"):
        subject = subject_dir.name
        for seq_dir in _visible_dirs(subject_dir, "CK+ subject folder"):
            counts["sequences"] += 1
            frames = sorted(p for p in list_raw_dir(seq_dir, "CK+ sequence folder")
                            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
            emo_dir = base / EMOTION_DIR / subject / seq_dir.name
            emo_files = []
            if emo_dir.is_dir():
                emo_files = [p for p in list_raw_dir(emo_dir, "CK+ emotion folder")
                             if p.is_file() and not p.name.startswith(".") and p.name.endswith("_emotion.txt")]
            seq_rel = seq_dir.relative_to(raw_root).as_posix()
            if not emo_files:
                counts["unlabelled"] += 1
                continue
            seq_id = f"{subject}_{seq_dir.name}"
            if len(emo_files) > 1:
                failures.append(failure(seq_id, "labels", emo_dir.relative_to(raw_root).as_posix(),
                                        f"{len(emo_files)} emotion files for one sequence "
                                        f"({', '.join(p.name for p in emo_files)})",
                                        "keep the one emotion file of the release; the sequence is skipped"))
                continue
            emo = emo_files[0]
            emo_rel = emo.relative_to(raw_root).as_posix()
            code = parse_emotion(read_raw_text(emo, "CK+ emotion file", errors="replace"))
            if code is None:
                value = read_raw_text(emo, "CK+ emotion file", errors="replace").strip()[:30]
                failures.append(failure(seq_id, "labels", emo_rel, f"emotion value {value!r} is not a code 1-7 "
                                        f"({', '.join(f'{i} {n}' for i, n in enumerate(CODES) if i)})",
                                        "restore the emotion file from the release; the sequence is skipped"))
                continue
            if code == CONTEMPT and not contempt:
                counts["contempt_dropped"] += 1
                continue
            peak = frame_number(emo.name[: -len(".txt")])
            numbers = [frame_number(p.stem) for p in frames]
            if peak is None or peak not in numbers:
                failures.append(failure(seq_id, "media", emo_rel, f"the emotion file names frame {peak} but {seq_rel}/ "
                                        f"has no such frame ({len(frames)} frames)",
                                        "restore the sequence's frames from the release; the sequence is skipped"))
                continue
            counts["labelled"] += 1
            end = numbers.index(peak) + 1
            peaks = frames[max(0, end - last_k):end]
            if len(peaks) < last_k:
                counts["short_sequences"] += 1
            chosen = [(p, CODES[code], "peak") for p in peaks]
            if first_neutral and frames[0] not in peaks:
                chosen.insert(0, (frames[0], "neutral", "neutral"))
            for path, name, role in chosen:
                sid = path.stem
                rel = path.relative_to(raw_root).as_posix()
                problem = sample_id_problem(sid)
                if problem:
                    failures.append(bad_sample_id(sid, "prepare", rel, problem))
                    continue
                row = image_row(sid, subject, None, rel, names.index(name), name, sequence=seq_id,
                                frame=frame_number(sid), role=role, ck_code=CODES.index(name), emotion_file=emo_rel)
                jobs.append(ImageJob(row, path))
    return jobs, failures, counts


def prepare(raw_root: Path, out_dir: Path, *, last_k: int = DEFAULT_LAST_K, first_neutral: bool = False,
            contempt: bool = True, face_size: int = DEFAULT_SIZE, color: str = DEFAULT_COLOR,
            detector: str = DEFAULT_DETECTOR, margin: float = DEFAULT_MARGIN, detector_weights: str | None = None,
            progress: bool = True, **other) -> Prepared:
    """Crop the labelled frames of every labelled sequence into ``images.h5``; return manifest rows."""
    check_options(SPEC, dict(last_k=last_k, first_neutral=first_neutral, contempt=contempt, face_size=face_size,
                             color=color, detector=detector, margin=margin, detector_weights=detector_weights,
                             progress=progress, **other))
    raw_root = Path(raw_root)
    base = find_base(raw_root)
    jobs, failures, counts = find_jobs(raw_root, base, last_k, first_neutral, contempt)
    cropped = crop_images(jobs, raw_root, detector=detector, face_size=face_size, color=color, margin=margin,
                          progress=progress, title="CK+", detector_weights=detector_weights)
    names = class_names(first_neutral, contempt)
    protocol = {"last_k": last_k, "first_neutral": first_neutral, "contempt": contempt, "classes": list(names)}
    attrs = store_attrs(base.relative_to(raw_root).as_posix() or ".", face_size, COLORS[color],
                        crop_settings(detector, margin), dataset="ckplus",
                        protocol=f"last {last_k} frames{' + first frame as neutral' if first_neutral else ''}, "
                                 f"contempt {'kept' if contempt else 'dropped'}")
    write_store(out_dir, cropped.images, attrs, cropped.image_attrs)
    notes = [f"{counts['unlabelled']} of {counts['sequences']} sequences have no emotion file (unlabelled, not used)"]
    if counts["contempt_dropped"]:
        notes.append(f"{counts['contempt_dropped']} contempt sequence(s) left out (contempt=false)")
    if counts["short_sequences"]:
        notes.append(f"{counts['short_sequences']} sequence(s) have fewer than {last_k} frames up to the peak: all used")
    if cropped.colour_files:
        notes.append(f"{cropped.colour_files} source frame(s) are RGB (stored {color})")
    return Prepared(rows=cropped.rows, failures=failures + cropped.failures, label_names=names,
                    info={"task": image_task(len(names)).__dict__, "protocol": protocol, "counts": counts,
                          "notes": notes, "faces": crop_settings(detector, margin),
                          "image_store": {k: v for k, v in attrs.items() if k != "emotk_version"}})


SPEC = register_dataset(DatasetSpec(
    name="ckplus",
    title="CK+",
    layout=LAYOUT,
    splits="no official split: subject-disjoint folds (`emotk split --by subject --folds 10`); Miskow's per-image "
           "split (leaks subjects): emotk.datasets.faceimages.write_miskow_split",
    task=image_task(len(class_names(False, True))),
    prepare=prepare,
    options={"last_k": number(int, 1, 1000), "first_neutral": flag, "contempt": flag, **CROP_OPTIONS},
))
