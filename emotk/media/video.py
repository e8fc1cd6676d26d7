"""Streaming video decoding: decord by default, PyAV as the per-file fallback.

Frames are decoded one at a time, in presentation order, and handed out as ``(index, HxWx3 uint8
RGB array)``; a long video is never held in memory. What the decoders do wrong, and what this module
does about it:

- **Containers that over-report their frame count.** ``len(decord.VideoReader)`` trusts the
  container's sample table. When some of those samples decode to nothing, decord pads the tail with
  copies of the nearest frame (and ``get_batch`` over such a range can hang forever in native code).
  This module never calls ``get_batch``: it reads sequentially with ``next()`` and opens decord with a
  zero fault tolerance, so decord raises at the first frame it would have invented; reading then goes
  on with PyAV from that index, which stops at the real end. The reported and decoded counts are both
  kept (:attr:`VideoStream.n_frames_reported`, :attr:`VideoStream.n_decoded`).
- **Decode errors mid-file** (truncated downloads, damaged packets). decord's error is caught and
  PyAV continues from the same frame index; if PyAV fails too, the frames decoded so far are kept and
  :attr:`VideoStream.error` says where and why decoding stopped.
- **Files neither decoder can open, or that yield no frame** raise :class:`MediaError` naming the file
  and what to do.
- **Variable frame rate.** Frames are indexed by decode order (0, 1, 2, …), never by timestamp × fps;
  ``fps`` is the container's average rate.
- decord missing (it has no wheel for some platforms) → PyAV for every file.

**Frames missing at the end** (a truncated download, a container whose index claims more frames than
it holds): the readers compare the decoded count with every count that claims the clip's length —
the container's and, where a dataset has one, the annotation's — with :func:`frame_shortfall`. Any
shortfall is a row in the dataset's ``failures.csv`` (expected vs decoded); a clip that decodes fewer
than :data:`MIN_DECODED_FRACTION` (90 %) of the largest claim is excluded, a smaller shortfall is
reported and the clip kept (the readers' ``min_decoded_fraction`` option changes the threshold).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from emotk.errors import EmotkError

DECODERS = ("auto", "decord", "av")

#: A clip that decodes fewer than this share of the frames its container (or annotation) claims is
#: excluded at prepare; a smaller shortfall is reported in failures.csv and the clip kept.
MIN_DECODED_FRACTION = 0.9

#: What to tell the user when a file cannot be decoded at all.
FIX_HINT = (
    "re-download or re-extract it, or re-encode it with "
    "`ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4` and put OUT in its place"
)


class MediaError(EmotkError):
    """A media file cannot be read (missing, empty, not a video, unsupported codec)."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    n_frames_reported: int  # what the container says (0 when it does not say); may be wrong
    fps: float  # average frame rate (variable-rate videos: the average)
    width: int
    height: int
    decoder: str  # the decoder that opened the file: "decord" or "av"


def decord_available() -> bool:
    """Whether decord imports here (it has no wheel for some platforms; PyAV is then used)."""
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def available_decoders() -> list[str]:
    return (["decord"] if decord_available() else []) + ["av"]


def _check_decoder(decoder: str) -> str:
    if decoder not in DECODERS:
        raise MediaError(f"unknown video decoder {decoder!r}; choose one of {', '.join(DECODERS)}.")
    if decoder == "decord" and not decord_available():
        raise MediaError("decoder 'decord' was asked for but is not installed: `pip install decord`, or use --decoder av.")
    return decoder


def _short(exc: BaseException, path: Path | None = None) -> str:
    """One line of an exception message (decord's carry C++ stack traces); the file named by its name."""
    text = " ".join(str(exc).split())
    if path is not None:
        text = text.replace(str(path), path.name)
    text = re.sub(r"\[\d{2}:\d{2}:\d{2}\] \S+?:\d+: ", "", text)  # decord's "[time] file.cc:123: " prefixes
    for marker in ("Check failed:", "Error:"):
        if marker in text:
            text = text[text.rindex(marker):]
            break
    text = text or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(f"video {path} does not exist (or is not a file); check the dataset root and layout.")
    if path.stat().st_size == 0:
        raise MediaError(f"video {path} is empty (0 bytes); {FIX_HINT}.")


