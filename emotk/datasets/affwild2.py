"""Aff-Wild2 (ABAW valence–arousal track) from its distributed layout.

Reads ``cropped_aligned/<track>/NNNNN.jpg`` (1-based frame numbers) and the per-track annotation
files ``<ABAW annotations>/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<track>.txt``; the
annotation folder's name changes with each ABAW edition, so it is found by its content.

Annotation lines (see docs/datasets/affwild2.md): after the ``valence,arousal`` header, **line k+2 of
the file is frame k** — one line per frame, the ABAW format. A line that is not a valid label row —
blank, not two comma-separated fields, not a number, NaN/inf, or a value outside [−1, 1] other than
the ``-5`` "no label" marker — keeps its place: its frame is unlabelled (NaN), every later line keeps
its own frame, and the line is a named defect (file, line number) in ``failures.csv`` (stage
``prepare``). Blank lines *after the last label row* are not frames (an editor's trailing newlines).
In the VA files ``-1`` is an ordinary value (the most negative valence/arousal); ``-1`` means "no
label" only in ABAW's expression and AU files, which emotk does not read here. A ``-5`` in either
column leaves the whole frame unlabelled (not a defect: ABAW's documented marker).

Sample ids are the track names; a track name that does not fit
:data:`emotk.datasets.base.SAMPLE_ID_PATTERN` is listed in failures.csv and skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from emotk.datasets.base import (
    DatasetSpec,
    check_options,
    Prepared,
    RawFileError,
    Task,
    bad_sample_id,
    choice,
    failure,
    face_crop_options,
    list_raw_dir,
    read_raw_text,
    register_dataset,
    sample_id_problem,
)
from emotk.errors import DatasetError
from emotk.media.video import MIN_DECODED_FRACTION, frame_shortfall

SPLIT_FOLDERS = {"Train_Set": "train", "Validation_Set": "validation"}
VA_FOLDERS = ("VA_Estimation_Challenge", "VA_Set")  # current editions / the 2020 release
INVALID = -5.0
#: Per annotation file, at most this many defective lines get their own failures.csv row (a summary row counts all).
LINE_DEFECTS_LISTED = 20
FACES = ("provided", "detect")
VIDEO_OPTIONS = ("detector", "face_size", "every", "max_carry", "margin", "decoder", "min_decoded_fraction", "align",
                 "detector_weights")

_SIDE = re.compile(r"_(left|right)$")
_PART_AFTER_RES = re.compile(r"^(\d+-\d+-\d+x\d+)-\d+$")  # 122-60-1920x1080-3 → 122-60-1920x1080
_PART_VIDEO = re.compile(r"^(video\d+)_\d+$")  # video45_2 → video45
_FPS = re.compile(r"^\d+-(\d+)-\d+x\d+")


def subject_of(track: str) -> str:
    """Subject key of a track: side kept, part index dropped (see docs/datasets/affwild2.md).

    ``122-60-1920x1080-3`` → ``122-60-1920x1080``; ``video45_2`` → ``video45``;
    ``10-60-1280x720_right`` → ``10-60-1280x720#right``. Left and right are different people.
    """
    side = _SIDE.search(track)
    base = track[: side.start()] if side else track
    for pattern in (_PART_AFTER_RES, _PART_VIDEO):
        m = pattern.match(base)
        if m:
            base = m.group(1)
            break
    return f"{base}#{side.group(1)}" if side else base


def video_of(track: str) -> str:
    """Name (without extension) of the raw video a track comes from."""
    side = _SIDE.search(track)
    return track[: side.start()] if side else track


def fps_of(track: str) -> float | None:
    m = _FPS.match(track)
    return float(m.group(1)) if m else None


def find_annotation_root(raw_root: Path) -> Path:
    """The VA annotation folder (``.../VA_Estimation_Challenge`` or ``.../VA_Set``), whatever the edition calls its parent."""
    candidates = []
    for va in VA_FOLDERS:
        candidates += [p for p in raw_root.glob(f"*/{va}") if p.is_dir()]
        candidates += [p for p in raw_root.glob(f"*/*/{va}") if p.is_dir()]
    candidates = sorted(set(candidates))
    if not candidates:
        raise DatasetError(
            f"no VA annotation folder under {raw_root}: expected e.g. "
            f"{raw_root}/6th_ABAW_Annotations/VA_Estimation_Challenge/{{Train_Set,Validation_Set}}/<track>.txt. "
            "Point --root at the folder that holds cropped_aligned/ and the ABAW annotations."
        )
    if len(candidates) > 1:
        raise DatasetError(
            f"several VA annotation folders under {raw_root}: {[str(c) for c in candidates]}. "
            "Keep one edition's annotations beside cropped_aligned/, or point --root at a folder with one."
        )
    return candidates[0]


def read_va_annotation(path: Path) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Parse one track's annotation → ``[N, 2]`` float32 (row k = frame k, NaN = no label) and its defects.

    Defects are ``(line number, kind, text)`` with kind one of ``blank``, ``fields``, ``number``,
    ``range`` (NaN, inf or outside [−1, 1] other than −5); each defect's frame is NaN and keeps its
    place. ``-5`` in either column marks an unlabelled frame (not a defect). Trailing blank lines are
    not frames. Raises DatasetError for an unreadable file, a non-UTF-8 file or a missing header.
    """
    try:
        text = read_raw_text(path, "annotation file")
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text; re-extract the annotation archive.") from None
    lines = text.splitlines()
    if not lines or lines[0].replace(" ", "").lower() != "valence,arousal":
        raise DatasetError(f"{path}: first line must be 'valence,arousal', found {lines[0][:40] if lines else 'an empty file'!r}.")
    body = lines[1:]
    while body and not body[-1].strip():  # trailing blank lines: not frames
        body.pop()
    values = np.full((len(body), 2), np.nan, dtype=np.float32)
    defects: list[tuple[int, str, str]] = []
    for k, line in enumerate(body):
        no = k + 2
        if not line.strip():
            defects.append((no, "blank", line))
            continue
        parts = line.split(",")
        if len(parts) != 2:
            defects.append((no, "fields", line))
            continue
        try:
            v, a = float(parts[0]), float(parts[1])
        except ValueError:
            defects.append((no, "number", line))
            continue
        if v == INVALID or a == INVALID:
            continue  # ABAW's "no label" marker
        if not (np.isfinite(v) and np.isfinite(a) and abs(v) <= 1.0 and abs(a) <= 1.0):
            defects.append((no, "range", line))
            continue
        values[k] = (v, a)
    return values, defects


