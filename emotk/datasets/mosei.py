"""CMU-MOSEI (Zadeh et al., ACL 2018): YouTube monologue segments, sentiment and six emotion intensities.

Raw layout (the SDK's ``CMU_MOSEI.zip``; ``--root`` may point at the folder holding ``Raw/`` or at
``Raw/``; MESM's ``MOSEI_Raw/`` variant is read too)::

    Raw/Audio/Full/WAV_16000/<vid>.wav                 (MESM: MOSEI_Raw/Audio/WAV_16000/)
    Raw/Videos/Segmented/Combined/<vid>_<clip>.mp4
    Raw/Videos/Full/Combined/<vid>.mp4
    Raw/Transcript/Segmented/Combined/<vid>.txt        (MESM: MOSEI_Raw/Transcript/Combined/)
    CMU_MOSEI_Labels.csd   in the root, Raw/, Labels/ or given with -o labels=PATH

Labels come from the SDK's label sequence (:mod:`emotk.datasets.csd`): per video, one row per
segment with its interval and 7 values ``[sentiment, happy, sad, anger, surprise, disgust, fear]``.
The sequence has no clip numbers, so each label segment is matched to the transcript line of its
video whose (start, end) is nearest, within ``match_tolerance`` seconds; that line gives the clip
number and the text. See docs/datasets/mosei.md for every rule (sample ids, clamping, folds).
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from emotk.datasets.base import (
    DatasetSpec,
    Prepared,
    Task,
    bad_sample_id,
    check_options,
    choice,
    failure,
    face_crop_options,
    flag,
    list_raw_dir,
    number,
    progress_bar,
    read_raw_text,
    register_dataset,
    sample_id_problem,
)
from emotk.datasets.csd import CSDEntryError, open_csd
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

try:  # time spans and frame rates in face cropping (emotk.media.faces.CropTarget)
    from emotk.media.faces import CropTarget
except ImportError:  # pragma: no cover - an emotk without span support
    CropTarget = None

#: The label sequence's 7 columns, in its order (SDK CMU_MOSEI/README.md).
CSD_COLUMNS = ("sentiment", "happy", "sad", "anger", "surprise", "disgust", "fear")
EMOTIONS = CSD_COLUMNS[1:]
#: Target orders: the SDK's, and MESM's (anger, disgust, fear, happiness, sadness, surprise).
ORDERS = {"sdk": EMOTIONS, "mesm": ("anger", "disgust", "fear", "happy", "sad", "surprise")}
LABEL_FILE = "CMU_MOSEI_Labels.csd"
FOLDS_RESOURCE = "mosei_std_folds.json"
FOLD_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
DEFAULT_MATCH_TOLERANCE = 0.05  # seconds between a label interval and its transcript line's
AUDIO_END_SLACK = 0.1  # seconds a segment may end after its wav before it is listed

BASES = ("", "Raw", "MOSEI_Raw", "CMU_MOSEI/Raw", "CMU_MOSEI")
AUDIO_DIRS = ("Audio/Full/WAV_16000", "Audio/WAV_16000")
SEGMENTED_DIRS = ("Videos/Segmented/Combined",)
FULL_DIRS = ("Videos/Full/Combined",)
TRANSCRIPT_DIRS = ("Transcript/Segmented/Combined", "Transcript/Combined")

LAYOUT = """CMU_MOSEI/                      (--root may point here, at Raw/, or at MESM's MOSEI_Raw/)
  CMU_MOSEI_Labels.csd           the SDK's label sequence (or in Raw/, Labels/, or -o labels=PATH)
  Raw/Audio/Full/WAV_16000/<vid>.wav             (MESM: MOSEI_Raw/Audio/WAV_16000/)
  Raw/Videos/Segmented/Combined/<vid>_<clip>.mp4
  Raw/Videos/Full/Combined/<vid>.mp4
  Raw/Transcript/Segmented/Combined/<vid>.txt    lines <vid>___<clip>___<start>___<end>___<text>
                                                 (MESM: MOSEI_Raw/Transcript/Combined/)"""


# --- names ----------------------------------------------------------------------------------------

def split_clip_id(name: str) -> tuple[str, int]:
    """``"a_b-c_3"`` → ``("a_b-c", 3)``: the clip index is split off at the **last** underscore.

    ValueError when there is no underscore or the part after it is not a non-negative integer.
    """
    vid, sep, clip = name.rpartition("_")
    if not sep or not vid or not clip.isdigit():
        raise ValueError(f"{name!r} is not <video id>_<clip number>")
    return vid, int(clip)


def sample_id_for(video_id: str, clip: int) -> str:
    """``<vid>_<clip>``; a video id starting with ``-`` or ``_`` (84 of the SDK's) gets a ``v`` prefix,
    as a sample id starts with a letter or digit (``-iRBcNs9oI8`` → ``v-iRBcNs9oI8_3``)."""
    head = video_id if video_id[:1].isalnum() else f"v{video_id}"
    return f"{head}_{clip}"


# --- transcripts ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TranscriptLine:
    clip: int
    start: float
    end: float
    text: str
    line: int  # 1-based line number


def parse_transcript_line(line: str, video_id: str) -> TranscriptLine:
    """One ``<vid>___<clip>___<start>___<end>___<text>`` line (line number 0); ValueError says why not."""
    parts = line.rstrip("\r\n").split("___", 4)
    if len(parts) < 5:
        raise ValueError(f"{len(parts)} '___'-separated field(s), expected 5 (vid, clip, start, end, text)")
    vid, clip, start, end, text = parts
    if vid.strip() != video_id:
        raise ValueError(f"video id {vid.strip()!r} is not this file's ({video_id!r})")
    if not clip.strip().isdigit():
        raise ValueError(f"clip {clip.strip()!r} is not a non-negative integer")
    try:
        s, e = float(start), float(end)
    except ValueError:
        raise ValueError(f"start/end {start.strip()!r}/{end.strip()!r} are not numbers") from None
    if not (math.isfinite(s) and math.isfinite(e)) or e <= s:
        raise ValueError(f"interval {start.strip()}..{end.strip()} is not a finite span ending after it starts")
    return TranscriptLine(int(clip), s, e, text.strip(), 0)


def parse_transcript(path: Path, video_id: str) -> tuple[dict[int, TranscriptLine], list[tuple[int, str]]]:
    """``({clip: line}, [(line number, why skipped)])`` of one segmented transcript.

    Blank lines are ignored. A line that does not parse, names another video, or repeats a clip
    number (every line with that number) is skipped and returned with the reason, never guessed.
    """
    good: dict[int, TranscriptLine] = {}
    bad: list[tuple[int, str]] = []
    repeated: set[int] = set()
    for no, line in enumerate(read_raw_text(path, "transcript", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            t = parse_transcript_line(line, video_id)
        except ValueError as exc:
            bad.append((no, str(exc)))
            continue
        t = TranscriptLine(t.clip, t.start, t.end, t.text, no)
        if t.clip in good or t.clip in repeated:
            if t.clip in good:
                first = good.pop(t.clip)
                bad.append((first.line, f"clip {t.clip} appears on lines {first.line} and {no}"))
            repeated.add(t.clip)
            bad.append((no, f"clip {t.clip} appears more than once"))
            continue
        good[t.clip] = t
    return good, bad


def match_segments(intervals: np.ndarray, lines: dict[int, TranscriptLine], tolerance: float
                   ) -> list[tuple[int | None, str | None]]:
    """For each label interval, ``(clip, None)`` of the transcript line nearest in (start, end) within
    ``tolerance`` seconds on both ends, or ``(None, why not)``. A clip claimed by two label rows goes
    to neither (listed), and a tie between two lines matches none."""
    picks: list[tuple[int | None, str | None]] = []
    for s, e in intervals:
        near = sorted((abs(s - t.start) + abs(e - t.end), c) for c, t in lines.items()
                      if abs(s - t.start) <= tolerance and abs(e - t.end) <= tolerance)
        if not near:
            picks.append((None, f"no transcript line has the interval {s:.3f}..{e:.3f} (within {tolerance:g} s)"))
        elif len(near) > 1 and near[0][0] == near[1][0]:
            picks.append((None, f"clips {near[0][1]} and {near[1][1]} match the interval {s:.3f}..{e:.3f} equally"))
        else:
            picks.append((near[0][1], None))
    counts: dict[int, int] = {}
    for clip, _ in picks:
        if clip is not None:
            counts[clip] = counts.get(clip, 0) + 1
    return [(None, f"clip {c} matches {counts[c]} label segments") if c is not None and counts[c] > 1 else (c, why)
            for c, why in picks]


# --- folds ----------------------------------------------------------------------------------------

def load_folds(path: str | None) -> tuple[dict[str, str], str]:
    """``({video id: train|validation|test}, source)`` from emotk's copy of the SDK's standard folds,
    or from ``path``: a JSON ``{"train": [...], "valid"|"validation": [...], "test": [...]}`` or the
    SDK's ``cmu_mosei_std_folds.py`` (read with ``ast``, never executed). ``"none"``: no split."""
    if path is None:
        text = resources.files("emotk.datasets").joinpath("data", FOLDS_RESOURCE).read_text(encoding="utf-8")
        data = json.loads(text)
        return _fold_map(data, f"emotk/datasets/data/{FOLDS_RESOURCE}"), data.get("source", "")
    if str(path).lower() == "none":
        return {}, "none"
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetError(f"-o folds={path}: no such file. Give a JSON with train/valid/test video id lists or the "
                           "SDK's cmu_mosei_std_folds.py.")
    text = read_raw_text(p, "folds file")
    if p.suffix == ".py":
        try:
            tree = ast.parse(text, filename=str(p))
            data = {}
            for node in tree.body:
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    name = node.targets[0].id
                    for part in FOLD_SPLITS:
                        if name == f"standard_{part}_fold":
                            data[part] = ast.literal_eval(node.value)
        except (SyntaxError, ValueError) as exc:
            raise DatasetError(f"{p}: not readable as the SDK's folds file ({exc}); it should assign "
                               "standard_train_fold, standard_valid_fold, standard_test_fold lists.") from None
    else:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DatasetError(f"{p}: not valid JSON ({exc}); give {{\"train\": [...], \"valid\": [...], "
                               "\"test\": [...]}} video id lists.") from None
        if isinstance(data, dict) and "validation" in data and "valid" not in data:
            data["valid"] = data.pop("validation")
    return _fold_map(data, str(p)), str(p)


def _fold_map(data, where: str) -> dict[str, str]:
    if not isinstance(data, dict) or not any(k in data for k in FOLD_SPLITS):
        raise DatasetError(f"{where}: expected train, valid and test lists of video ids.")
    out: dict[str, str] = {}
    for part, split in FOLD_SPLITS.items():
        ids = data.get(part, [])
        if not isinstance(ids, list) or not all(isinstance(v, str) for v in ids):
            raise DatasetError(f"{where}: '{part}' must be a list of video id strings (quote numeric ids).")
        for vid in ids:
            if vid in out and out[vid] != split:
                raise DatasetError(f"{where}: video {vid!r} is in both {out[vid]} and {split}; a video belongs to "
                                   "one fold. Fix the folds file.")
            out[vid] = split
    return out


# --- layout ---------------------------------------------------------------------------------------

@dataclass
class Layout:
    base: Path
    labels: Path
    audio: Path | None
    segmented: Path | None
    full: Path | None
    transcripts: Path | None


def _sub(base: Path, options: tuple[str, ...]) -> Path | None:
    return next((base / o for o in options if (base / o).is_dir()), None)


def find_layout(raw_root: Path, labels: str | None = None) -> Layout:
    """The folders of the release under ``raw_root`` and the label sequence (DatasetError when absent)."""
    base = None
    for b in BASES:
        cand = raw_root / b if b else raw_root
        if any(_sub(cand, opts) for opts in (AUDIO_DIRS, SEGMENTED_DIRS, FULL_DIRS, TRANSCRIPT_DIRS)):
            base = cand
            break
    if base is None:
        raise DatasetError(f"{raw_root} does not look like CMU-MOSEI: no Audio/, Videos/ or Transcript/ folders in it, "
                           f"in Raw/ or in MOSEI_Raw/. Point --root at the unpacked release. Expected layout:\n{LAYOUT}")
    if labels is not None:
        label_file = Path(labels).expanduser()
        if not label_file.is_absolute() and not label_file.is_file():
            label_file = raw_root / label_file
        if not label_file.is_file():
            raise DatasetError(f"-o labels={labels}: no such file. Give the path of {LABEL_FILE}.")
    else:
        places = [raw_root, base, base / "Labels", raw_root / "Labels", base.parent]
        label_file = next((p / LABEL_FILE for p in places if (p / LABEL_FILE).is_file()), None)
        if label_file is None:
            csvs = [p for p in places if p.is_dir() and any(p.glob("*.csv"))] if (base / "Labels").is_dir() else []
            extra = (f" {base / 'Labels'} holds MTurk CSVs, which emotk does not read (MESM's notebook sums them); "
                     "emotk reads the SDK's averaged labels." if csvs else "")
            raise DatasetError(
                f"{LABEL_FILE} not found in {', '.join(str(p) for p in dict.fromkeys(places))}.{extra} Download it "
                "with the CMU-MultimodalSDK (mmdatasdk.cmu_mosei.labels) and put it in the root, or pass "
                f"-o labels=PATH. Expected layout:\n{LAYOUT}")
    return Layout(base=base, labels=label_file, audio=_sub(base, AUDIO_DIRS), segmented=_sub(base, SEGMENTED_DIRS),
                  full=_sub(base, FULL_DIRS), transcripts=_sub(base, TRANSCRIPT_DIRS))


def _files(folder: Path | None, suffix: str) -> dict[str, Path]:
    """``{stem: path}`` of the visible ``suffix`` files of ``folder`` (case-insensitive suffix)."""
    if folder is None:
        return {}
    return {p.name[: -len(suffix)]: p for p in list_raw_dir(folder, "folder")
            if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(suffix)}


def _wav_seconds(path: Path) -> tuple[float | None, str | None]:
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError, ValueError) as exc:  # soundfile raises LibsndfileError (a RuntimeError)
        return None, f"the wav cannot be read ({' '.join(str(exc).split())[:160]})"
    if not info.frames or not info.samplerate:
        return None, "the wav holds no samples"
    return info.frames / info.samplerate, None


# --- prepare --------------------------------------------------------------------------------------

def prepare(
    raw_root: Path,
    out_dir: Path,
    *,
    labels: str | None = None,
    folds: str | None = None,
    order: str = "sdk",
    video: bool = True,
    fps: float = 0.0,
    match_tolerance: float = DEFAULT_MATCH_TOLERANCE,
    detector: str = DEFAULT_DETECTOR,
    face_size: int = DEFAULT_FACE_SIZE,
    every: int = DEFAULT_EVERY,
    max_carry: int = DEFAULT_MAX_CARRY,
    margin: float = DEFAULT_MARGIN,
    decoder: str = "auto",
    faces: str = "detect",
    align: bool = False,
    detector_weights: str | None = None,
    progress: bool = True,
    **other,
) -> Prepared:
    """Read the label sequence, transcripts, audio and videos of CMU-MOSEI into utterance rows.

    Options: ``labels`` (path of CMU_MOSEI_Labels.csd), ``folds`` (a folds JSON / the SDK's .py /
    ``none``; default: the SDK's standard folds shipped with emotk), ``order`` (sdk | mesm: the order
    of the six targets), ``video`` (crop faces from the videos), ``fps`` (face frames kept per second;
    0 = every frame), ``match_tolerance`` (seconds), the face-cropping options of the other video
    datasets (``detector``, ``face_size``, ``every``, ``max_carry``, ``margin``, ``decoder``,
    ``align``, ``detector_weights``), ``progress``.
    """
    check_options(SPEC, dict(labels=labels, folds=folds, order=order, video=video, fps=fps,
                             match_tolerance=match_tolerance, detector=detector, face_size=face_size, every=every,
                             max_carry=max_carry, margin=margin, decoder=decoder, faces=faces, align=align,
                             detector_weights=detector_weights, progress=progress, **other))
    raw_root = Path(raw_root)
    _precheck(raw_root, {"fps": fps})
    layout = find_layout(raw_root, labels)
    fold_of, fold_source = load_folds(folds)
    rel = _relative(raw_root)
    label_rel = rel(layout.labels)
    audio_files = _files(layout.audio, ".wav")
    segmented = _files(layout.segmented, ".mp4") if video else {}
    full = _files(layout.full, ".mp4") if video else {}
    transcripts = _files(layout.transcripts, ".txt")

    failures: list[dict] = []
    c = {"label_videos": 0, "label_segments": 0, "segments_kept": 0, "clamped_starts": 0, "no_media": 0,
         "unmatched_segments": 0, "transcript_lines_skipped": 0, "transcript_lines_unlabelled": 0,
         "videos_outside_folds": 0, "rows_outside_folds": 0}
    skipped_lines: list[str] = []
    candidates: list[dict] = []
    with open_csd(layout.labels) as seq:
        vids = seq.video_ids()
        for vid in progress_bar(vids, progress, "CMU-MOSEI labels", "video"):
            c["label_videos"] += 1
            try:
                feats, ivals = seq.read(vid)
            except CSDEntryError as exc:
                failures.append(failure(vid, "labels", label_rel, str(exc), "re-download the label sequence; the "
                                        "video's segments are skipped"))
                continue
            c["label_segments"] += len(ivals)
            if feats.shape[1] != len(CSD_COLUMNS):
                raise DatasetError(f"{layout.labels}, video {vid!r}: {feats.shape[1]} label values per segment, expected "
                                   f"{len(CSD_COLUMNS)} ({', '.join(CSD_COLUMNS)}). Is this {LABEL_FILE}?")
            tfile = transcripts.get(vid)
            if tfile is None:
                for k, (s, e) in enumerate(ivals):
                    failures.append(failure(f"{vid}[{k}]", "labels", f"{label_rel}:{vid}[{k}]",
                                            f"no transcript {vid}.txt: the clip number of segment {s:.3f}..{e:.3f} "
                                            "comes from it", "restore Transcript/Segmented/Combined/"
                                            f"{vid}.txt from the release; the segment is skipped"))
                continue
            lines, bad = parse_transcript(tfile, vid)
            c["transcript_lines_skipped"] += len(bad)
            skipped_lines += [f"{rel(tfile)}:{no}: {why}" for no, why in bad]
            picks = match_segments(ivals, lines, match_tolerance)
            c["transcript_lines_unlabelled"] += len(set(lines) - {clip for clip, _ in picks if clip is not None})
            split = fold_of.get(vid)
            if split is None:
                c["videos_outside_folds"] += 1
            for k, ((clip, why), row, (s, e)) in enumerate(zip(picks, feats, ivals)):
                if clip is None:
                    c["unmatched_segments"] += 1
                    failures.append(failure(f"{vid}[{k}]", "labels", f"{label_rel}:{vid}[{k}]", why,
                                            f"check {rel(tfile)} against the label sequence; the segment is skipped"))
                    continue
                sid = sample_id_for(vid, clip)
                problem = sample_id_problem(sid)
                if problem:
                    failures.append(bad_sample_id(sid, "prepare", f"{label_rel}:{vid}", problem))
                    continue
                if not np.all(np.isfinite(row)):
                    failures.append(failure(sid, "labels", f"{label_rel}:{vid}[{k}]", f"label values {row.tolist()} "
                                            "are not all numbers", "re-download the label sequence; skipped"))
                    continue
                t = lines[clip]
                candidates.append({"sid": sid, "vid": vid, "clip": clip, "row": row, "start": float(s),
                                   "end": float(e), "text": t.text, "split": split, "transcript": rel(tfile)})
    seen = {}
    for cand in candidates:  # two video ids can give one sample id only through the 'v' prefix
        if cand["sid"] in seen:
            raise DatasetError(f"{layout.labels}: videos {seen[cand['sid']]!r} and {cand['vid']!r} both give sample "
                               f"id {cand['sid']!r}; rename one of them.")
        seen[cand["sid"]] = cand["vid"]

    durations: dict[str, tuple[float | None, str | None]] = {}
    rows_by_sid: dict[str, dict] = {}
    crop_jobs: dict[Path, dict] = {}  # video file → {sid: CropTarget | None}
    for cand in candidates:
        sid, vid, s, e = cand["sid"], cand["vid"], cand["start"], cand["end"]
        start = max(s, 0.0)
        if s < 0:
            c["clamped_starts"] += 1
            failures.append(failure(sid, "prepare", f"{label_rel}:{vid}", f"segment starts at {s:.3f} s, before the "
                                    "recording; clamped to 0 (the segment is kept)", "nothing; listed so the clamp "
                                    "is visible"))
        audio = audio_files.get(vid)
        audio_rel, a_start, a_end = None, None, None
        if audio is not None:
            if vid not in durations:
                durations[vid] = _wav_seconds(audio)
            seconds, problem = durations[vid]
            if problem is not None:
                failures.append(failure(sid, "media", rel(audio), problem, "restore the wav from the release; the "
                                        "segment keeps its video only"))
            elif start >= seconds:
                failures.append(failure(sid, "media", rel(audio), f"segment {start:.3f}..{e:.3f} s starts after the "
                                        f"wav ends ({seconds:.3f} s)", "restore the full wav from the release; the "
                                        "segment keeps its video only"))
            else:
                audio_rel, a_start, a_end = rel(audio), start, min(e, seconds)
                if e > seconds + AUDIO_END_SLACK:
                    failures.append(failure(sid, "media", audio_rel, f"segment ends at {e:.3f} s, after the wav "
                                            f"({seconds:.3f} s); audio_end is the wav's end (the segment is kept)",
                                            "restore the full wav from the release"))
        seg_video = segmented.get(f"{vid}_{cand['clip']}")
        job = None
        if video and seg_video is not None:
            job = (seg_video, CropTarget(rate=fps) if fps and CropTarget is not None else None)
        elif video and full.get(vid) is not None and CropTarget is not None:
            job = (full[vid], CropTarget(start=start, end=e, rate=fps))
        no_video = ("no segmented video " f"{vid}_{cand['clip']}.mp4" + (
            "" if full.get(vid) is None else " (cutting full videos needs span support in emotk.media.faces)"))
        if audio_rel is None and job is None:
            c["no_media"] += 1
            failures.append(failure(sid, "media", rel(layout.base), f"no media: no usable audio ({vid}.wav) and "
                                    + (no_video if video else "video not used (-o video=false)"),
                                    "restore Audio/Full/WAV_16000/<vid>.wav or the segment's video; skipped"))
            continue
        if video and job is None:
            failures.append(failure(sid, "media", f"{rel(layout.base)}/Videos", no_video,
                                    "restore the video from the release; the segment keeps its audio and text"))
        row = _row(cand, audio_rel, a_start, a_end, raw_root)
        rows_by_sid[sid] = row
        if job is not None:
            crop_jobs.setdefault(job[0], {})[sid] = job[1]

    notes: list[str] = []
    if crop_jobs:
        det = open_detector(detector, detector_weights)
        faces_dir = Path(out_dir) / "faces"
        for path, targets in progress_bar(list(crop_jobs.items()), progress, "CMU-MOSEI faces", "video"):
            results = crop_video(path, faces_dir, targets, detector=det, face_size=face_size, every=every,
                                 max_carry=max_carry, margin=margin, decoder=decoder, align=align)
            for sid, res in results.items():
                row = rows_by_sid[sid]
                where = rel(path)
                if not res.ok or not res.has_face:
                    why = res.error if not res.ok else (f"no face found in any of {res.n_frames} frames "
                                                        f"(detector {detector})")
                    keep = row["audio"] is not None
                    failures.append(failure(sid, "faces", where, why, "check the video; the segment keeps its audio"
                                            if keep else "check the video or restore the wav; the segment is skipped"))
                    if not keep:
                        del rows_by_sid[sid]
                        c["no_media"] += 1
                    continue
                if res.decode_note:
                    notes.append(f"{sid}: {res.decode_note}")
                row.update({"media_kind": "frames_dir", "media": res.media, "media_root": "workspace",
                            "frame_base": 0, "n_frames": res.n_frames, "fps": res.fps, "video": where,
                            "no_face_frames": res.no_face_frames, "decoder": res.decoder})
    rows = list(rows_by_sid.values())
    for row in rows:
        if row["split"] is None:
            c["rows_outside_folds"] += 1
    c["segments_kept"] = len(rows)
    c["with_faces"] = sum(r["media_kind"] == "frames_dir" for r in rows)
    targets = ORDERS[order]
    return Prepared(
        rows=rows, failures=failures, label_names=targets,
        info={"task": _task(order).__dict__, "order": order, "label_file": str(layout.labels),
              "layout": {k: (rel(v) if v is not None and _inside(v, raw_root) else (str(v) if v else None))
                         for k, v in vars(layout).items()},
              "folds": fold_source, "summary": c, "transcript_lines_skipped": skipped_lines[:50], "notes": notes,
              "subject_folds": "subject = video id (the SDK has no speaker ids): video-disjoint folds",
              "faces": {"video": video, "fps": fps, "detector": detector, "face_size": face_size, "every": every,
                        "max_carry": max_carry, "margin": margin, "align": align}},
    )


def _row(cand: dict, audio_rel, a_start, a_end, raw_root: Path) -> dict:
    vals = cand["row"]
    row = {
        "sample_id": cand["sid"], "subject": cand["vid"], "split": cand["split"], "kind": "utterance",
        "media_kind": "audio", "media": audio_rel, "media_root": "raw", "frame_base": 0, "n_frames": 0, "fps": 0.0,
        "audio": audio_rel, "audio_start": a_start, "audio_end": a_end, "audio_channel": None,
        "text": cand["text"], "video_id": cand["vid"], "clip": cand["clip"],
        "seg_start": cand["start"], "seg_end": cand["end"], "sentiment": float(vals[0]),
    }
    for i, name in enumerate(EMOTIONS, start=1):
        row[name] = int(vals[i] > 0)
    for i, name in enumerate(EMOTIONS, start=1):
        row[f"{name}_intensity"] = float(vals[i])
    row.update({"transcript": cand["transcript"], "video": None, "no_face_frames": None, "decoder": None})
    return row


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _relative(raw_root: Path):
    def rel(p: Path) -> str:
        return p.relative_to(raw_root).as_posix() if _inside(p, raw_root) else str(p)
    return rel


def _task(order: str) -> Task:
    return Task(kind="clip_multilabel", targets=ORDERS[order], metric="wacc", seq_len=128, head="last",
                feature_dim_hint=440)


def _precheck(raw_root: Path, options: dict) -> None:
    if options.get("fps") and CropTarget is None:
        raise DatasetError("-o fps needs frame-rate sampling in face cropping, which this emotk lacks; use fps=0 "
                           "(every frame of each segment).")


def _folds_option(name: str, value) -> None:
    if value is not None and not isinstance(value, str):
        raise DatasetError(f"invalid {name} {value!r}: a path (JSON, or the SDK's cmu_mosei_std_folds.py) or none.")


def _path_option(name: str, value) -> None:
    if value is not None and not isinstance(value, str):
        raise DatasetError(f"invalid {name} {value!r}: expected a file path.")


SPEC = register_dataset(DatasetSpec(
    name="mosei",
    title="CMU-MOSEI",
    layout=LAYOUT,
    splits="official: the SDK's standard video folds (train 2,249 / valid 300 / test 678 videos) → train / "
           "validation / test; -o folds=PATH for others. No speaker ids: subject = video id (video-disjoint folds)",
    task=_task("sdk"),
    prepare=prepare,
    options={
        "labels": _path_option, "folds": _folds_option, "order": choice(*ORDERS), "video": flag,
        "fps": number(float, 0.0), "match_tolerance": number(float, 0.0, 5.0, low_open=True),
        "faces": choice("detect"), **face_crop_options(min_decoded_fraction=None),
    },
    precheck=_precheck,
))
