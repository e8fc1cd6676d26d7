"""JAFFE (Lyons et al., FG 1998): 213 posed images of 10 Japanese women, seven expressions.

Raw layout: one flat folder of ``SS.EEn.N.tiff`` files (``--root`` may point at it or at the folder
above, e.g. ``jaffe/``), where ``SS`` is the subject's initials, ``EE`` the expression code, ``n``
the take of that expression (may be absent) and ``N`` the image number: ``KA.AN1.39.tiff``. Copies
converted to ``.tif``/``.jpg``/``.png``/``.bmp`` are read too.

The name is parsed with one pattern (never a substring search), see :data:`NAME`; an image file
whose name does not follow it, or whose expression code is not one of the seven, is listed in
failures.csv and skipped — not guessed. Other files (README, licence) are ignored.

Class ids are the codes in alphabetical order: 0 AN anger, 1 DI disgust, 2 FE fear, 3 HA happy,
4 NE neutral, 5 SA sad, 6 SU surprise. Subject = the initials (leave-one-subject-out:
``emotk split --by subject --folds 10``). Faces are cropped with the detector registry (largest
face, default detector: emotk's default (MTCNN), no margin) and stored at ``face_size`` (default 48) in ``color`` (default grey).
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
    list_raw_dir,
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

CODES = ("AN", "DI", "FE", "HA", "NE", "SA", "SU")
CLASSES = ("anger", "disgust", "fear", "happy", "neutral", "sad", "surprise")
IMAGE_SUFFIXES = (".tiff", ".tif", ".jpg", ".jpeg", ".png", ".bmp")
#: ``SS.EEn.N.ext``: initials (2 capitals), expression code (2 capitals), take (digits, optional),
#: image number (digits), an image extension.
NAME = re.compile(r"^([A-Z]{2})\.([A-Z]{2})(\d*)\.(\d+)\.(tiff?|jpe?g|png|bmp)$", re.IGNORECASE)

LAYOUT = """jaffe/                        (--root may point here or at the folder above)
  KA.AN1.39.tiff  KA.AN2.40.tiff  …  YM.SU3.60.tiff   SS.EEn.N.tiff: initials, expression, take, number
  (README and other non-image files are ignored)"""


def parse_name(name: str) -> tuple[str, str, str] | None:
    """``(subject, code, take)`` of a JAFFE file name, or None if it does not follow ``SS.EEn.N.ext``."""
    m = NAME.match(name)
    if not m or not m.group(1).isupper() or not m.group(2).isupper():
        return None
    return m.group(1), m.group(2), m.group(3)


def _images(folder: Path) -> list[Path]:
    return [p for p in list_raw_dir(folder, "JAFFE folder")
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]


def find_folder(raw_root: Path) -> Path:
    """The folder of images: the root, or its one sub-folder holding JAFFE-named images."""
    if any(parse_name(p.name) for p in _images(raw_root)):
        return raw_root
    for child in list_raw_dir(raw_root, "raw root"):
        if child.is_dir() and not child.name.startswith(".") and any(parse_name(p.name) for p in _images(child)):
            return child
    raise DatasetError(f"{raw_root} holds no JAFFE image (SS.EEn.N.tiff) in it or in a sub-folder. Point --root at "
                       f"the unpacked release. Expected layout:\n{LAYOUT}")


def find_jobs(raw_root: Path, folder: Path):
    jobs, failures = [], []
    seen: dict[str, str] = {}
    for path in _images(folder):
        rel = path.relative_to(raw_root).as_posix()
        sid = path.stem
        parsed = parse_name(path.name)
        if parsed is None:
            failures.append(failure(sid, "labels", rel, f"the file name {path.name!r} does not follow SS.EEn.N.tiff "
                                    "(initials, expression code, take, image number)",
                                    "rename it as in the release (e.g. KA.AN1.39.tiff); the image is skipped"))
            continue
        subject, code, take = parsed
        if code not in CODES:
            failures.append(failure(sid, "labels", rel, f"expression code {code!r} is not one of "
                                    f"{', '.join(f'{c} {n}' for c, n in zip(CODES, CLASSES))}",
                                    "rename it as in the release; the image is skipped"))
            continue
        problem = sample_id_problem(sid)
        if problem:
            failures.append(bad_sample_id(sid, "prepare", rel, problem))
            continue
        if sid in seen:
            failures.append(failure(sid, "prepare", rel, f"{seen[sid]} has the same name (another copy of one image)",
                                    "keep one copy of each image; this one is skipped"))
            continue
        seen[sid] = rel
        label = CODES.index(code)
        jobs.append(ImageJob(image_row(sid, subject, None, rel, label, CLASSES[label], code=code,
                                       take=int(take) if take else None), path))
    return jobs, failures


def prepare(raw_root: Path, out_dir: Path, *, face_size: int = DEFAULT_SIZE, color: str = DEFAULT_COLOR,
            detector: str = DEFAULT_DETECTOR, margin: float = DEFAULT_MARGIN, detector_weights: str | None = None,
            progress: bool = True, **other) -> Prepared:
    """Crop the face of every JAFFE image into ``images.h5``; return manifest rows."""
    check_options(SPEC, dict(face_size=face_size, color=color, detector=detector, margin=margin,
                             detector_weights=detector_weights, progress=progress, **other))
    raw_root = Path(raw_root)
    folder = find_folder(raw_root)
    jobs, failures = find_jobs(raw_root, folder)
    cropped = crop_images(jobs, raw_root, detector=detector, face_size=face_size, color=color, margin=margin,
                          progress=progress, title="JAFFE", detector_weights=detector_weights)
    attrs = store_attrs(folder.relative_to(raw_root).as_posix() or ".", face_size, COLORS[color],
                        crop_settings(detector, margin), dataset="jaffe")
    write_store(out_dir, cropped.images, attrs, cropped.image_attrs)
    notes = [f"{cropped.colour_files} source image(s) are RGB (stored {color})"] if cropped.colour_files else []
    return Prepared(rows=cropped.rows, failures=failures + cropped.failures, label_names=CLASSES,
                    info={"notes": notes, "faces": crop_settings(detector, margin),
                          "image_store": {k: v for k, v in attrs.items() if k != "emotk_version"}})


SPEC = register_dataset(DatasetSpec(
    name="jaffe",
    title="JAFFE",
    layout=LAYOUT,
    splits="no official split: leave-one-subject-out (`emotk split --by subject --folds 10`); Miskow's per-image "
           "split (leaks subjects): emotk.datasets.faceimages.write_miskow_split",
    task=image_task(len(CLASSES)),
    prepare=prepare,
    options=dict(CROP_OPTIONS),
))