DEFECT_TEXT = {
    "blank": "blank line",
    "fields": "not two comma-separated fields",
    "number": "not a number",
    "range": "value NaN, infinite or outside [-1, 1] (and not the -5 marker)",
}
SUMMARY_TEXT = {  # (one, several)
    "blank": ("1 blank line", "{n} blank lines"),
    "fields": ("1 line without exactly two fields", "{n} lines without exactly two fields"),
    "number": ("1 line that is not numbers", "{n} lines that are not numbers"),
    "range": ("1 frame has values outside [-1, 1] or NaN", "{n} frames have values outside [-1, 1] or NaN"),
}


def annotation_defect_rows(track: str, path: Path, defects: list[tuple[int, str, str]]) -> list[dict]:
    """failures.csv rows for an annotation's defective lines: one per line (the first
    :data:`LINE_DEFECTS_LISTED`), then one summary row for the track."""
    rows = []
    for no, kind, line in defects[:LINE_DEFECTS_LISTED]:
        rows.append(failure(track, "prepare", f"{path}:{no}",
                            f"line {no} (frame {no - 2}): {DEFECT_TEXT[kind]}: {line[:40]!r}; the frame is unlabelled",
                            "fix the line (one 'valence,arousal' row per frame, -5,-5 for no label) or restore "
                            "the file; later lines keep their frames"))
    counts: dict[str, int] = {}
    for _, kind, _ in defects:
        counts[kind] = counts.get(kind, 0) + 1
    listed = "" if len(defects) <= LINE_DEFECTS_LISTED else f" (the first {LINE_DEFECTS_LISTED} are listed above)"
    rows.append(failure(track, "prepare", path,
                        "; ".join(SUMMARY_TEXT[k][n > 1].format(n=n) for k, n in counts.items())
                        + f"{listed}; those frames are unlabelled (NaN), every other line keeps its frame",
                        "nothing, unless the file should be fixed: these frames are excluded from training and scoring"))
    return rows


