"""AFEW-VA (Kossaifi et al., IVC 2017): 600 film clips, per-frame valence/arousal and 68 landmarks.

Raw layout::

    AFEW-VA/                     (--root may point here or at its parent; zip parts 01/… one level down are found too)
      001/00000.png 00001.png …  full frames, 0-based
      001/001.json               {"actor": …, "video_id": "001", "frames": {"00000": {"valence": int,
                                   "arousal": int, "landmarks": [[x, y] × 68]}, …}}

Faces are cropped from the landmarks (no detector): square around the landmark box, ``margin`` of its
side added on every side, ``face_size`` pixels; a frame without landmarks takes the last landmark box
up to ``max_carry`` frames, else it has no crop. ``subject`` is the ``actor`` field.

Labels (``labels.h5``, per frame, NaN where the JSON has no entry for a frame):
``valence``, ``arousal`` (integers −10…10 as float), ``mood`` (the clip's mood class, repeated on every
labelled frame), ``valence_bin20``, ``arousal_bin20`` (the released NAC-TCN code's 20 classes).
The manifest carries the per-clip ``mood`` (0 neutral, 1 positive, 2 negative), ``valence_mean`` and
``arousal_mean``. Mood rule (documented in docs/datasets/afewva.md): the sign of the clip's mean
valence, neutral when ``|mean| <= mood_neutral_band`` (default 0); ``mood_rule="majority"`` uses the
most frequent per-frame sign instead.

A landmark box that cannot give a face crop — its side below ``MIN_FACE_SIDE`` (16) source pixels,
or less than half of its square crop inside the image (landmarks outside the frame, a 1×1 image) —
is no face: that frame gets no crop and a row in failures.csv (stage ``faces``, the PNG named), and
a frame image that cannot be decoded is a row too (stage ``media``). See emotk.media.faces.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from emotk.datasets.base import (
    DatasetSpec,
    Prepared,
    Task,
    check_options,
    choice,
    failure,
    list_raw_dir,
    number,
    read_raw_text,
    register_dataset,
)
from emotk.errors import DatasetError
from emotk.media.faces import (
    DEFAULT_FACE_SIZE,
    DEFAULT_MARGIN,
    DEFAULT_MAX_CARRY,
    UNREADABLE_IMAGE,
    box_from_landmarks,
    crop_frames,
)

LABEL_NAMES = ("valence", "arousal", "mood", "valence_bin20", "arousal_bin20")
MOOD_CLASSES = ("neutral", "positive", "negative")  # class ids 0, 1, 2 (the mood authors' code order)
MOOD_RULES = ("mean", "majority")
#: Per clip and kind, at most this many frames get their own failures.csv row (a summary row counts all).
FRAME_DEFECTS_LISTED = 20

LAYOUT = """AFEW-VA/                     (--root may point here or at its parent)
  001/00000.png 00001.png ...  full frames, 0-based, 5 digits
  001/001.json                 actor, video_id, frames{"00000": {valence, arousal, landmarks[68][2]}}
  002/ ... 600/"""


def bin20(values: np.ndarray) -> np.ndarray:
    """−10…10 (21 levels) → 20 classes: class k ↔ value k−10 for k < 19, class 19 ↔ {9, 10}.

    The released NAC-TCN code uses 20-way heads without saying how 21 levels map to 20; merging the
    two most positive levels keeps every other level its own class. NaN stays NaN.
    """
    v = np.asarray(values, np.float32)
    out = np.clip(np.round(v) + 10, 0, 19)
    return np.where(np.isfinite(v), out, np.nan).astype(np.float32)


def mood_of(valence: np.ndarray, rule: str = "mean", neutral_band: float = 0.0) -> int | None:
    """Mood class of a clip from its per-frame valence (NaN ignored): 0 neutral, 1 positive, 2 negative."""
    v = np.asarray(valence, np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    if rule == "mean":
        m = float(v.mean())
        return 0 if abs(m) <= neutral_band else (1 if m > 0 else 2)
    if rule == "majority":
        pos, neg = int((v > neutral_band).sum()), int((v < -neutral_band).sum())
        neu = len(v) - pos - neg
        top = max(pos, neg, neu)
        if [pos, neg, neu].count(top) > 1:
            return 0  # a tie is neutral
        return 1 if pos == top else (2 if neg == top else 0)
    raise ValueError(f"unknown mood rule {rule!r}; choose one of {MOOD_RULES}")


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")


def find_clips(raw_root: Path) -> list[Path]:
    """Clip folders (all-digit names) in the root, or one or two levels below it."""
    def subdirs(folder: Path) -> list[Path]:
        return [p for p in list_raw_dir(folder, "folder") if p.is_dir() and _visible(p)]

    def clips_in(folder: Path) -> list[Path]:
        return [p for p in subdirs(folder) if p.name.isdigit()]

    found = clips_in(raw_root)
    if found:
        return found
    for child in subdirs(raw_root):
        found.extend(clips_in(child))
    if found:
        return sorted(found, key=lambda p: (p.name, str(p)))
    for child in subdirs(raw_root):
        for grand in subdirs(child):
            found.extend(clips_in(grand))
    return sorted(found, key=lambda p: (p.name, str(p)))


def _frame_files(clip: Path) -> dict[int, Path]:
    out = {}
    for p in list_raw_dir(clip, "clip folder"):
        if p.is_file() and _visible(p) and p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.stem.isdigit():
            out[int(p.stem)] = p
    return out


def _json_file(clip: Path) -> Path | None:
    exact = clip / f"{clip.name}.json"
    if exact.is_file():
        return exact
    cands = [p for p in clip.glob("*.json") if _visible(p)]
    return cands[0] if len(cands) == 1 else None


def _read_rgb(path: Path):
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def prepare(
    raw_root: Path,
    out_dir: Path,
    *,
    face_size: int = DEFAULT_FACE_SIZE,
    max_carry: int = DEFAULT_MAX_CARRY,
    margin: float = DEFAULT_MARGIN,
    mood_rule: str = "mean",
    mood_neutral_band: float = 0.0,
    fps: float = 25.0,
    detector: str = "landmarks",
    faces: str = "landmarks",
    progress: bool = True,
    **other,
) -> Prepared:
    """Read every clip folder, crop faces from landmarks, return manifest rows and per-frame labels.

    Options: ``face_size``, ``max_carry``, ``margin`` (crops), ``mood_rule`` (mean | majority),
    ``mood_neutral_band`` (valence units, −10…10 scale), ``fps`` (nominal; the release has frames,
    not timing), ``progress``. ``detector`` / ``faces`` accept only ``landmarks`` (the default).
    """
    check_options(SPEC, dict(face_size=face_size, max_carry=max_carry, margin=margin, mood_rule=mood_rule,
                             mood_neutral_band=mood_neutral_band, fps=fps, detector=detector, faces=faces,
                             progress=progress, **other))
    raw_root = Path(raw_root)
    clips = find_clips(raw_root)
    if not clips:
        raise DatasetError(
            f"no AFEW-VA clip folders (001/, 002/, …) found in {raw_root} or the folders below it. "
            f"Point --root at the unpacked release. Expected layout:\n{LAYOUT}"
        )
    faces_dir = Path(out_dir) / "faces"
    rows: list[dict] = []
    labels: dict[str, np.ndarray] = {}
    failures: list[dict] = []
    notes: list[str] = []
    seen: dict[str, Path] = {}
    iterator = clips
    if progress:
        try:
            from tqdm import tqdm

            iterator = tqdm(clips, desc="AFEW-VA faces", unit="clip")
        except ImportError:
            pass
    for clip in iterator:
        sid = clip.name
        rel = clip.relative_to(raw_root).as_posix()
        if sid in seen:
            failures.append(failure(sid, "prepare", rel, f"clip id also found at {seen[sid].relative_to(raw_root)}",
                                    "keep one copy of each clip folder under --root"))
            continue
        seen[sid] = clip
        jf = _json_file(clip)
        if jf is None:
            failures.append(failure(sid, "labels", rel, f"no {sid}.json annotation file in the clip folder",
                                    "restore the JSON from the AFEW-VA release"))
            continue
        text = read_raw_text(jf, "annotation file", errors="replace")  # unreadable: RawFileError, stops prepare
        try:
            meta = json.loads(text)
            frames_meta = meta["frames"]
            if not isinstance(frames_meta, dict):
                raise TypeError("'frames' is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            failures.append(failure(sid, "labels", jf.relative_to(raw_root).as_posix(), f"unreadable annotation: {exc}",
                                    "restore the JSON from the AFEW-VA release"))
            continue
        files = _frame_files(clip)
        if not files:
            failures.append(failure(sid, "media", rel, "no frame images (NNNNN.png) in the clip folder",
                                    "restore the frames from the AFEW-VA release"))
            continue
        n = max(files) + 1
        lab = np.full((n, len(LABEL_NAMES)), np.nan, np.float32)
        boxes: dict[int, np.ndarray] = {}
        beyond, bad_values, bad_landmarks = [], [], []
        for key, entry in frames_meta.items():
            try:
                t = int(key)
            except (TypeError, ValueError):
                bad_values.append(str(key))
                continue
            if t < 0 or t >= n:
                beyond.append(t)
                continue
            if not isinstance(entry, dict):
                bad_values.append(str(key))
                continue
            for j, name in enumerate(("valence", "arousal")):
                try:
                    v = float(entry[name])
                    if not -10 <= v <= 10:
                        raise ValueError
                    lab[t, j] = v
                except (KeyError, TypeError, ValueError):
                    bad_values.append(f"{key}.{name}")
            box = box_from_landmarks(entry.get("landmarks"))
            if box is None:
                bad_landmarks.append(t)
            else:
                boxes[t] = box
        unlabelled = [t for t in range(n) if np.isnan(lab[t, 0]) and np.isnan(lab[t, 1])]
        missing_files = [t for t in range(n) if t not in files]
        if len(unlabelled) == n:
            failures.append(failure(sid, "labels", jf.relative_to(raw_root).as_posix(),
                                    f"no frame of the {n} has a valence/arousal entry", "restore the JSON from the release"))
            continue
        mood = mood_of(lab[:, 0], mood_rule, mood_neutral_band)
        labelled = np.isfinite(lab[:, 0])
        lab[labelled, 2] = np.nan if mood is None else mood
        lab[:, 3] = bin20(lab[:, 0])
        lab[:, 4] = bin20(lab[:, 1])
        if unlabelled:
            notes.append(f"{sid}: {len(unlabelled)} of {n} frames have no JSON entry (labels NaN): {_short_list(unlabelled)}")
        if missing_files:
            notes.append(f"{sid}: frame images missing (no crop): {_short_list(missing_files)}")
        if beyond:
            notes.append(f"{sid}: JSON entries beyond the last frame image ignored: {_short_list(sorted(beyond))}")
        if bad_values:
            notes.append(f"{sid}: malformed valence/arousal values set to NaN: {bad_values[:10]}")
        if bad_landmarks:
            notes.append(f"{sid}: frames with missing/malformed landmarks (box carried): {_short_list(bad_landmarks)}")

        def frames_iter():
            for t in sorted(files):
                yield t, _read_rgb(files[t]), boxes.get(t)

        source = {"json": jf.name, "json_size": jf.stat().st_size, "n_images": len(files)}
        res = crop_frames(frames_iter(), faces_dir, sid, n, face_size=face_size, max_carry=max_carry, margin=margin,
                          fps=fps, source=source)
        bad_rows = _frame_rows(sid, clip, raw_root, files, res.rejected_boxes)  # also from a reused crop.json
        if not res.has_face:
            first = f" (e.g. frame {res.rejected_boxes[0][0]:05d}: {res.rejected_boxes[0][1]})" if res.rejected_boxes else ""
            failures.append(failure(sid, "faces", rel, f"no frame of {n} has usable landmarks for a face crop{first}",
                                    "restore the frames and the JSON (68 landmarks per frame) from the release"))
            continue
        failures.extend(bad_rows)
        actor = meta.get("actor")
        actor = str(actor).strip() if actor not in (None, "") else ""
        if not actor:
            notes.append(f"{sid}: no 'actor' in the JSON; subject = sample id")
        rows.append({
            "sample_id": sid, "subject": actor or sid, "split": None, "kind": "video",
            "media": res.media, "media_root": "workspace", "media_kind": "frames_dir", "frame_base": 0,
            "n_frames": n, "fps": float(fps),
            "mood": mood, "valence_mean": _mean(lab[:, 0]), "arousal_mean": _mean(lab[:, 1]),
            "source": rel, "no_face_frames": res.no_face_frames, "unlabelled_frames": len(unlabelled),
        })
        labels[sid] = lab
    return Prepared(
        rows=rows, frame_labels=labels, label_names=LABEL_NAMES, failures=failures,
        info={"notes": notes, "mood_rule": mood_rule, "mood_neutral_band": mood_neutral_band,
              "mood_classes": list(MOOD_CLASSES), "bin20": "class k = value k-10 for k<19; class 19 = {9, 10}",
              "fps": f"{fps} (nominal: the release ships frames, not timing)",
              "faces": {"detector": "landmarks", "face_size": face_size, "max_carry": max_carry, "margin": margin}},
    )


def _frame_rows(sid: str, clip: Path, raw_root: Path, files: dict[int, Path], rejected_boxes: list) -> list[dict]:
    """failures.csv rows for frames without a face crop because of their input: an image that cannot be
    decoded, or a landmark box outside the image / too small (one row per frame, the first
    :data:`FRAME_DEFECTS_LISTED` of each kind, then a summary row)."""
    rows = []
    unreadable = [t for t, why in rejected_boxes if why == UNREADABLE_IMAGE]
    rejected = [(t, why) for t, why in rejected_boxes if why != UNREADABLE_IMAGE]

    def rel(t: int) -> str:
        path = files.get(t)
        return (path.relative_to(raw_root) if path is not None else clip.relative_to(raw_root) / f"{t:05d}").as_posix()

    for t in unreadable[:FRAME_DEFECTS_LISTED]:
        rows.append(failure(sid, "media", rel(t), f"frame {t:05d}: the image cannot be decoded; the frame has no crop",
                            "restore the frame image from the release"))
    for t, why in rejected[:FRAME_DEFECTS_LISTED]:
        rows.append(failure(sid, "faces", rel(t), f"frame {t:05d}: no face crop: {why}",
                            "nothing (the frame is masked out); check the frame's landmarks if many frames are listed"))
    parts = [f"{len(x)} {what}" for x, what in ((unreadable, "unreadable frame images"),
                                                 (rejected, "landmark boxes outside the image or too small")) if x]
    if len(unreadable) > FRAME_DEFECTS_LISTED or len(rejected) > FRAME_DEFECTS_LISTED:
        rows.append(failure(sid, "faces", clip.relative_to(raw_root).as_posix(),
                            f"{'; '.join(parts)} (the first {FRAME_DEFECTS_LISTED} of each are listed)",
                            "those frames have no crop and are masked out"))
    return rows


def _mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def _short_list(xs: list[int], k: int = 10) -> str:
    s = ", ".join(f"{x:05d}" for x in xs[:k])
    return s + (f", … ({len(xs)} in all)" if len(xs) > k else "")


SPEC = register_dataset(DatasetSpec(
    name="afewva",
    title="AFEW-VA",
    layout=LAYOUT,
    splits="no official split; group folds by actor (`emotk split --by subject`)",
    task=Task(kind="clip_classification", targets=("mood",), metric="acc", seq_len=32, head="last", n_classes=3,
              feature_dim_hint=440),
    prepare=prepare,
    options={
        "face_size": number(int, 8), "max_carry": number(int, 0), "margin": number(float, 0.0, 2.0),
        "mood_rule": choice(*MOOD_RULES), "mood_neutral_band": number(float, 0.0, 10.0),
        "fps": number(float, 0.0, 1000.0, low_open=True), "detector": choice("landmarks"),
        "faces": choice("landmarks", "provided"),
    },
))
