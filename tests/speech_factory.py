"""Real speech for tests: espeak-ng speaks a sentence to a wav, written at the rate and channel count
a dataset distributes (IEMOCAP: 16 kHz mono sentences, 16 kHz stereo dialogs; CMU-MOSEI: 16 kHz
mono), plus deliberately broken audio files (empty, silent, truncated, not audio at all).

espeak-ng is a Debian package (`apt-get install -y espeak-ng`); `.ci/run` installs it. Nothing
here is a mock: the files are decoded by the same soundfile / librosa / openSMILE code a user runs.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf


def have_espeak() -> bool:
    return shutil.which("espeak-ng") is not None


@lru_cache(maxsize=256)
def _spoken(text: str, voice: str, speed: int) -> tuple[np.ndarray, int]:
    """espeak-ng's own output for ``text`` (mono float32 at its native rate, 22,050 Hz)."""
    if not have_espeak():
        raise RuntimeError("espeak-ng is not installed: `apt-get install -y espeak-ng` (.ci/run does it).")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "s.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(out), text], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        y, sr = sf.read(out, dtype="float32", always_2d=False)
    return y, sr


def speech(text: str, rate: int = 16000, voice: str = "en", speed: int = 160) -> np.ndarray:
    """``text`` spoken by espeak-ng, mono float32 at ``rate`` Hz."""
    import librosa

    y, sr = _spoken(text, voice, speed)
    return librosa.resample(y, orig_sr=sr, target_sr=rate) if sr != rate else y.copy()


def write_speech(path: Path, text: str, rate: int = 16000, channels: int = 1, voice: str = "en",
                 subtype: str = "PCM_16") -> float:
    """Write ``text`` spoken to a wav at ``rate`` with ``channels`` (the voice on channel 0, the others
    quieter copies); returns the duration in seconds."""
    y = speech(text, rate, voice)
    data = y if channels == 1 else np.stack([y] + [0.3 * y] * (channels - 1), axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype=subtype)
    return len(y) / rate


def write_dialog(path: Path, turns: list[tuple[str, str, int]], rate: int = 16000, gap: float = 0.3) -> list[tuple[float, float]]:
    """A two-channel dialog wav: each turn ``(text, voice, channel)`` spoken on its channel one after the
    other, ``gap`` seconds apart; returns each turn's (start, end) in seconds."""
    pieces, spans, t = [], [], gap
    for text, voice, channel in turns:
        y = speech(text, rate, voice)
        spans.append((t, t + len(y) / rate))
        pieces.append((int(t * rate), y, channel))
        t += len(y) / rate + gap
    data = np.zeros((int(t * rate) + 1, 2), np.float32)
    for start, y, channel in pieces:
        data[start:start + len(y), channel] += y
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, rate, subtype="PCM_16")
    return spans


def write_silence(path: Path, seconds: float = 1.0, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(int(seconds * rate), np.float32), rate, subtype="PCM_16")


def write_empty_wav(path: Path, rate: int = 16000) -> None:
    """A valid wav header with no samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.zeros(0, np.float32), rate, subtype="PCM_16")


def write_truncated_wav(path: Path, text: str = "this file was cut short", rate: int = 16000) -> None:
    """A wav whose header promises more samples than the file holds (a copy that stopped midway)."""
    write_speech(path, text, rate)
    data = path.read_bytes()
    path.write_bytes(data[: 44 + (len(data) - 44) // 3])


def write_not_audio(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a wav file\n" * 20)
