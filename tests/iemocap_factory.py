"""A miniature IEMOCAP in the release layout: real espeak-ng speech, a real split-screen AVI.

``make_iemocap(root)`` writes ``root/IEMOCAP_full_release/Session1…`` and returns what it wrote
(:class:`MiniIemocap`), so tests compare the parsed manifest against these values, not against the
reader. Deterministic: the same arguments give the same files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from media_factory import background, face_patch, write_video
from speech_factory import write_dialog, write_speech

#: Consensus codes cycled over a session's utterances: every 4-class class (and exc, xxx) in each session.
CODE_CYCLE = ("neu", "hap", "ang", "sad", "exc", "xxx", "fru", "sur")
VOICES = {"F": "en+f3", "M": "en+m3"}
SENTENCES = ("I told you already.", "Where are you going?", "That is wonderful news.", "Leave me alone.",
             "We can talk about it later.", "Nobody listens to me.", "Look at this.", "Fine, do it your way.")
VIDEO_FPS = 10
HALF = 96  # each half of the split-screen frame is HALF x HALF
FACE = 84  # side of the face patch in each half


@dataclass
class MiniUtt:
    utt: str
    session: str
    dialog: str
    letter: str  # the utterance's speaker letter
    start: float
    end: float
    code: str
    vad: tuple[float, float, float]
    text: str

    @property
    def left(self) -> bool:
        """The speaker sits on the left half (the dialog letter's actor) — the un-tinted astronaut."""
        return self.dialog[5] == self.letter


@dataclass
class MiniIemocap:
    base: Path
    utterances: list[MiniUtt] = field(default_factory=list)
    skipped_lines: int = 0  # transcript lines a reader must skip (and count)

    def by_id(self) -> dict[str, MiniUtt]:
        return {u.utt: u for u in self.utterances}


def dialog_name(session: int, d: int) -> str:
    """Dialogs alternate the mocap actor's letter and the impro/script naming."""
    return f"Ses{session:02d}F_impro{d + 1:02d}" if d % 2 == 0 else f"Ses{session:02d}M_script{d:02d}_1"


def _split_screen_frames(n: int, seed: int) -> list[np.ndarray]:
    """Left half: the astronaut; right half: the mirrored, tinted astronaut (another 'person')."""
    left, right = face_patch(FACE), face_patch(FACE, mirrored=True)
    bg = background(2 * HALF, HALF, seed)
    o = (HALF - FACE) // 2
    frames = []
    for t in range(n):
        f = bg.copy()
        dy = int(round(3 * math.sin(t / 4)))
        y = min(max(o + dy, 0), HALF - FACE)
        f[y:y + FACE, o:o + FACE] = left
        f[y:y + FACE, HALF + o:HALF + o + FACE] = right
        frames.append(f)
    return frames


def make_iemocap(root: Path, sessions: int = 2, dialogs: int = 2, utts: int = 4, video: bool = True,
                 irregular: bool = True) -> MiniIemocap:
    """Write the miniature under ``root/IEMOCAP_full_release`` and return what was written."""
    base = Path(root) / "IEMOCAP_full_release"
    mini = MiniIemocap(base)
    for s in range(1, sessions + 1):
        sdir = base / f"Session{s}"
        n_in_session = 0
        for d in range(dialogs):
            dialog = dialog_name(s, d)
            per_letter = {"F": 0, "M": 0}
            turns, plan = [], []
            for k in range(utts):
                letter = "F" if k % 2 == 0 else "M"
                utt = f"{dialog}_{letter}{per_letter[letter]:03d}"
                per_letter[letter] += 1
                n = n_in_session
                n_in_session += 1
                text = SENTENCES[(n + s) % len(SENTENCES)]
                code = CODE_CYCLE[n % len(CODE_CYCLE)]
                vad = (2.0 + 0.5 * (n % 4), 3.5 - 0.5 * (n % 3), 2.5 + 0.25 * (n % 5))
                turns.append((text, VOICES[letter], 0 if letter == dialog[5] else 1))
                plan.append((utt, letter, text, code, vad))
            spans = write_dialog(sdir / "dialog" / "wav" / f"{dialog}.wav", turns)
            eval_lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            trans_lines = []
            for (utt, letter, text, code, vad), (start, end) in zip(plan, spans):
                start, end = round(start, 4), round(end, 4)
                mini.utterances.append(MiniUtt(utt, f"Ses{s:02d}", dialog, letter, start, end, code, vad, text))
                eval_lines += [f"[{start:.4f} - {end:.4f}]\t{utt}\t{code}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]",
                               "C-E1:\tNeutral state; Other;\t()", "C-E2:\tAnger;\t()",
                               f"A-E3:\tval {round(vad[0])}; act {round(vad[1])}; dom  {round(vad[2])};\t()", ""]
                trans_lines.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {text}")
                write_speech(sdir / "sentences" / "wav" / dialog / f"{utt}.wav", text, voice=VOICES[letter])
            if irregular and d == 0:
                trans_lines.insert(1, "M: [BREATHING]")  # no '_', no timestamp
                trans_lines.insert(3, f"{dialog}_MXX0 [000.1000-000.2000]: not an utterance id")
                mini.skipped_lines += 2
            ev = sdir / "dialog" / "EmoEvaluation"
            ev.mkdir(parents=True, exist_ok=True)
            (ev / f"{dialog}.txt").write_text("\n".join(eval_lines) + "\n", encoding="utf-8")
            tr = sdir / "dialog" / "transcriptions"
            tr.mkdir(parents=True, exist_ok=True)
            (tr / f"{dialog}.txt").write_text("\n".join(trans_lines) + "\n", encoding="utf-8")
            if irregular:
                (ev / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
                cat = ev / "Categorical"
                cat.mkdir(exist_ok=True)
                first = plan[0][0]
                (cat / f"{dialog}_e2_cat.txt").write_text(f"{first} :Anger; ()\n[0.0 - 1.0]\t{first}\tang\t"
                                                          "[1.0, 1.0, 1.0]\n", encoding="utf-8")
            if video:
                n_frames = int(math.ceil((spans[-1][1] + 0.3) * VIDEO_FPS))
                write_video(sdir / "dialog" / "avi" / "DivX" / f"{dialog}.avi",
                            _split_screen_frames(n_frames, seed=s * 10 + d), fps=VIDEO_FPS)
    return mini