def crop_indices(crop_dir: Path) -> np.ndarray:
    """0-based frame indices of the jpg crops in a track folder (file ``00001.jpg`` is frame 0)."""
    idx = [int(p.stem) - 1 for p in list_raw_dir(crop_dir, "crop folder")
           if p.suffix.lower() == ".jpg" and p.stem.isdigit() and not p.name.startswith(".")]
    return np.asarray(sorted(idx), dtype=np.int64)


def precheck(raw_root: Path, options: dict) -> None:
    """Options for cropping from the videos need ``faces="detect"`` (or a release without cropped_aligned/)."""
    video_options = sorted(k for k in options if k in VIDEO_OPTIONS)
    use_videos = options.get("faces", "provided") == "detect" or not (Path(raw_root) / "cropped_aligned").is_dir()
    if video_options and not use_videos:
        raise DatasetError(f"options {video_options} apply only when cropping faces from the videos "
                           "(--faces detect); the provided cropped_aligned/ crops are used as they are.")


def prepare(raw_root: Path, out_dir: Path, faces: str = "provided",
            min_decoded_fraction: float = MIN_DECODED_FRACTION, **video_options) -> Prepared:
    """Read the annotations and the provided crops (or crop the raw videos, ``faces="detect"``).

    ``min_decoded_fraction``: with videos, a track whose video decodes fewer than this share of the
    frames its container or its annotation claims is excluded (see emotk.media.video).
    """
    check_options(SPEC, {"faces": faces, "min_decoded_fraction": min_decoded_fraction, **video_options})
    precheck(raw_root, {"faces": faces, **video_options})
    ann_root = find_annotation_root(raw_root)
    crops_root = raw_root / "cropped_aligned"
    tracks: dict[str, tuple[str, Path]] = {}
    rejected: list[dict] = []
    for folder, split in SPLIT_FOLDERS.items():
        split_dir = ann_root / folder
        entries = list_raw_dir(split_dir, "annotation folder") if split_dir.exists() else []
        for txt in (p for p in entries if p.suffix == ".txt"):
            if txt.name.startswith("."):
                continue
            if not _utf8(txt.stem):
                shown = _printable(txt)
                rejected.append(failure(_printable(txt.stem), "prepare", shown, "file name is not valid UTF-8",
                                        "rename the annotation file and its crop folder to a UTF-8 name"))
                continue
            problem = sample_id_problem(txt.stem)
            if problem:
                rejected.append(bad_sample_id(txt.stem, "prepare", txt, problem))
                continue
            if txt.stem in tracks:
                other = tracks.pop(txt.stem)[1]
                rejected.append(failure(txt.stem, "prepare", txt, f"track is annotated twice ({other} and {txt})",
                                        "keep the track in one split folder only; the track is skipped"))
                continue
            tracks[txt.stem] = (split, txt)
    if not tracks:
        raise DatasetError(f"{ann_root} has no Train_Set/*.txt or Validation_Set/*.txt annotation files.")

    use_videos = faces == "detect" or not crops_root.is_dir()
    video_media: dict[str, dict] = {}
    progress = video_options.pop("progress", False)
    if use_videos:
        video_options["progress"] = progress
        from emotk.datasets.affwild2_videos import crop_tracks  # needs the video extras

        video_media = crop_tracks(raw_root, out_dir, sorted(tracks), **video_options)

    rows, labels, failures = [], {}, rejected
    n_bad_total = 0
    for track, (split, txt) in sorted(tracks.items()):
        try:
            va, defects = read_va_annotation(txt)
        except RawFileError:
            raise  # the copy of the dataset is unreadable: one clear error, not a skipped track
        except DatasetError as exc:
            failures.append(failure(track, "prepare", txt, str(exc), "fix or re-download this annotation file"))
            continue
        if use_videos:
            media = video_media.get(track)
            if media is None or "reason" in media:
                failures.append(media or failure(track, "prepare", raw_root, "no video found for this track",
                                                 "put the video in a batch*/ folder"))
                continue
            short = frame_shortfall(int(media["n_frames"]), {"the container": int(media.get("n_frames_reported") or 0),
                                                             "the annotation": len(va)}, min_decoded_fraction)
            if short is not None:
                failures.append(failure(track, "prepare", raw_root / media["source"], short.describe(),
                                        "re-download the video (a truncated file), or re-encode it with ffmpeg"))
                if short.exclude:
                    continue
            frames = _frames_in(out_dir / media["media"], base=0)
            row_media = dict(media=media["media"], media_root="workspace", frame_base=0,
                             **{k: media.get(k) for k in ("fps", "decoder", "no_face_frames", "n_frames_reported",
                                                          "decode_note", "source")})
        else:
            crop_dir = crops_root / track
            if not crop_dir.is_dir():
                failures.append(failure(track, "prepare", crop_dir, "annotated track has no crop folder",
                                        "restore cropped_aligned/<track>/ or prepare with --faces detect"))
                continue
            frames = crop_indices(crop_dir)
            row_media = dict(media=f"cropped_aligned/{track}", media_root="raw", frame_base=1, fps=fps_of(track))
        if frames.size == 0:
            failures.append(failure(track, "prepare", raw_root / row_media["media"], "no face crops for this track",
                                    "check the crop folder; the track is skipped"))
            continue
        n_frames = max(len(va), int(frames[-1]) + 1)
        per_frame = np.full((n_frames, 2), np.nan, dtype=np.float32)
        per_frame[: len(va)] = va
        has_crop = np.zeros(n_frames, dtype=bool)
        has_crop[frames] = True
        n_valid = int((has_crop & np.isfinite(per_frame).all(axis=1)).sum())
        if defects:
            n_bad_total += len(defects)
            failures.extend(annotation_defect_rows(track, txt, defects))
        if n_valid == 0:
            failures.append(failure(track, "prepare", txt, "no frame has both a valid label and a face crop",
                                    "the track is skipped; check its annotation and crops"))
            continue
        labels[track] = per_frame
        rows.append({
            "sample_id": track, "subject": subject_of(track), "split": split, "kind": "video",
            "media_kind": "frames_dir", "n_frames": n_frames, **row_media,
            "n_label_lines": int(len(va)), "n_crops": int(frames.size),
            "missing_crops": int(n_frames - frames.size), "n_valid": n_valid, "label_defects": len(defects),
        })
    return Prepared(rows=rows, frame_labels=labels, label_names=("valence", "arousal"), failures=failures,
                    info={"annotation_root": str(ann_root), "faces": "detect" if use_videos else "provided",
                          "label_defects": n_bad_total, "min_decoded_fraction": min_decoded_fraction})


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:  # undecodable bytes in a file name (surrogate escapes)
        return False


