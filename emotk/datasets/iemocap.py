"""IEMOCAP (Busso et al., 2008): 5 sessions of dyadic dialogs, 10 speakers, one row per utterance.

Raw layout (``--root`` may point at ``IEMOCAP_full_release/`` or the folder above)::

    Session1/ … Session5/
      dialog/EmoEvaluation/<dialog>.txt      '[start - end]<TAB>utt<TAB>code<TAB>[v, a, d]' blocks
      dialog/transcriptions/<dialog>.txt     'utt [start-end]: text'
      dialog/avi/DivX/<dialog>.avi           split-screen video of both actors
      sentences/wav/<dialog>/<utt>.wav       the utterance's audio (16 kHz mono)

Only the ``.txt`` files directly in ``EmoEvaluation/`` are read (its Categorical/, Attribute/,
Self-evaluation/ sub-folders hold single evaluators' votes, not labels); ``._*`` AppleDouble files are
ignored. A transcript line without a timestamp, or whose first token is not an utterance id of its
dialog, is skipped and counted, never assigned to an utterance. The consensus code is mapped by the
``labels`` option (:data:`LABEL_MAPS`); codes outside the map (``xxx`` always) are counted, not rows.

Speaker = session + the F/M letter of the **utterance** suffix (``Ses01F_impro01_M003`` → ``Ses01_M``).
The video half follows MESM's rule: the dialog letter names the actor on the left half, so an utterance
whose letter equals the dialog letter is cut from the left half, else from the right half.
See docs/datasets/iemocap.md.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
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
    flag,
    list_raw_dir,
    number,
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
    CropTarget,
    crop_video,
    open_detector,
)
from emotk.media.video import MIN_DECODED_FRACTION, frame_shortfall

#: Every consensus code of the release except ``xxx`` (no agreement), in the order of docs/datasets/iemocap.md.
CODES = ("neu", "hap", "exc", "sad", "ang", "fru", "fea", "sur", "dis", "oth")

#: Label maps: name → (class names in id order, {raw code: class id}). ``xxx`` is in none.
LABEL_MAPS: dict[str, tuple[tuple[str, ...], dict[str, int]]] = {
    # the common 4 classes, excited merged into happy
    "4class": (("neu", "hap", "ang", "sad"), {"neu": 0, "hap": 1, "exc": 1, "ang": 2, "sad": 3}),
    # MESM's order (src/datasets.py getEmotionDict)
    "6class": (("ang", "exc", "fru", "hap", "neu", "sad"),
               {c: i for i, c in enumerate(("ang", "exc", "fru", "hap", "neu", "sad"))}),
    # Rajan et al. / Yoon et al.'s 7 classes, in the order their README lists them
    "7class": (("ang", "exc", "hap", "sad", "fru", "sur", "neu"),
               {c: i for i, c in enumerate(("ang", "exc", "hap", "sad", "fru", "sur", "neu"))}),
    "full": (CODES, {c: i for i, c in enumerate(CODES)}),
}
DEFAULT_LABELS = "4class"
DEFAULT_FPS = 3.0  # Rajan et al.'s (Yoon et al.'s) video rate

LAYOUT = """IEMOCAP_full_release/          (--root may point here or at its parent)
  Session1/ ... Session5/
    dialog/EmoEvaluation/<dialog>.txt      [start - end]  utt  code  [v, a, d] (+ evaluator lines; sub-folders ignored)
    dialog/transcriptions/<dialog>.txt     utt [start-end]: text
    dialog/avi/DivX/<dialog>.avi           split-screen video (needed unless -o video=false)
    sentences/wav/<dialog>/<utt>.wav       utterance audio"""

SPLITS = ("no official split. Honest protocol: leave-one-session-out (`emotk split --by session --folds 5`); "
          "`--by speaker --folds 10` is leave-one-speaker-out. Random utterance folds put a speaker in train "
          "and test (MESM's split does): they leak.")

_SESSION_DIR = re.compile(r"Session(\d+)$")
_UTT = re.compile(r"(Ses\d{2})([FM])_(\S+)_([FM])(\d{3})$")
_EVAL = re.compile(r"\[\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*\]\s+(\S+)\s+(\S+)\s+\[([^\]]*)\]\s*$")
_TRANS = re.compile(r"(\S+)\s+\[\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*\]\s*:\s?(.*)$")


def task_for(labels: str) -> Task:
    """The task of a label map: one class id per utterance, scored by UA (mean per-class recall)."""
    return Task(kind="clip_classification", targets=("label",), metric="ua", seq_len=32, head="logits",
                n_classes=len(LABEL_MAPS[labels][0]), feature_dim_hint=0)


@dataclass
class Utterance:
    utt: str
    session: str
    dialog: str
    start: float
    end: float
    code: str
    vad: tuple[float, float, float]
    where: str  # file:line of its EmoEvaluation entry

    @property
    def letter(self) -> str:
        return _UTT.match(self.utt).group(4)

    @property
    def speaker(self) -> str:
        return f"{self.session}_{self.letter}"

    @property
    def half(self) -> str:
        """MESM's use_left: the dialog's letter names the actor on the left half of the video."""
        return "left" if self.dialog[5] == self.letter else "right"


def _visible(p: Path) -> bool:
    return not p.name.startswith(".")  # hidden files and AppleDouble "._x" companions


def _sessions(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in list_raw_dir(folder, "folder") if p.is_dir() and _SESSION_DIR.match(p.name)]


def find_base(raw_root: Path) -> Path:
    """The folder holding Session1/ … Session5/: the root itself or one sub-folder of it."""
    if _sessions(raw_root):
        return raw_root
    for child in list_raw_dir(raw_root, "raw root"):
        if child.is_dir() and _visible(child) and _sessions(child):
            return child
    raise DatasetError(f"{raw_root} does not look like IEMOCAP: no Session1/ … Session5/ folders in it or in a "
                       f"sub-folder. Point --root at IEMOCAP_full_release. Expected layout:\n{LAYOUT}")


def parse_evaluation(path: Path, rel: str) -> tuple[list[tuple[int, str, float, float, str, tuple]], list[dict]]:
    """Consensus entries of an EmoEvaluation file and failures for header-like lines that do not parse.

    Returns ``[(line, utt, start, end, code, (v, a, d))]``; evaluator lines (``C-E1:``, ``A-E3:``), the
    ``%`` header and blank lines are not entries.
    """
    entries, failures = [], []
    for no, line in enumerate(read_raw_text(path, "EmoEvaluation file", errors="replace").splitlines(), start=1):
        text = line.strip()
        if not text.startswith("["):
            continue
        m = _EVAL.fullmatch(text)
        vad = None
        if m:
            try:
                vad = tuple(float(v) for v in m.group(5).split(","))
            except ValueError:
                vad = None
        if not m or vad is None or len(vad) != 3:
            token = (text.split() + [""])[3] if len(text.split()) > 3 else path.stem
            failures.append(failure(token, "labels", f"{rel}:{no}", f"malformed EmoEvaluation entry {text[:80]!r}",
                                    "restore the file from the release; the utterance is skipped"))
            continue
        entries.append((no, m.group(3), float(m.group(1)), float(m.group(2)), m.group(4), vad))
    return entries, failures


def parse_transcription(path: Path, dialog: str) -> tuple[dict[str, str], list[tuple[int, str]]]:
    """``{utterance id: text}`` of a transcription file and the skipped ``(line, text)`` pairs.

    A line is an utterance's when its first token is an utterance id of ``dialog`` and a
    ``[start-end]:`` timestamp follows; any other non-blank line is skipped (``M: [BREATHING]``,
    ``Ses01F_script01_1_MXX0 …``).
    """
    texts, skipped = {}, []
    for no, line in enumerate(read_raw_text(path, "transcription file", errors="replace").splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        m = _TRANS.fullmatch(text)
        if not m or not _UTT.fullmatch(m.group(1)) or not m.group(1).startswith(dialog + "_"):
            skipped.append((no, text))
            continue
        texts[m.group(1)] = m.group(4).strip()
    return texts, skipped


def _every(name: str, value) -> None:
    if value is not None:
        number(int, 1)(name, value)


def prepare(
    raw_root: Path,
    out_dir: Path,
    *,
    labels: str = DEFAULT_LABELS,
    video: bool = True,
    fps: float = DEFAULT_FPS,
    detector: str = DEFAULT_DETECTOR,
    face_size: int = DEFAULT_FACE_SIZE,
    every: int | None = None,
    max_carry: int = DEFAULT_MAX_CARRY,
    margin: float = DEFAULT_MARGIN,
    decoder: str = "auto",
    min_decoded_fraction: float = MIN_DECODED_FRACTION,
    align: bool = False,
    detector_weights: str | None = None,
    progress: bool = True,
    **other,
) -> Prepared:
    """Read every session's labels, transcripts and sentence wavs; cut each utterance's face crops.

    Options: ``labels`` (4class | 6class | 7class | full), ``video`` (false: audio + text only),
    ``fps`` (crop rate; 0 = every frame of the video), the face options of the other video datasets
    (``detector``, ``face_size``, ``every`` (default 1 at a rate below the video's, else 5),
    ``max_carry``, ``margin``, ``decoder``, ``align``, ``detector_weights``), ``min_decoded_fraction``
    (an utterance keeping less than this share of its span's frames gets no crops), ``progress``.
    """
    check_options(SPEC, dict(labels=labels, video=video, fps=fps, detector=detector, face_size=face_size, every=every,
                             max_carry=max_carry, margin=margin, decoder=decoder,
                             min_decoded_fraction=min_decoded_fraction, align=align,
                             detector_weights=detector_weights, progress=progress, **other))
    raw_root = Path(raw_root)
    base = find_base(raw_root)
    names, code_map = LABEL_MAPS[labels]
    failures: list[dict] = []
    notes: list[str] = []
    counts = Counter()
    outside: Counter = Counter()
    utts: list[Utterance] = []
    texts: dict[str, str] = {}
    seen: dict[str, str] = {}
    dialogs: dict[str, Path] = {}  # dialog → its session folder
    sessions = sorted(_sessions(base), key=lambda p: int(_SESSION_DIR.match(p.name).group(1)))
    for sdir in sessions:
        session = f"Ses{int(_SESSION_DIR.match(sdir.name).group(1)):02d}"
        eval_dir = sdir / "dialog" / "EmoEvaluation"
        trans_dir = sdir / "dialog" / "transcriptions"
        for folder in (eval_dir, trans_dir, sdir / "sentences" / "wav"):
            if not folder.is_dir():
                raise DatasetError(f"{folder} is missing: every IEMOCAP session has it. Restore "
                                   f"{folder.relative_to(base)} from the release. Expected layout:\n{LAYOUT}")
        eval_files = [p for p in list_raw_dir(eval_dir, "EmoEvaluation folder")
                      if p.is_file() and _visible(p) and p.suffix == ".txt"]
        if not eval_files:
            raise DatasetError(f"{eval_dir} holds no <dialog>.txt label file; restore it from the release.")
        for ef in eval_files:
            dialog = ef.stem
            dialogs[dialog] = sdir
            rel = ef.relative_to(raw_root).as_posix()
            entries, bad = parse_evaluation(ef, rel)
            failures.extend(bad)
            counts["malformed_label_lines"] += len(bad)
            tf = trans_dir / f"{dialog}.txt"
            if tf.is_file():
                dialog_texts, skipped = parse_transcription(tf, dialog)
                texts.update(dialog_texts)
                counts["skipped_transcript_lines"] += len(skipped)
            else:
                failures.append(failure(dialog, "text", tf.relative_to(raw_root).as_posix(),
                                        "no transcription file for this dialog; its utterances get an empty text",
                                        "restore the file from the release"))
            for no, utt, start, end, code, vad in entries:
                where = f"{rel}:{no}"
                m = _UTT.fullmatch(utt)
                problem = sample_id_problem(utt)
                if problem:
                    failures.append(bad_sample_id(utt, "labels", where, problem))
                    continue
                if not m or not utt.startswith(dialog + "_") or m.group(1) != session:
                    failures.append(failure(utt, "labels", where,
                                            f"{utt!r} is not an utterance id of dialog {dialog} in {sdir.name} "
                                            "(expected <dialog>_F000 / _M000)",
                                            "restore the file from the release; the utterance is skipped"))
                    continue
                if utt in seen:
                    failures.append(failure(utt, "labels", where, f"utterance also labelled at {seen[utt]}",
                                            "keep one entry per utterance; the second is skipped"))
                    continue
                seen[utt] = where
                counts["labelled"] += 1
                if code not in code_map:
                    outside[code] += 1
                    continue
                utts.append(Utterance(utt, session, dialog, start, end, code, vad, where))
    if not sessions:
        raise DatasetError(f"no Session folder under {base}. Expected layout:\n{LAYOUT}")

    rows: dict[str, dict] = {}
    for u in utts:
        wav = dialogs[u.dialog] / "sentences" / "wav" / u.dialog / f"{u.utt}.wav"
        wav_rel = wav.relative_to(raw_root).as_posix()
        if not wav.is_file():
            counts["missing_wavs"] += 1
            failures.append(failure(u.utt, "audio", wav_rel, "the sentence wav is missing",
                                    "restore it from the release; the utterance is skipped"))
            continue
        if u.utt not in texts:
            counts["no_transcript"] += 1
        label = code_map[u.code]
        rows[u.utt] = {
            "sample_id": u.utt, "subject": u.speaker, "split": None, "kind": "utterance",
            "media": wav_rel, "media_root": "raw", "media_kind": "audio", "frame_base": 0, "n_frames": 0, "fps": 0.0,
            "audio": wav_rel, "audio_start": None, "audio_end": None, "audio_channel": None,
            "text": texts.get(u.utt, ""),
            "session": u.session, "speaker": u.speaker, "dialog": u.dialog, "label": label, "label_name": names[label],
            "emotion_code": u.code, "valence": u.vad[0], "arousal": u.vad[1], "dominance": u.vad[2],
            "utt_start": u.start, "utt_end": u.end, "video_half": u.half, "video": None, "no_face_frames": None,
        }

    faces_info = None
    if video and rows:
        faces_info = {"detector": detector, "face_size": face_size, "every": every, "max_carry": max_carry,
                      "margin": margin, "align": align, "fps": fps, "half_rule": "left when the dialog letter "
                      "equals the utterance's speaker letter (MESM use_left), else right"}
        _crop_faces(raw_root, Path(out_dir) / "faces", rows, utts, dialogs, failures, notes, counts, progress,
                    detector=detector, detector_weights=detector_weights, face_size=face_size, every=every,
                    max_carry=max_carry, margin=margin, decoder=decoder, align=align, fps=fps,
                    min_decoded_fraction=min_decoded_fraction, faces_info=faces_info)

    per_class = Counter(r["label_name"] for r in rows.values())
    summary = {
        "labels": labels, "sessions": len(sessions), "dialogs": len(dialogs), "utterances": len(rows),
        "per_class": {n: per_class.get(n, 0) for n in names},
        "outside_map": dict(sorted(outside.items())), "outside_map_total": sum(outside.values()),
        "skipped_transcript_lines": counts["skipped_transcript_lines"], "missing_wavs": counts["missing_wavs"],
        "malformed_label_lines": counts["malformed_label_lines"], "no_transcript": counts["no_transcript"],
    }
    if video:
        summary["with_faces"] = counts["with_faces"]
        summary["without_faces"] = len(rows) - counts["with_faces"]
    return Prepared(
        rows=list(rows.values()), failures=failures, label_names=(),
        info={"task": task_for(labels).__dict__, "labels": labels, "classes": list(names),
              "label_map": {c: code_map[c] for c in CODES if c in code_map}, "summary": summary,
              "faces": faces_info, "video": bool(video), "notes": notes},
    )


def _crop_faces(raw_root, faces_dir, rows, utts, dialogs, failures, notes, counts, progress, *, detector,
                detector_weights, face_size, every, max_carry, margin, decoder, align, fps, min_decoded_fraction,
                faces_info) -> None:
    """Crop every row's face track from its dialog video (one decode per dialog), updating the rows."""
    by_dialog: dict[str, list[Utterance]] = {}
    for u in utts:
        if u.utt in rows:
            by_dialog.setdefault(u.dialog, []).append(u)
    det = open_detector(detector, detector_weights)
    faces_info["every"] = every = every if every is not None else (1 if fps > 0 else DEFAULT_EVERY)
    for dialog in progress_bar(sorted(by_dialog), progress, "IEMOCAP faces", "dialog"):
        group = by_dialog[dialog]
        avi = dialogs[dialog] / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
        rel = avi.relative_to(raw_root).as_posix()
        if not avi.is_file():
            for u in group:
                failures.append(failure(u.utt, "media", rel, "the dialog video is missing; the utterance keeps its "
                                        "audio and text", "restore the video from the release (or -o video=false)"))
            continue
        targets = {u.utt: CropTarget(start=u.start, end=u.end, rate=fps, half=u.half) for u in group}
        results = crop_video(avi, faces_dir, targets, detector=det, face_size=face_size, every=every,
                             max_carry=max_carry, margin=margin, decoder=decoder, align=align)
        for u in group:
            res = results[u.utt]
            if not res.ok:
                failures.append(failure(u.utt, "media", rel, f"{res.error}; the utterance keeps its audio and text",
                                        "check the utterance's times against the video, or restore the video"))
                continue
            short = frame_shortfall(res.n_frames, {"the utterance's span": res.n_frames_reported}, min_decoded_fraction)
            if short is not None:
                failures.append(failure(u.utt, "media", rel, short.describe(),
                                        "restore the video from the release (a truncated copy)"))
                if short.exclude:
                    continue
            if not res.has_face:
                failures.append(failure(u.utt, "faces", rel,
                                        f"no face found in the {u.half} half in any of {res.n_frames} frames "
                                        f"(detector {detector}); the utterance keeps its audio and text",
                                        "try another --detector (see docs/faces.md)"))
                continue
            counts["with_faces"] += 1
            rows[u.utt].update({"media": res.media, "media_root": "workspace", "media_kind": "frames_dir",
                                "frame_base": 0, "n_frames": res.n_frames, "fps": res.fps, "video": rel,
                                "no_face_frames": res.no_face_frames})


SPEC = register_dataset(DatasetSpec(
    name="iemocap",
    title="IEMOCAP",
    layout=LAYOUT,
    splits=SPLITS,
    task=task_for(DEFAULT_LABELS),
    prepare=prepare,
    options={"labels": choice(*LABEL_MAPS), "video": flag, "fps": number(float, 0.0),
             **face_crop_options(every=_every)},
))
