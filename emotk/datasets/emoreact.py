"""EmoReact (Nojavanasghari et al., ICMI 2016): children's reaction videos, 8 binary emotions + valence.

Raw layout (as distributed; names files in the root or in Labels/)::

    EmoReact_V_1.0/
      Data/{Train,Validation,Test}/<CLIP>.mp4
      Labels/{train,val|validation,test}_labels.text   8 flags (0/1) + valence (1-7), no header
      {Train,Val,Test}_names.txt                        'quoted' clip names, '' for an apostrophe

Label lines are aligned with the names file **by order**: line k of ``train_labels.text`` belongs to
line k of ``Train_names.txt``. A count mismatch is fatal (no way to know which label is whose).
There is no subject id in the release, so ``subject`` is the sample id and subject-disjoint folds
are not supported by official metadata: use the official split (``emotk split --official``).
Faces are detected and cropped by emotk (see docs/faces.md); see docs/datasets/emoreact.md.

Rules that keep wrong input from passing in silence (docs/datasets/emoreact.md):

- A names-file line must be a file name: an absolute path, a ``..`` or a path separator in it is a
  DatasetError naming the file and line (the clip could only be found outside ``Data/<Split>/``).
- ``sample_id`` is the clip's file name without ``.mp4`` with every character outside
  ``[A-Za-z0-9._-]`` replaced by ``_`` (the release's ``80'sTOYS115_2.mp4`` → ``80_sTOYS115_2``);
  ``source`` keeps the real file name. A name that still cannot be an id, or two names that map to
  one id, are listed in failures.csv and skipped.
- A label line whose valence is missing, ``nan`` or outside 1…7 keeps its clip (valence is not a
  training target) with a null valence, and is listed in failures.csv (stage ``labels``, file:line).
- A video that decodes fewer frames than its container claims is listed in failures.csv (expected
  vs decoded); below ``min_decoded_fraction`` (default 90 %) it is excluded.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from emotk.datasets.base import (
    DatasetSpec,
    Prepared,
    Task,
    bad_sample_id,
    check_options,
    choice,
    failure,
    face_crop_options,
    list_raw_dir,
    progress_bar,
    read_raw_text,
    register_dataset,
    sample_id_problem,
)
from emotk.errors import DatasetError
from emotk.media.faces import (
    DEFAULT_DETECTOR,
    DEFAULT_EVERY,
    DEFAULT_FACE_SIZE,
    DEFAULT_MARGIN,
    DEFAULT_MAX_CARRY,
    crop_video,
    open_detector,
)
from emotk.media.video import MIN_DECODED_FRACTION, frame_shortfall

VALENCE_RANGE = (1.0, 7.0)  # mean of raters on a 1-7 scale
EMOTIONS = ("Curiosity", "Uncertainty", "Excitement", "Happiness", "Surprise", "Disgust", "Fear", "Frustration")

# (split in the manifest, Data/ folder spellings, labels file stems, names file stems) — matched case-insensitively
SPLITS = (
    ("train", ("train",), ("train",), ("train",)),
    ("validation", ("validation", "val"), ("val", "validation"), ("val", "validation")),
    ("test", ("test",), ("test",), ("test",)),
)

LAYOUT = """EmoReact_V_1.0/                (--root may point here or at its parent)
  Data/Train/<CLIP>.mp4  Data/Validation/<CLIP>.mp4  Data/Test/<CLIP>.mp4
  Labels/train_labels.text  Labels/val_labels.text (or validation_labels.text)  Labels/test_labels.text
  Train_names.txt  Val_names.txt  Test_names.txt  (in the root or in Labels/; 'quoted', '' = apostrophe)"""


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")  # hidden files and AppleDouble "._x" companions


def _child(folder: Path, names: tuple[str, ...], suffixes: tuple[str, ...] = ("",)) -> Path | None:
    """The entry of ``folder`` whose name (case-insensitive) is one of names+suffix, in that order."""
    if not folder.is_dir():
        return None
    entries = {p.name.lower(): p for p in list_raw_dir(folder, "folder") if _visible(p)}
    for n in names:
        for s in suffixes:
            hit = entries.get(f"{n}{s}".lower())
            if hit is not None:
                return hit
    return None


def find_base(raw_root: Path) -> Path:
    """The folder holding Data/ and Labels/: the root itself, or one child of it (EmoReact_V_1.0/)."""
    if _child(raw_root, ("data",)) and _child(raw_root, ("labels",)):
        return raw_root
    for child in (p for p in list_raw_dir(raw_root, "raw root") if p.is_dir() and _visible(p)):
        if _child(child, ("data",)) and _child(child, ("labels",)):
            return child
    raise DatasetError(
        f"{raw_root} does not look like EmoReact: no Data/ and Labels/ folders in it or in a sub-folder "
        f"(e.g. EmoReact_V_1.0/). Point --root at the unpacked release. Expected layout:\n{LAYOUT}"
    )


def parse_names(path: Path) -> list[str]:
    """Clip names from a ``*_names.txt``: one per line, 'single-quoted' with '' for an apostrophe."""
    return [name for _, name in parse_name_lines(path)]


def parse_name_lines(path: Path) -> list[tuple[int, str]]:
    """``(1-based line number, clip name)`` of each non-blank line of a ``*_names.txt``.

    A name that is a path (absolute, with ``..`` or a separator) raises DatasetError naming the line.
    """
    out = []
    for no, line in enumerate(read_raw_text(path, "names file", errors="replace").splitlines(), start=1):
        name = line.strip().rstrip(",;").strip()
        if not name:
            continue
        if len(name) >= 2 and name[0] == name[-1] and name[0] in "'\"":
            q = name[0]
            name = name[1:-1].replace(q + q, q)
        check_clip_name(name, path, no)
        out.append((no, name))
    return out


def check_clip_name(name: str, path: Path, line_no: int) -> None:
    """A names-file entry must be a plain file name inside ``Data/<Split>/`` (DatasetError otherwise)."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", name):
        what = "an absolute path"
    elif ".." in re.split(r"[\\/]", name):
        what = "a path with '..'"
    elif "/" in name or "\\" in name:
        what = "a path, not a file name"
    else:
        return
    raise DatasetError(
        f"{path}, line {line_no}: {name!r} is {what}; a names file lists clip file names (e.g. 'BULLYING12_2.mp4') "
        "that are looked up in Data/<Split>/. Restore the names file from the EmoReact release."
    )


