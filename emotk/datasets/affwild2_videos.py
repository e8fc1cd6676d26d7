"""AffWild2 face crops made by emotk from the raw videos (``batch*/``), for when ``cropped_aligned/``
is absent or ``faces="detect"`` is asked for. The AffWild2 reader (emotk.datasets.affwild2) calls
:func:`crop_tracks`; this module registers no dataset.

Track ↔ video: a track ``X`` is the video ``X.mp4`` / ``X.avi`` found by stem in any ``batch*/``
folder (``raw_video/`` of older releases too); a track ``X_left`` / ``X_right`` is the video ``X``
with the left-most / right-most face. Both sides of one video are cropped in one decode. Hidden and
AppleDouble (``._x``) files are ignored. Crops: ``<out_dir>/faces/<track>/NNNNN.jpg``, **0-based**
(frame_base 0, unlike ABAW's 1-based ``cropped_aligned``).
"""

from __future__ import annotations

from pathlib import Path

from emotk.datasets.base import failure
from emotk.media.faces import (
    DEFAULT_DETECTOR,
    DEFAULT_EVERY,
    DEFAULT_FACE_SIZE,
    DEFAULT_MARGIN,
    DEFAULT_MAX_CARRY,
    crop_video,
    open_detector,
)

VIDEO_SUFFIXES = (".mp4", ".avi")
SIDES = {"_left": "left", "_right": "right"}


def video_folders(raw_root: Path) -> list[Path]:
    raw_root = Path(raw_root)
    return sorted(p for p in raw_root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p.name.lower().startswith("batch") or p.name == "raw_video"))


def find_videos(raw_root: Path) -> tuple[dict[str, Path], list[str]]:
    """``{stem: path}`` of every video in the batch folders, and notes on duplicate stems.

    A stem found twice (two batch folders, or .mp4 and .avi) keeps the first in sorted folder order,
    .mp4 before .avi; the note names both.
    """
    videos: dict[str, Path] = {}
    notes: list[str] = []
    for folder in video_folders(raw_root):
        files = sorted((p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                        and p.suffix.lower() in VIDEO_SUFFIXES),
                       key=lambda p: (p.stem, VIDEO_SUFFIXES.index(p.suffix.lower()), str(p)))
        for p in files:
            if p.stem in videos:
                notes.append(f"video {p.stem}: {videos[p.stem].relative_to(raw_root)} used, "
                             f"{p.relative_to(raw_root)} ignored")
                continue
            videos[p.stem] = p
    return videos, notes


def video_for_track(track: str, videos: dict[str, Path]) -> tuple[Path, str | None] | None:
    """The video and side (None, "left", "right") of an annotation track, or None if not found."""
    if track in videos:
        return videos[track], None
    for suffix, side in SIDES.items():
        if track.endswith(suffix) and track[: -len(suffix)] in videos:
            return videos[track[: -len(suffix)]], side
    return None


def crop_tracks(
    raw_root: Path,
    out_dir: Path,
    tracks: list[str],
    *,
    detector: str = DEFAULT_DETECTOR,
    face_size: int = DEFAULT_FACE_SIZE,
    every: int = DEFAULT_EVERY,
    max_carry: int = DEFAULT_MAX_CARRY,
    margin: float = DEFAULT_MARGIN,
    decoder: str = "auto",
    align: bool = False,
    detector_weights: str | None = None,
    progress: bool = False,
) -> dict[str, dict]:
    """Crop faces for AffWild2 annotation tracks from the raw videos.

    Returns ``{track: result}`` where result is either a success dict — ``media`` ("faces/<track>",
    relative to ``out_dir``), ``media_root`` ("workspace"), ``media_kind`` ("frames_dir"),
    ``frame_base`` (0), ``n_frames`` (decoded frames), ``fps``, ``decoder``, ``no_face_frames``,
    ``n_frames_reported``, ``decode_note`` (None, or why decoding stopped early / count mismatch),
    ``source`` (video path relative to raw_root) — or a failure dict (``emotk.datasets.failure``: has
    a ``reason`` key) for a missing or unreadable video or a video without any face.
    Already-complete crops with the same options are reused, so a rerun only does what is missing.
    """
    raw_root, out_dir = Path(raw_root), Path(out_dir)
    videos, _ = find_videos(raw_root)
    by_video: dict[Path, dict[str, str | None]] = {}
    results: dict[str, dict] = {}
    for track in tracks:
        hit = video_for_track(track, videos)
        if hit is None:
            results[track] = failure(
                track, "faces", raw_root / "batch*",
                f"no video {track}.mp4/.avi (or, for a _left/_right track, the video without the suffix) in "
                f"{', '.join(p.name + '/' for p in video_folders(raw_root)) or 'any batch*/ folder'}",
                "add the raw video to a batch*/ folder, or use the provided cropped_aligned/ crops",
            )
            continue
        video, side = hit
        by_video.setdefault(video, {})[track] = side
    items = list(by_video.items())
    if progress:
        try:
            from tqdm import tqdm

            items = tqdm(items, desc="AffWild2 faces", unit="video")
        except ImportError:
            pass
    det = open_detector(detector, detector_weights) if by_video else None  # one instance for all videos
    for video, targets in items:
        rel = video.relative_to(raw_root).as_posix()
        out = crop_video(video, out_dir / "faces", targets, detector=det, face_size=face_size, every=every,
                         max_carry=max_carry, margin=margin, decoder=decoder, align=align)
        for track, res in out.items():
            if not res.ok:
                results[track] = failure(track, "faces", rel, res.error, "re-download or re-encode the video (see docs/faces.md)")
            elif not res.has_face:
                results[track] = failure(
                    track, "faces", rel, f"no face found in any of {res.n_frames} frames (detector {detector}"
                    + (f", {targets[track]} side" if targets[track] else "") + ")",
                    "check the video; try another --detector, or use the provided cropped_aligned/ crops",
                )
            else:
                results[track] = {
                    "media": res.media, "media_root": "workspace", "media_kind": "frames_dir", "frame_base": 0,
                    "n_frames": res.n_frames, "fps": res.fps, "decoder": res.decoder,
                    "no_face_frames": res.no_face_frames, "n_frames_reported": res.n_frames_reported,
                    "decode_note": res.decode_note, "source": rel,
                }
    return {track: results[track] for track in tracks}