# --- decord ---------------------------------------------------------------------------------------

def _open_decord(path: Path, size: tuple[int, int] | None):
    import decord

    w, h = size if size else (-1, -1)
    # fault_tol tiny: raise at the first frame decord would "recover" (invent) instead of padding.
    return decord.VideoReader(str(path), ctx=decord.cpu(0), width=w, height=h, fault_tol=1e-9)


def _probe_decord(path: Path) -> VideoInfo:
    vr = _open_decord(path, None)
    try:
        h, w = vr[0].shape[:2] if len(vr) else (0, 0)
        n = max(int(len(vr)), _container_claim(path))
        return VideoInfo(str(path), n, float(vr.get_avg_fps() or 0.0), int(w), int(h), "decord")
    finally:
        del vr


# --- PyAV -----------------------------------------------------------------------------------------

def _open_av(path: Path):
    import av

    container = av.open(str(path))
    if not container.streams.video:
        container.close()
        raise ValueError("the file has no video stream")
    return container, container.streams.video[0]


def _av_fps(stream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def _av_reported(stream, fps: float) -> int:
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base and fps:
        return int(round(float(stream.duration * stream.time_base) * fps))
    return 0


def _container_claim(path: Path) -> int:
    """The frame count in the container's index as PyAV reads it (0 when it cannot say).

    decord's ``len()`` leaves out samples that lie beyond the end of a truncated file (a faststart mp4
    cut short claims 60 frames in its index; decord says 31), so the claim is read here too.
    """
    import av

    try:
        container, stream = _open_av(path)
    except (av.error.FFmpegError, OSError, ValueError):  # no claim to read; decoding reports the real error
        return 0
    try:
        return _av_reported(stream, _av_fps(stream))
    finally:
        container.close()


def _probe_av(path: Path) -> VideoInfo:
    container, stream = _open_av(path)
    try:
        fps = _av_fps(stream)
        cc = stream.codec_context
        return VideoInfo(str(path), _av_reported(stream, fps), fps, int(cc.width), int(cc.height), "av")
    finally:
        container.close()


def probe(path: str | Path, decoder: str = "auto") -> VideoInfo:
    """Frame count (as the container reports it), fps and size of a video, without decoding it all.

    ``decoder="auto"`` tries decord, then PyAV. Raises :class:`MediaError` when neither can open it.
    """
    path = Path(path)
    _check_decoder(decoder)
    _check_file(path)
    errors = []
    if decoder in ("auto", "decord") and decord_available():
        try:
            return _probe_decord(path)
        except Exception as exc:  # decord raises DECORDError, RuntimeError, AssertionError
            errors.append(f"decord: {_short(exc, path)}")
            if decoder == "decord":
                raise MediaError(f"cannot open video {path} ({errors[0]}); try --decoder av, or {FIX_HINT}.") from None
    try:
        return _probe_av(path)
    except Exception as exc:
        errors.append(f"av: {_short(exc, path)}")
    raise MediaError(f"cannot open video {path} ({'; '.join(errors)}); {FIX_HINT}.")


class VideoStream:
    """Frames of one video, decoded lazily: ``for index, frame in VideoStream(path): ...``.

    every: yield every n-th frame (indices 0, n, 2n, …; all frames are still decoded).
    size: ``(width, height)`` to resize to in the decoder, or None for the native size.
    decoder: ``auto`` (decord, then PyAV from where decord failed), ``decord`` or ``av``.

    After (or during) iteration: ``decoder_used`` ("decord", "av" or "decord+av"), ``n_decoded``
    (frames decoded, the length of the video as far as it can be read), ``n_frames_reported`` (the
    largest count the container's index claims, as decord and PyAV read it),
    ``fps``, ``error`` (None, or why decoding stopped before the container's end), ``notes``.
    Iterating raises :class:`MediaError` when the file cannot be opened or yields no frame at all.
    A stream can be iterated once.
    """

    def __init__(self, path: str | Path, every: int = 1, size: tuple[int, int] | None = None, decoder: str = "auto"):
        if every < 1:
            raise ValueError("every must be >= 1")
        self.path = Path(path)
        self.every = int(every)
        self.size = tuple(size) if size else None
        self.decoder = _check_decoder(decoder)
        self.decoder_used: str | None = None
        self.n_decoded = 0
        self.n_frames_reported = 0
        self.fps = 0.0
        self.width = 0
        self.height = 0
        self.error: str | None = None
        self.notes: list[str] = []
        self._used: list[str] = []
        self._started = False

    # ---------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._started:
            raise RuntimeError("a VideoStream can be iterated once; make a new one")
        self._started = True
        _check_file(self.path)
        open_errors: list[str] = []
        decord_stop: str | None = None
        if self.decoder in ("auto", "decord") and decord_available():
            try:
                vr = _open_decord(self.path, self.size)
            except Exception as exc:
                vr = None
                open_errors.append(f"decord: {_short(exc, self.path)}")
                if self.decoder == "decord":
                    raise MediaError(
                        f"cannot open video {self.path} with decord ({_short(exc, self.path)}); try --decoder av, or {FIX_HINT}."
                    ) from None
            if vr is not None:
                self._used.append("decord")
                self.n_frames_reported = max(int(len(vr)), _container_claim(self.path))
                self.fps = float(vr.get_avg_fps() or 0.0)
                try:
                    while True:
                        try:
                            arr = vr.next()
                        except StopIteration:
                            break
                        except Exception as exc:  # DECORDError, DECORDLimitReachedError
                            decord_stop = _short(exc, self.path)
                            break
                        if self.n_decoded % self.every == 0:
                            frame = arr.asnumpy()
                            self.height, self.width = frame.shape[:2]
                            idx = self.n_decoded
                            self.n_decoded += 1
                            yield idx, frame
                        else:
                            self.n_decoded += 1
                finally:
                    del vr
                if decord_stop is None:
                    self._finish()
                    return
                if self.decoder == "decord":
                    self.error = f"decord stopped after {self.n_decoded} frames: {decord_stop}"
                    self._finish()
                    return
        # PyAV: the whole file, or the rest of it after decord stopped.
        yield from self._iter_av(skip=self.n_decoded, open_errors=open_errors, decord_stop=decord_stop)
        self._finish()

    def _iter_av(self, skip: int, open_errors: list[str], decord_stop: str | None) -> Iterator[tuple[int, np.ndarray]]:
        import av

        try:
            container, stream = _open_av(self.path)
        except Exception as exc:
            msg = f"av: {_short(exc, self.path)}"
            if skip == 0:
                detail = "; ".join(open_errors + ([f"decord: {decord_stop}"] if decord_stop else []) + [msg])
                raise MediaError(f"cannot decode video {self.path} ({detail}); {FIX_HINT}.") from None
            self.error = f"decord stopped after {skip} frames ({decord_stop}) and PyAV cannot open the file ({msg})"
            return
        self._used.append("av")
        fps = _av_fps(stream)
        if not self.fps:
            self.fps = fps
        if not self.n_frames_reported:
            self.n_frames_reported = _av_reported(stream, fps)
        stream.thread_type = "AUTO"
        k = 0  # frames PyAV has decoded
        new = 0
        try:
            try:
                for packet in container.demux(stream):
                    for frame in packet.decode():
                        if k < skip:
                            k += 1
                            continue
                        idx = k
                        k += 1
                        self.n_decoded = k
                        new += 1
                        if idx % self.every == 0:
                            if self.size:
                                frame = frame.reformat(width=self.size[0], height=self.size[1])
                            arr = frame.to_ndarray(format="rgb24")
                            self.height, self.width = arr.shape[:2]
                            yield idx, arr
            except av.error.FFmpegError as exc:
                where = f"after {max(k, skip)} frames"
                self.error = f"decoding stopped {where}: {_short(exc, self.path)}" + (
                    f" (decord had stopped at frame {skip}: {decord_stop})" if decord_stop else ""
                )
        finally:
            container.close()
        if decord_stop and self.error is None:
            if new == 0:
                # decord refused to go on, and PyAV finds no frame beyond: the container over-reports.
                self._used.remove("av")
                self.notes.append(f"decord stopped at frame {skip} ({decord_stop}); PyAV confirms the video ends there")
            else:
                self.notes.append(f"decord stopped at frame {skip} ({decord_stop}); PyAV decoded frames {skip}..{k - 1}")

    def _finish(self) -> None:
        self.decoder_used = "+".join(self._used) or None
        if self.n_decoded == 0:
            detail = f" ({self.error})" if self.error else ""
            raise MediaError(f"no frame could be decoded from video {self.path}{detail}; {FIX_HINT}.")
        if self.n_frames_reported and self.n_frames_reported != self.n_decoded:
            self.notes.append(f"container reports {self.n_frames_reported} frames, {self.n_decoded} decoded")

    @property
    def info(self) -> VideoInfo:
        return VideoInfo(str(self.path), self.n_frames_reported, self.fps, self.width, self.height, self.decoder_used or "")


@dataclass(frozen=True)
class Shortfall:
    """Decoded frames against the counts that claim a clip's length (see :func:`frame_shortfall`)."""

    n_decoded: int
    claims: tuple[tuple[str, int], ...]  # (who claims, how many frames) for each claim above n_decoded
    min_fraction: float

    @property
    def expected(self) -> int:
        return max((n for _, n in self.claims), default=self.n_decoded)

    @property
    def fraction(self) -> float:
        return self.n_decoded / self.expected if self.expected else 1.0

    @property
    def exclude(self) -> bool:
        return self.fraction < self.min_fraction

    def describe(self) -> str:
        said = ", ".join(f"{who} claims {n}" for who, n in self.claims)
        verdict = (f"below the {self.min_fraction:.0%} threshold: the clip is excluded" if self.exclude
                   else f"at least {self.min_fraction:.0%}: the clip is kept, its missing frames have no crop")
        return (f"decoded {self.n_decoded} of {self.expected} expected frames ({self.fraction:.0%}; {said}); "
                f"{verdict}")


def frame_shortfall(n_decoded: int, claims: dict[str, int], min_fraction: float = MIN_DECODED_FRACTION) -> Shortfall | None:
    """None when ``n_decoded`` reaches every claimed count, else the :class:`Shortfall`.

    claims: ``{"the container": 60, "the annotation": 58}``; counts of 0 (unknown) are ignored.
    """
    if not 0 < min_fraction <= 1:
        raise ValueError(f"min_fraction must be in (0, 1], not {min_fraction!r}")
    short = tuple((who, int(n)) for who, n in claims.items() if n and int(n) > n_decoded)
    return Shortfall(int(n_decoded), short, float(min_fraction)) if short else None


def iter_frames(
    path: str | Path, every: int = 1, size: tuple[int, int] | None = None, decoder: str = "auto"
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, HxWx3 uint8 RGB)`` for every ``every``-th frame of a video, streaming.

    Use :class:`VideoStream` directly to learn which decoder was used and whether decoding stopped
    early; this shortcut only raises :class:`MediaError` for unreadable or frameless files.
    """
    yield from VideoStream(path, every=every, size=size, decoder=decoder)
