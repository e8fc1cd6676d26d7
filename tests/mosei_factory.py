"""A CMU-MOSEI miniature in the SDK's raw layout: a real label sequence (HDF5 written here with h5py,
independently of emotk.datasets.csd), real 16 kHz wavs of espeak-ng speech, segmented transcripts,
segmented mp4s with a real face. ``make_mosei`` returns what it wrote so tests compare against it.

Built-in irregularities (video ids: ``aB-3_xY_9`` has '-' and '_', ``81406`` is numeric, ``-qZ_t7``
starts with '-'):
- ``aB-3_xY_9`` clip 0 starts at -0.3 s (clamped to 0, listed, kept); its transcript has clip 5 with no
  label segment;
- ``81406`` has no wav; its last clip has no segmented video either (no media: listed, skipped); its
  transcript has an unparsable line;
- ``-qZ_t7``'s clips 0 and 1 overlap; its label sequence has one extra segment that no transcript line
  matches (listed, skipped).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import soundfile as sf

from media_factory import face_frames, write_video
from speech_factory import speech

VIDEO_IDS = ("aB-3_xY_9", "81406", "-qZ_t7")
SENTENCES = ("i really liked this movie", "the plot was slow", "what a surprise ending",
             "the actors were great", "i would not watch it again")
RATE = 16000
GAP = 0.25


def label_values(v: int, k: int) -> list[float]:
    """``[sentiment, happy, sad, anger, surprise, disgust, fear]`` of video v, clip k: sentiment in
    [-3, 3], intensities in [0, 3] with zeros (absent emotions)."""
    sentiment = round(-3 + ((v * 7 + k * 5) % 13) * 0.5, 4)
    emos = [((v + 2 * k + j) % 4) * (0.6667 if j % 2 else 1.0) for j in range(6)]
    return [sentiment] + [round(e, 4) for e in emos]


def write_csd(path: Path, entries: dict[str, tuple[np.ndarray, np.ndarray]], root: str = "All Labels",
              metadata: dict | None = None) -> Path:
    """A computational sequence in the SDK's group layout (file_ops.write_CSD)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        g = f.create_group(root)
        data = g.create_group("data")
        for vid, (feats, ivals) in entries.items():
            e = data.create_group(vid)
            e.create_dataset("features", data=np.asarray(feats, np.float32))
            e.create_dataset("intervals", data=np.asarray(ivals, np.float64))
        meta = g.create_group("metadata")
        for key, value in (metadata or {"root name": root, "dimension names": ["sentiment", "happy", "sad", "anger",
                                                                              "surprise", "disgust", "fear"]}).items():
            ds = meta.create_dataset(key, (1,), dtype=h5py.special_dtype(vlen=str))
            ds[0] = json.dumps(value)
    return path


def make_mosei(root: Path, videos: int = 3, segments: int = 3, video: bool = True, n_frames: int = 6) -> dict:
    """Write the miniature under ``root`` (``CMU_MOSEI_Labels.csd`` + ``Raw/``); returns
    ``{"segments": {(vid, clip): {...}}, "folds": {...}, "label_file": path}``."""
    root = Path(root)
    raw = root / "Raw"
    entries: dict[str, tuple[list, list]] = {}
    written: dict[tuple[str, int], dict] = {}
    for v, vid in enumerate(VIDEO_IDS[:videos]):
        clips = list(range(segments))
        spans, t = [], 0.0
        pieces = []
        for k in clips:
            y = speech(SENTENCES[(v + k) % len(SENTENCES)], RATE)
            pieces.append((t, y))
            spans.append([round(t, 3), round(t + len(y) / RATE, 3)])
            t += len(y) / RATE + GAP
        if v == 0:
            spans[0][0] = -0.3  # negative start, as some SDK segments
        if v == 2 and segments > 1:
            spans[1][0] = round(spans[0][1] - 0.4, 3)  # overlaps clip 0
        if vid != "81406":
            wav = np.zeros(int(t * RATE) + 1, np.float32)
            for start, y in pieces:
                wav[int(start * RATE):int(start * RATE) + len(y)] += y
            path = raw / "Audio/Full/WAV_16000" / f"{vid}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, wav, RATE, subtype="PCM_16")
        lines = []
        for k, (s, e) in zip(clips, spans):
            text = SENTENCES[(v + k) % len(SENTENCES)]
            lines.append(f"{vid}___{k}___{s:.3f}___{e:.3f}___{text}")
            written[(vid, k)] = {"start": s, "end": e, "values": label_values(v, k), "text": text,
                                 "audio": vid != "81406", "video": video and not (vid == "81406" and k == segments - 1)}
        if v == 0:
            lines.append(f"{vid}___5___40.000___41.000___a line no label segment has")
        if v == 1:
            lines.insert(1, f"{vid}___x___1.0___2.0___this line does not parse")
        tdir = raw / "Transcript/Segmented/Combined"
        tdir.mkdir(parents=True, exist_ok=True)
        (tdir / f"{vid}.txt").write_text("\n".join(lines) + "\n")
        feats = [label_values(v, k) for k in clips]
        # intervals as the label sequence stores them: a hair off the transcript's 3 decimals
        ivals = [[s + 0.0004, e - 0.0003] for s, e in spans]
        if v == 2:
            feats.append(label_values(v, 9))
            ivals.append([50.0, 51.5])  # no transcript line has it
        entries[vid] = (feats, ivals)
        if video:
            for k in clips:
                if written[(vid, k)]["video"]:
                    frames, _ = face_frames(n_frames, seed=v * 10 + k)
                    write_video(raw / "Videos/Segmented/Combined" / f"{vid}_{k}.mp4", frames)
    label_file = write_csd(root / "CMU_MOSEI_Labels.csd",
                          {vid: (np.array(f), np.array(i)) for vid, (f, i) in entries.items()})
    folds = {"train": [VIDEO_IDS[0]], "valid": [VIDEO_IDS[1]] if videos > 1 else [],
             "test": [VIDEO_IDS[2]] if videos > 2 else []}
    (root / "folds.json").write_text(json.dumps(folds))
    return {"segments": written, "folds": folds, "label_file": label_file, "folds_file": root / "folds.json"}
