"""Audio of one utterance → features: eGeMAPS / ComParE (openSMILE), MFCC / log-mel (librosa).

An utterance is a span (``audio_start``..``audio_end`` seconds, null = the whole file) of one channel
(``audio_channel``, null = all channels averaged) of a sound file. It is read at the file's own rate
with soundfile and resampled to :data:`RATE` (16 kHz) with soxr's high-quality resampler (``soxr_hq``,
as ``librosa.resample(res_type="soxr_hq")``), then handed to the feature kind. Settings, defaults and the reasons for
them are in ``docs/features.md``.

A sample that cannot be read (undecodable, empty, span outside the file, truncated file, channel
missing) or is silent raises :class:`AudioSampleError` with the reason; the extraction driver lists
it in failures.csv and skips it — never features of garbage.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

import numpy as np

from emotk.errors import EmotkError, FeatureStoreError

RATE = 16000  # every feature is computed at this sample rate
RESAMPLER = "soxr_hq"  # librosa.resample res_type (soxr, high quality)
SILENCE_PEAK = 1e-4  # a span whose absolute peak is below this (-80 dBFS) is silent
END_SLACK = 0.1  # seconds an end time may overshoot the file (annotation rounding); clipped to the file
KINDS = ("egemaps", "compare", "mfcc", "logmel")
LEVELS = ("lld", "functionals")
ALIASES = {"mel": "logmel"}

#: Defaults of the librosa kinds (25 ms Hann window, 10 ms hop at 16 kHz).
SPECTRAL_DEFAULTS = {"n_fft": 512, "win_length": 400, "hop_length": 160, "fmin": 0.0, "fmax": 8000.0,
                     "window": "hann", "center": True, "htk": False, "mel_norm": "slaney"}
MFCC_DEFAULTS = {**SPECTRAL_DEFAULTS, "n_mfcc": 40, "n_mels": 64, "deltas": 2, "delta_width": 9, "dct_type": 2,
                 "lifter": 0}
LOGMEL_DEFAULTS = {**SPECTRAL_DEFAULTS, "n_mels": 64, "power": 2.0, "log_offset": 1e-6}


class AudioSampleError(EmotkError):
    """One utterance cannot give features; ``reason`` says why (listed in failures.csv)."""

    def __init__(self, reason: str, what_to_do: str = "check the audio file; the sample is skipped"):
        super().__init__(reason)
        self.reason = reason
        self.what_to_do = what_to_do


def settings(kind: str, level: str = "lld", **options) -> dict:
    """The resolved settings of a feature kind (defaults filled in, unknown options refused);
    ``mel`` is another name of ``logmel``."""
    kind = ALIASES.get(kind, kind)
    if kind not in KINDS:
        raise FeatureStoreError(f"unknown audio feature {kind!r}; choose one of {', '.join(KINDS)}.")
    if level not in LEVELS:
        raise FeatureStoreError(f"unknown level {level!r} for --audio {kind}; choose lld or functionals.")
    if kind in ("egemaps", "compare"):
        if options:
            raise FeatureStoreError(f"--audio {kind} takes no options (got {', '.join(sorted(options))}): "
                                    "openSMILE's feature sets are fixed.")
        return {"kind": kind, "level": level}
    if level != "lld":
        raise FeatureStoreError(f"--audio {kind} gives frames only (level lld); functionals exist for "
                                "egemaps and compare.")
    defaults = MFCC_DEFAULTS if kind == "mfcc" else LOGMEL_DEFAULTS
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise FeatureStoreError(f"unknown option(s) {', '.join(unknown)} for --audio {kind}; known: "
                                f"{', '.join(sorted(defaults))}.")
    out = {"kind": kind, "level": level}
    for k, default in defaults.items():
        v = options.get(k, default)
        try:
            out[k] = type(default)(v) if not isinstance(default, bool) else _bool(v)
        except (TypeError, ValueError):
            raise FeatureStoreError(f"option {k}={v!r} for --audio {kind}: expected {type(default).__name__}.") from None
    if out["fmax"] > RATE / 2 or out["fmin"] < 0 or out["fmin"] >= out["fmax"]:
        raise FeatureStoreError(f"--audio {kind}: need 0 <= fmin < fmax <= {RATE // 2} Hz (got {out['fmin']}, {out['fmax']}).")
    if out["win_length"] > out["n_fft"] or min(out["hop_length"], out["n_fft"], out["n_mels"]) < 1:
        raise FeatureStoreError(f"--audio {kind}: need win_length <= n_fft and positive hop_length, n_fft, n_mels.")
    if kind == "mfcc" and not (1 <= out["n_mfcc"] <= out["n_mels"] and out["deltas"] in (0, 1, 2)):
        raise FeatureStoreError("--audio mfcc: need 1 <= n_mfcc <= n_mels and deltas 0, 1 or 2.")
    return out


def _bool(v) -> bool:
    if isinstance(v, str):
        if v.lower() in ("1", "true", "yes", "on"):
            return True
        if v.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(v)
    return bool(v)


@lru_cache(maxsize=4)
def _smile(kind: str, level: str):
    import opensmile

    feature_set = opensmile.FeatureSet.eGeMAPSv02 if kind == "egemaps" else opensmile.FeatureSet.ComParE_2016
    feature_level = opensmile.FeatureLevel.LowLevelDescriptors if level == "lld" else opensmile.FeatureLevel.Functionals
    return opensmile.Smile(feature_set=feature_set, feature_level=feature_level)


def dim(s: dict) -> int:
    """Feature dimension of settings ``s``."""
    if s["kind"] in ("egemaps", "compare"):
        return len(_smile(s["kind"], s["level"]).feature_names)
    if s["kind"] == "mfcc":
        return s["n_mfcc"] * (1 + s["deltas"])
    return s["n_mels"]


def feature_names(s: dict) -> list[str]:
    """Column names of the features (openSMILE's names; ``mfcc0..``, ``d_mfcc0..``, ``mel0..`` otherwise)."""
    if s["kind"] in ("egemaps", "compare"):
        return list(_smile(s["kind"], s["level"]).feature_names)
    if s["kind"] == "mfcc":
        prefixes = ["", "d_", "dd_"][: 1 + s["deltas"]]
        return [f"{p}mfcc{i}" for p in prefixes for i in range(s["n_mfcc"])]
    return [f"mel{i}" for i in range(s["n_mels"])]


def versions() -> dict:
    """Versions of the packages audio features depend on (recorded in the store)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("opensmile", "librosa", "soundfile", "soxr"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


# --- reading ---------------------------------------------------------------------------------------

def wav_declared_frames(path: Path) -> int | None:
    """Frames a RIFF/WAVE header declares in its data chunk (None when not a plain wav or unknown)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block = None
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(size + (size & 1))
                    if len(fmt) >= 14:
                        block = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    return size // block if block else None
                else:
                    fh.seek(size + (size & 1), 1)
    except OSError:
        return None


def read_span(path: str | Path, start: float | None = None, end: float | None = None,
              channel: int | None = None) -> tuple[np.ndarray, int]:
    """Samples ``start``..``end`` seconds of ``path`` (mono float32 at the file's rate) and that rate.

    ``channel`` picks one channel (0-based); None averages all channels. Raises
    :class:`AudioSampleError` for an undecodable, empty, truncated or too short file, a span outside
    the file, a missing channel, or silence.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioSampleError("audio file not found", "restore the file (or fix the raw root) and run extract again")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # libsndfile: not a sound file / unsupported
        raise AudioSampleError(f"audio cannot be decoded ({str(exc).splitlines()[0][:160]})",
                               "check the file (a wav, flac or ogg file is expected); the sample is skipped") from None
    sr, n, channels = int(info.samplerate), int(info.frames), int(info.channels)
    if n == 0:
        raise AudioSampleError("audio file holds no samples (empty)")
    declared = wav_declared_frames(path)
    truncated = declared is not None and declared > n
    held = n / sr
    a = 0.0 if start is None or _nan(start) else float(start)
    b = held if end is None or _nan(end) else float(end)
    where = f"span {a:.3f}-{b:.3f} s" if (start is not None or end is not None) else "the whole file"
    if truncated and (end is None or _nan(end) or b > held):
        raise AudioSampleError(
            f"audio file is truncated: its header declares {declared / sr:.3f} s but it holds {held:.3f} s; "
            f"the utterance needs {where}", "restore the complete file and run extract again")
    if a < 0 or b <= a:
        raise AudioSampleError(f"invalid span: start {a} s, end {b} s", "fix the utterance's times in the dataset")
    if a >= held or b > held + END_SLACK:
        raise AudioSampleError(f"{where} lies outside the file, which holds {held:.3f} s",
                               "check the utterance's times against the audio file")
    if channel is not None and not _nan(channel) and not 0 <= int(channel) < channels:
        raise AudioSampleError(f"channel {int(channel)} requested but the file has {channels} channel(s)",
                               "fix audio_channel in the dataset")
    i0, i1 = int(round(a * sr)), min(n, int(round(b * sr)))
    try:
        y, _ = sf.read(str(path), start=i0, stop=i1, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioSampleError(f"audio cannot be decoded ({str(exc).splitlines()[0][:160]})") from None
    if len(y) < i1 - i0:
        raise AudioSampleError(f"audio file ends early: {where} asked, {len(y) / sr:.3f} s read",
                               "restore the complete file and run extract again")
    y = y.mean(axis=1) if channel is None or _nan(channel) else y[:, int(channel)]
    if len(y) == 0:
        raise AudioSampleError(f"{where} holds no samples")
    peak = float(np.abs(y).max())
    if peak < SILENCE_PEAK:
        raise AudioSampleError(f"audio is silent ({where}: peak {peak:.1e}, below {SILENCE_PEAK:.0e}); "
                               "features of silence are constant garbage", "check the file or the channel")
    return np.ascontiguousarray(y, dtype=np.float32), sr


def _nan(v) -> bool:
    return isinstance(v, float) and v != v


def resample(y: np.ndarray, sr: int, rate: int = RATE) -> np.ndarray:
    """``y`` at ``rate`` Hz (soxr high quality); unchanged when already there."""
    if sr == rate:
        return y
    import soxr  # what librosa.resample(res_type="soxr_hq") calls, without importing librosa

    return np.asarray(soxr.resample(y, sr, rate, quality=RESAMPLER), dtype=np.float32)


# --- features --------------------------------------------------------------------------------------

def compute(y: np.ndarray, s: dict) -> np.ndarray:
    """Features of a 16 kHz mono signal: ``[T, D]`` (lld) or ``[D]`` (functionals), float32.

    Raises :class:`AudioSampleError` when the library returns no frame or non-finite values."""
    kind = s["kind"]
    seconds = len(y) / RATE
    if kind in ("egemaps", "compare"):
        frame = _smile(kind, s["level"]).process_signal(y, RATE)
        x = frame.to_numpy(dtype=np.float32)
        if s["level"] == "functionals":
            x = x[0] if len(x) else x.reshape(0)
    else:
        x = _spectral(y, s)
    if x.size == 0:
        raise AudioSampleError(f"audio too short for {kind} ({seconds:.3f} s): no frame computed")
    if not np.isfinite(x).all():
        raise AudioSampleError(f"{kind} gave NaN/inf values ({seconds:.3f} s of audio; too short?)")
    return np.ascontiguousarray(x, dtype=np.float32)


def _spectral(y: np.ndarray, s: dict) -> np.ndarray:
    import librosa

    mel = librosa.feature.melspectrogram(
        y=y, sr=RATE, n_fft=s["n_fft"], hop_length=s["hop_length"], win_length=s["win_length"], window=s["window"],
        center=s["center"], power=s.get("power", 2.0), n_mels=s["n_mels"], fmin=s["fmin"], fmax=s["fmax"],
        htk=s["htk"], norm=s["mel_norm"] if s["mel_norm"] != "none" else None)
    if s["kind"] == "logmel":
        return np.log(mel + s["log_offset"]).T
    m = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=s["n_mfcc"], dct_type=s["dct_type"],
                             lifter=s["lifter"])
    parts = [m]
    if s["deltas"]:
        width = _delta_width(m.shape[1], s["delta_width"])
        parts += [librosa.feature.delta(m, width=width, order=o) for o in range(1, s["deltas"] + 1)]
    return np.concatenate(parts, axis=0).T


def _delta_width(frames: int, width: int) -> int:
    """librosa's delta needs an odd width <= frames (interp mode): shrink it for very short clips."""
    if frames >= width:
        return width
    w = frames if frames % 2 else frames - 1
    if w < 3:
        raise AudioSampleError(f"audio too short for deltas: {frames} frame(s)")
    return w


def utterance_features(path: str | Path, start, end, channel, s: dict) -> tuple[np.ndarray, int]:
    """Read, resample and compute one utterance's features; returns (features, the file's native rate)."""
    y, sr = read_span(path, start, end, channel)
    return compute(resample(y, sr), s), sr


def run_task(task: tuple) -> tuple:
    """Worker entry: ``(sample_id, path, start, end, channel, settings)`` →
    ``(sample_id, features or None, native rate or None, reason, what_to_do)``. A sample that fails
    (including an unexpected error of openSMILE or librosa) is returned as a failure, not raised."""
    sid, path, start, end, channel, s = task
    try:
        feats, sr = utterance_features(path, start, end, channel, s)
        return sid, feats, sr, "", ""
    except AudioSampleError as exc:
        return sid, None, None, exc.reason, exc.what_to_do
    except Exception as exc:  # a library error on one file must not stop a long run
        return sid, None, None, f"{s['kind']} failed ({type(exc).__name__}: {str(exc)[:160]})", \
            "check the audio file; report it if the file plays correctly"


def run_chunk(tasks: list[tuple]) -> list[tuple]:
    """:func:`run_task` over a few utterances (one inter-process round trip for them all)."""
    return [run_task(t) for t in tasks]


__all__ = ["run_task", "run_chunk", "AudioSampleError", "RATE", "KINDS", "settings", "dim", "feature_names", "read_span", "resample",
           "compute", "utterance_features", "versions"]
