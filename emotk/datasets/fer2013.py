"""FER2013 (Goodfellow et al., ICML 2013 challenge): 35,887 grey 48×48 faces, seven expressions.

Two releases are read, giving the same manifest (see docs/datasets/fer2013.md):

- the Kaggle CSV ``fer2013.csv`` (``emotion,pixels,Usage``; 2,304 space-separated integers per row,
  row-major; Usage Training / PublicTest / PrivateTest → split train / validation / test). Header
  names are matched with surrounding spaces stripped (the ICML copy writes `` Usage``);
- the image-folder release (``train|test/<class name>/*.jpg``, e.g. Kaggle msambare), classes mapped
  by name (``angry`` … ``neutral``), split train / test by folder.

Class ids are the CSV's own order: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral.
FER2013 has no subject ids: each image is its own subject (``fer-<row>`` for the CSV, the sample id
for folders), so subject folds are per-image folds.

A CSV row with the wrong number of fields or pixels, a pixel that is not an integer in 0–255, an
emotion that is not a class id, or an unknown Usage, and an image file that cannot be decoded, is
not 48×48 or sits in an unknown class folder, is listed in failures.csv and skipped.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from emotk.datasets.base import (
    DatasetSpec,
    Prepared,
    RawFileError,
    bad_sample_id,
    check_options,
    choice,
    failure,
    list_raw_dir,
    register_dataset,
    sample_id_problem,
)
from emotk.datasets.faceimages import (
    COLOR_OPTION,
    DEFAULT_COLOR,
    DEFAULT_SIZE,
    SIZE_OPTION,
    fit_precropped,
    image_row,
    image_task,
    write_store,
)
from emotk.errors import DatasetError
from emotk.features.images import COLORS, read_image_file, store_attrs, to_channels

CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
SIDE = 48
N_PIXELS = SIDE * SIDE
USAGE = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
FOLDER_SPLITS = {"train": "train", "test": "test"}
CSV_NAMES = ("fer2013.csv", "icml_face_data.csv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

LAYOUT = """either the Kaggle CSV (--root may point at its folder or the folder above):
  fer2013.csv            header emotion,pixels,Usage; 2304 ints per row; Training|PublicTest|PrivateTest
                         (icml_face_data.csv, the same with ' Usage',' pixels' headers, is read too)