def _printable(value) -> str:
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _frames_in(folder: Path, base: int) -> np.ndarray:
    if not folder.is_dir():
        return np.zeros(0, dtype=np.int64)
    return np.asarray(sorted(int(p.stem) - base for p in folder.glob("*.jpg") if p.stem.isdigit()), dtype=np.int64)


LAYOUT = """\
<root>/
  cropped_aligned/<track>/00001.jpg 00002.jpg ...      ABAW face crops (1-based frame numbers)
  <N>th_ABAW_Annotations/VA_Estimation_Challenge/      folder name varies by edition
    Train_Set/<track>.txt  Validation_Set/<track>.txt  'valence,arousal' header, one row per frame, -5 = ignore
  batch1/ batch2/ batch3/  raw videos (used with --faces detect, or when cropped_aligned/ is absent)"""

SPEC = register_dataset(DatasetSpec(
    name="affwild2",
    title="Aff-Wild2 (ABAW VA)",
    layout=LAYOUT,
    splits="official: Train_Set → train, Validation_Set → validation (test labels withheld); "
           "subject k-fold on train as in NAC-TCN (subject = track without part index, left/right kept apart)",
    task=Task(kind="frame_regression", targets=("valence", "arousal"), metric="ccc", seq_len=256, head="frame_tanh"),
    prepare=prepare,
    options={"faces": choice(*FACES), **face_crop_options()},
    precheck=precheck,
))

__all__ = ["subject_of", "video_of", "fps_of", "read_va_annotation", "find_annotation_root", "prepare"]