def sample_id_of(name: str) -> str:
    """The sample id of a clip file name: the stem, every character outside [A-Za-z0-9._-] → ``_``."""
    stem = name[:-4] if name.lower().endswith(".mp4") else Path(name).stem
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem)


def parse_labels(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a ``*_labels.text`` with their 1-based line numbers."""
    lines = read_raw_text(path, "labels file", errors="replace").splitlines()
    return [(i + 1, ln.strip()) for i, ln in enumerate(lines) if ln.strip()]


def parse_label_line(text: str) -> dict:
    """``0,1,0,0,1,0,0,0,3.6667`` → {Curiosity: 0, …, Frustration: 0, valence: 3.6667}. ValueError if malformed."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if len(parts) not in (8, 9):
        raise ValueError(f"expected 9 comma-separated values (8 flags + valence), found {len(parts)}")
    row: dict = {}
    for name, p in zip(EMOTIONS, parts[:8]):
        v = float(p)
        if v not in (0.0, 1.0):
            raise ValueError(f"{name} flag is {p!r}, expected 0 or 1")
        row[name] = int(v)
    try:
        val = float(parts[8]) if len(parts) == 9 else math.nan
    except ValueError:
        val = math.nan
    ok = math.isfinite(val) and VALENCE_RANGE[0] <= val <= VALENCE_RANGE[1]
    row["valence"] = val if ok else None  # the caller reports a None valence
    return row


def prepare(
    raw_root: Path,
    out_dir: Path,
    *,
    detector: str = DEFAULT_DETECTOR,
    face_size: int = DEFAULT_FACE_SIZE,
    every: int = DEFAULT_EVERY,
    max_carry: int = DEFAULT_MAX_CARRY,
    margin: float = DEFAULT_MARGIN,
    decoder: str = "auto",
    faces: str = "detect",
    min_decoded_fraction: float = MIN_DECODED_FRACTION,
    align: bool = False,
    detector_weights: str | None = None,
    progress: bool = True,
    **other,
) -> Prepared:
    """Read EmoReact's official split, crop faces from every clip, return manifest rows.

    Options: ``detector`` (face detector name), ``face_size`` (crop side in pixels), ``every`` (detect
    on every n-th frame), ``max_carry`` (frames a lost face's box is carried), ``margin``, ``decoder``
    (auto | decord | av), ``faces`` (only ``detect``: the release has no crops), ``min_decoded_fraction``
    (a clip decoding less than this share of its container's frame count is excluded), ``align`` (rotate
    crops so the eyes are level; landmark detectors only), ``detector_weights`` (a folder of the
    detector's weight files), ``progress``.
    """
    check_options(SPEC, dict(detector=detector, face_size=face_size, every=every, max_carry=max_carry, margin=margin,
                             decoder=decoder, faces=faces, min_decoded_fraction=min_decoded_fraction,
                             align=align, detector_weights=detector_weights, progress=progress, **other))
    raw_root = Path(raw_root)
    base = find_base(raw_root)
    data_dir = _child(base, ("data",))
    labels_dir = _child(base, ("labels",))
    rows: list[dict] = []
    failures: list[dict] = []
    notes: list[str] = []
    jobs: list[tuple[str, Path, dict, str]] = []  # (sample_id, video, label row, split)
    seen: dict[str, str] = {}
    found_splits = []
    for split, data_names, label_stems, names_stems in SPLITS:
        labels_file = _child(labels_dir, tuple(f"{s}_labels" for s in label_stems), (".text", ".txt"))
        names_file = _child(base, tuple(f"{s}_names" for s in names_stems), (".txt",)) or _child(
            labels_dir, tuple(f"{s}_names" for s in names_stems), (".txt",)
        )
        split_dir = _child(data_dir, data_names)
        if labels_file is None and names_file is None and split_dir is None:
            notes.append(f"split {split}: no Data folder, labels or names file; skipped")
            continue
        missing = [what for what, f in (("labels file", labels_file), ("names file", names_file)) if f is None]
        if missing:
            raise DatasetError(
                f"EmoReact {split} split under {base}: {' and '.join(missing)} not found "
                f"(looked for Labels/{label_stems[0]}_labels.text and {names_stems[0].capitalize()}_names.txt in "
                f"{base.name}/ or Labels/). Restore the file(s) from the release. Expected layout:\n{LAYOUT}"
            )
        name_lines = parse_name_lines(names_file)
        names = [n for _, n in name_lines]
        labels = parse_labels(labels_file)
        if len(names) != len(labels):
            raise DatasetError(
                f"EmoReact {split}: {names_file} lists {len(names)} clips but {labels_file} has {len(labels)} label "
                "lines. They are aligned by order, so emotk cannot tell which label belongs to which clip. "
                "Use the names and labels files of the same EmoReact release (blank lines are ignored)."
            )
        found_splits.append(split)
        videos = {}
        if split_dir is not None:
            videos = {p.name.lower(): p for p in list_raw_dir(split_dir, "video folder") if p.is_file() and _visible(p)}
        listed = set()
        for (name_no, name), (line_no, line) in zip(name_lines, labels):
            sid = sample_id_of(name)
            where = f"{labels_file.name}:{line_no}"
            video = videos.get(name.lower()) or videos.get(f"{name}.mp4".lower())
            if video is not None:
                listed.add(video.name.lower())
            split_folder = data_dir / (split_dir.name if split_dir else data_names[0].capitalize())
            rel = (split_folder / name).relative_to(raw_root).as_posix()
            problem = sample_id_problem(sid)
            if problem:
                failures.append(bad_sample_id(sid, "prepare", f"{names_file.name}:{name_no}", problem))
                continue
            if sid in seen:
                failures.append(failure(sid, "prepare", rel, f"clip name (sample id {sid!r}) also listed in the "
                                        f"{seen[sid]} split", "a clip can belong to one split only; remove the "
                                        "duplicate line pair (or rename one clip)"))
                continue
            seen[sid] = split
            try:
                label_row = parse_label_line(line)
            except ValueError as exc:
                failures.append(failure(sid, "labels", where, f"malformed label line {line!r}: {exc}",
                                        "fix the line (8 flags 0/1 then valence) or restore the file from the release"))
                continue
            if label_row["valence"] is None:
                failures.append(failure(
                    sid, "labels", where, f"valence on line {line_no} is {_valence_text(line)}, not a number in "
                    f"{VALENCE_RANGE[0]:g}..{VALENCE_RANGE[1]:g}; the clip is kept with a null valence",
                    "nothing for the 8 emotion targets; restore the line from the release if you use valence"))
            if video is None:
                failures.append(failure(sid, "media", rel,
                                        f"{name} is listed in {names_file.name} but not in {rel.rsplit('/', 1)[0]}/",
                                        "restore the video from the release"))
                continue
            jobs.append((sid, video, label_row, split))
        unlisted = sorted(v.name for k, v in videos.items() if k not in listed and v.suffix.lower() in (".mp4", ".avi"))
        if unlisted:
            notes.append(f"{split}: {len(unlisted)} video(s) not listed in {names_file.name}, not used: {unlisted[:5]}")
    if not found_splits:
        raise DatasetError(f"no EmoReact split (train/validation/test) found under {base}. Expected layout:\n{LAYOUT}")

    faces_dir = Path(out_dir) / "faces"
    det = open_detector(detector, detector_weights) if jobs else None  # one instance for all clips
    bar = progress_bar(jobs, progress, "EmoReact faces", "clip")
    for sid, video, label_row, split in bar:
        res = crop_video(video, faces_dir, {sid: None}, detector=det, face_size=face_size, every=every,
                         max_carry=max_carry, margin=margin, decoder=decoder, align=align)[sid]
        rel = video.relative_to(raw_root).as_posix()
        if not res.ok:
            failures.append(failure(sid, "faces", rel, res.error, "re-download or re-encode the video (see docs/faces.md)"))
            continue
        short = frame_shortfall(res.n_frames, {"the container": res.n_frames_reported}, min_decoded_fraction)
        if short is not None:
            failures.append(failure(sid, "media", rel, short.describe(),
                                    "re-download the video (a truncated file), or re-encode it with ffmpeg"))
            if short.exclude:
                continue
        if not res.has_face:
            failures.append(failure(
                sid, "faces", rel, f"no face found in any of {res.n_frames} frames (detector {detector})",
                "check the clip; try another --detector, or --detector center if the video is already a face crop",
            ))
            continue
        if res.decode_note:
            notes.append(f"{sid}: {res.decode_note}")
        rows.append({
            "sample_id": sid, "subject": sid, "split": split, "kind": "video",
            "media": res.media, "media_root": "workspace", "media_kind": "frames_dir", "frame_base": 0,
            "n_frames": res.n_frames, "fps": res.fps,
            **label_row,
            "source": rel, "decoder": res.decoder, "no_face_frames": res.no_face_frames,
            "n_frames_reported": res.n_frames_reported, "decode_note": res.decode_note,
        })
    return Prepared(
        rows=rows, failures=failures,
        info={"notes": notes, "splits_found": found_splits, "subject_folds": "not supported (no subject ids)",
              "min_decoded_fraction": min_decoded_fraction,
              "faces": {"detector": detector, "face_size": face_size, "every": every, "max_carry": max_carry,
                        "margin": margin, "align": align}},
    )


def _valence_text(line: str) -> str:
    parts = [p for p in re.split(r"[,\s]+", line.strip()) if p]
    return repr(parts[8]) if len(parts) > 8 else "missing"



SPEC = register_dataset(DatasetSpec(
    name="emoreact",
    title="EmoReact",
    layout=LAYOUT,
    splits="official train / validation / test (folders + label files); no subject ids, so no subject folds",
    task=Task(kind="clip_multilabel", targets=EMOTIONS, metric="auc", seq_len=128, head="last", feature_dim_hint=784),
    prepare=prepare,
    options={**face_crop_options(), "faces": choice("detect")},
))