or the image-folder release:
  train/{angry,disgust,fear,happy,neutral,sad,surprise}/*.jpg
  test/{angry,disgust,fear,happy,neutral,sad,surprise}/*.jpg   (48x48 grey)"""


def find_source(raw_root: Path) -> tuple[str, Path]:
    """``("csv", file)`` or ``("folders", base)``: the CSV in the root or in ``fer2013/``, else ``train/`` + ``test/`` folders."""
    for base in (raw_root, raw_root / "fer2013"):
        for name in CSV_NAMES:
            if (base / name).is_file():
                return "csv", base / name
    for base in (raw_root, raw_root / "fer2013"):
        if (base / "train").is_dir() and (base / "test").is_dir():
            return "folders", base
    raise DatasetError(f"{raw_root} holds neither fer2013.csv nor train/ and test/ class folders (also looked in "
                       f"{raw_root / 'fer2013'}). Point --root at the FER2013 release. Expected layout:\n{LAYOUT}")


def parse_pixels(text: str) -> tuple[np.ndarray | None, str | None]:
    """``(48×48 uint8 image, None)`` from the ``pixels`` field, or ``(None, why not)``."""
    tokens = text.split()
    if len(tokens) != N_PIXELS:
        return None, f"{len(tokens)} pixel values, expected {N_PIXELS} (48x48)"
    try:
        values = np.asarray(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next(t for t in tokens if not _is_int(t))
        return None, f"pixel value {bad[:20]!r} is not an integer"
    out = np.flatnonzero((values < 0) | (values > 255))
    if len(out):
        i = int(out[0])
        return None, (f"{len(out)} pixel value(s) outside 0-255 (first: {int(values[i])} at index {i})")
    return values.astype(np.uint8).reshape(SIDE, SIDE), None


def _is_int(token: str) -> bool:
    try:
        int(token)
        return True
    except ValueError:
        return False


def parse_emotion(text: str) -> int | None:
    """The class id of an ``emotion`` field (an integer 0–6), or None."""
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if 0 <= value < len(CLASSES) else None


def read_csv(raw_root: Path, path: Path, face_size: int, color: str):
    """Rows, images and failures from the Kaggle CSV.

    Bytes that are not UTF-8 become U+FFFD, so the row they are in fails its checks (listed); text
    the csv module cannot split at all (e.g. a field over its size limit) stops prepare with the line.
    """
    rel = path.relative_to(raw_root).as_posix()
    try:
        fh = open(path, newline="", encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise RawFileError(f"cannot read the FER2013 CSV {path}: {exc.strerror or exc}. Make it readable and run "
                           "prepare again.") from None
    with fh:
        reader = csv.reader(fh)
        try:
            rows, images, failures = _read_rows(reader, path, rel, face_size, color)
        except csv.Error as exc:
            raise DatasetError(f"{path}, line {reader.line_num}: not readable as CSV ({exc}). Restore the file "
                               "from the FER2013 release.") from None
    return rows, images, failures, {"source": rel, "variant": "csv"}


def _read_rows(reader, path: Path, rel: str, face_size: int, color: str):
    rows, images, failures = [], {}, []
    fix = f"restore {rel} from the FER2013 release; the row is skipped"
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in ("emotion", "pixels", "usage") if c not in header]
    if missing:
        raise DatasetError(f"{path}: the header {header[:5]} lacks column(s) {missing}; a FER2013 CSV starts with "
                           "'emotion,pixels,Usage'. Restore the file from the release.")
    col = {c: header.index(c) for c in ("emotion", "pixels", "usage")}
    for row_no, fields in enumerate(reader):
        line = reader.line_num
        sid = f"fer-{row_no:05d}"
        where = f"{rel}:{line}"
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            failures.append(failure(sid, "labels", where, f"row {row_no} has {len(fields)} fields, expected "
                                    f"{len(header)} ({', '.join(header)})", fix))
            continue
        label = parse_emotion(fields[col["emotion"]])
        if label is None:
            failures.append(failure(sid, "labels", where, f"emotion {fields[col['emotion']][:20]!r} is not a class id "
                                    f"0-6 ({', '.join(CLASSES)})", fix))
            continue
        usage = fields[col["usage"]].strip()
        if usage not in USAGE:
            failures.append(failure(sid, "labels", where, f"Usage {usage[:30]!r} is not one of {', '.join(USAGE)}", fix))
            continue
        pixels, problem = parse_pixels(fields[col["pixels"]])
        if pixels is None:
            failures.append(failure(sid, "media", where, f"row {row_no}: {problem}", fix))
            continue
        images[sid] = fit_precropped(pixels, face_size, color)
        rows.append(image_row(sid, sid, USAGE[usage], rel, label, CLASSES[label], row=row_no, line=line, usage=usage))
    return rows, images, failures


def read_folders(raw_root: Path, base: Path, face_size: int, color: str):
    """Rows, images and failures from the image-folder release (classes by folder name)."""
    by_name = {c.lower(): i for i, c in enumerate(CLASSES)}
    rows, images, failures, notes = [], {}, [], []
    seen: dict[str, str] = {}
    colour = 0
    for folder, split in FOLDER_SPLITS.items():
        for class_dir in list_raw_dir(base / folder, "FER2013 split folder"):
            if class_dir.name.startswith(".") or not class_dir.is_dir():
                continue
            label = by_name.get(class_dir.name.lower())
            for path in list_raw_dir(class_dir, "FER2013 class folder"):
                if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                rel = path.relative_to(raw_root).as_posix()
                sid = f"{folder}-{class_dir.name.lower()}-{path.stem}"
                problem = sample_id_problem(sid)
                if problem:
                    failures.append(bad_sample_id(sid, "prepare", rel, problem))
                    continue
                if sid in seen:
                    failures.append(failure(sid, "prepare", rel, f"{seen[sid]} gives the same sample id (one name, "
                                            "two extensions?)", "keep one copy of each image; this one is skipped"))
                    continue
                seen[sid] = rel
                if label is None:
                    failures.append(failure(sid, "labels", rel, f"class folder {class_dir.name!r} is not a FER2013 "
                                            f"class ({', '.join(c.lower() for c in CLASSES)})",
                                            "move the image into its class folder; the image is skipped"))
                    continue
                try:
                    pixels = read_image_file(path)
                except (OSError, ValueError) as exc:
                    failures.append(failure(sid, "media", rel, f"the image cannot be decoded ({str(exc)[:160]})",
                                            "restore the file from the release; the image is skipped"))
                    continue
                if pixels.shape[:2] != (SIDE, SIDE):
                    failures.append(failure(sid, "media", rel, f"the image is {pixels.shape[1]}x{pixels.shape[0]}, "
                                            f"not {SIDE}x{SIDE}: not a FER2013 face crop",
                                            "restore the file from the release; the image is skipped"))
                    continue
                colour += pixels.ndim == 3
                images[sid] = fit_precropped(to_channels(pixels, 1), face_size, color)  # FER2013 is grey
                rows.append(image_row(sid, sid, split, rel, label, CLASSES[label]))
    if colour:
        notes.append(f"{colour} image file(s) were stored in colour and converted to grey (FER2013 is grey)")
    return rows, images, failures, {"source": base.relative_to(raw_root).as_posix() or ".", "variant": "folders",
                                    "notes": notes}


def prepare(raw_root: Path, out_dir: Path, *, face_size: int = DEFAULT_SIZE, color: str = DEFAULT_COLOR,
            layout: str = "auto", progress: bool = True, **other) -> Prepared:
    """Read the CSV (or the image folders) into ``images.h5`` and manifest rows.

    Options: ``face_size`` (stored side, default 48: the release's own), ``color`` (grey | rgb: grey
    replicated to three channels), ``layout`` (auto | csv | folders; auto prefers the CSV).
    """
    check_options(SPEC, dict(face_size=face_size, color=color, layout=layout, progress=progress, **other))
    raw_root = Path(raw_root)
    kind, where = find_source(raw_root)
    if layout != "auto" and layout != kind:
        if layout == "folders" and (where.parent / "train").is_dir():
            kind, where = "folders", where.parent
        else:
            raise DatasetError(f"--layout {layout}: {raw_root} holds the {kind} release ({where}), not the {layout} one. "
                               f"Expected layout:\n{LAYOUT}")
    reader = read_csv if kind == "csv" else read_folders
    rows, images, failures, source = reader(raw_root, where, face_size, color)
    attrs = store_attrs(source["source"], face_size, COLORS[color], None, dataset="fer2013",
                        resized_from=SIDE, cropped="by the release (48x48 faces)")
    write_store(out_dir, images, attrs)
    return Prepared(rows=rows, failures=failures, label_names=CLASSES,
                    info={"variant": source["variant"], "notes": source.get("notes", []),
                          "image_store": {k: v for k, v in attrs.items() if k != "emotk_version"},
                          "subjects": "none in the release: one subject per image (subject = sample id)"})


SPEC = register_dataset(DatasetSpec(
    name="fer2013",
    title="FER2013",
    layout=LAYOUT,
    splits="official: Training → train, PublicTest → validation, PrivateTest → test (the image-folder release: "
           "train / test); no subjects (one per image); Miskow's split: emotk.datasets.faceimages.write_miskow_split",
    task=image_task(len(CLASSES)),
    prepare=prepare,
    options={"face_size": SIZE_OPTION, "color": COLOR_OPTION, "layout": choice("auto", "csv", "folders")},
))
