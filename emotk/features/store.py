"""The HDF5 feature store: one dataset per sample, written crash-safely, stamped with provenance.

A store named ``features/<name>.h5`` is the merged file plus, while an extraction is running (or
after it was killed), part files ``features/<name>.parts/part-r<rank>-<time_ns>-<id>.h5``. Each part
is written under a temporary name and renamed when complete, so a SIGKILL at any moment leaves only
whole samples behind; the reader sees the merged file and the parts as one store, a sample in a
newer file replacing the same sample in an older one (parts are newer than the merged file, and
among parts the write time in the name orders them). (Appending samples to one HDF5 file is not
crash-safe: a kill during a metadata write can corrupt the whole file.) ``merge_parts`` merges the
parts into ``<name>.h5`` atomically.

Files use the HDF5 1.10 format, whose metadata is checksummed. Inside every file: the provenance as file attributes (``store_format`` among them),
``/<sample_id>`` = ``[T, D]`` (or ``[D]``) features and ``/mask/<sample_id>`` = ``[T]`` bool, True
where the frame was really observed. Each feature dataset carries two attributes:

- ``sha256``: digest of the sample's dtype, shape, feature bytes and mask bytes, checked on every
  read: garbage bytes inside a file are a :class:`FeatureStoreError` naming the file and sample,
  and ``emotk extract`` recomputes such samples. (Not HDF5's Fletcher32 filter: it needs chunked
  datasets, and HDF5 2.0 segfaults when a chunked write meets a full disk.)
- ``source``: a fingerprint of what the sample was made from (set by the extractor), so a re-run
  can tell samples made from older crops or prepare settings and recompute them.

Part files are built in memory and written with plain file I/O, so a full disk is a clean
:class:`DiskFullError` (HDF5 itself may crash the process when a write meets a full disk); the
merge checks the free space first.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from emotk import __version__
from emotk.atomic import HDF5_LIBVER, atomic_path, ensure_free_space, hdf5_bytes, remove_stale_temporaries, write_bytes
from emotk.errors import FeatureStoreError

IGNORED_KEYS = {"emotk_version"}  # provenance keys that may differ between runs
MASK = "mask"
STORE_FORMAT = 2  # 2: per-sample sha256 and source fingerprint
CHECKSUM = "sha256"
SOURCE = "source"
#: What h5py raises for a damaged file or object (besides its OSError for unreadable files).
H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError)
MERGE_MARGIN = 1 << 20  # bytes of headroom the merge wants beyond the size of its inputs
#: HDF5 1.10 file format: its metadata (superblock, object headers) carries checksums, so garbage in
#: it is an error on open rather than misread structure (or a crash); readable by any HDF5 >= 1.10.
LIBVER = HDF5_LIBVER


def parts_dir(path: Path) -> Path:
    return path.with_name(path.stem + ".parts")


def part_files(path: Path) -> list[Path]:
    """The part files of store ``path``, oldest first (by the write time in their names)."""
    def written(p: Path) -> tuple[int, str]:
        fields = p.stem.split("-")  # part-r<rank>-<time_ns>-<id>; older names lack the time
        return (int(fields[2]) if len(fields) == 4 and fields[2].isdigit() else 0, p.name)

    return sorted(parts_dir(path).glob("part-*.h5"), key=written)


def store_files(path: Path) -> list[Path]:
    """Merged file (if any) then parts, oldest first: a later file's copy of a sample wins."""
    return ([path] if path.exists() else []) + part_files(path)


def sample_digest(features: np.ndarray, mask: np.ndarray) -> str:
    """sha256 of a sample as stored: dtype, shape, feature bytes, mask bytes."""
    h = hashlib.sha256(f"{features.dtype.str}|{features.shape}|{mask.dtype.str}|{mask.shape}|".encode())
    h.update(np.ascontiguousarray(features).tobytes())
    h.update(np.ascontiguousarray(mask).tobytes())
    return h.hexdigest()


def _read_attrs(attrs) -> dict:
    out = {}
    for k, v in attrs.items():
        out[k] = v.item() if isinstance(v, np.generic) else (v.decode() if isinstance(v, bytes) else v)
    return out


def check_provenance(path: Path, have: dict, want: dict) -> None:
    if "store_format" in want and "store_format" not in have:
        raise FeatureStoreError(
            f"{path} was written by an older emotk, without checksums of its samples. Delete it (and "
            f"{parts_dir(path).name}/ if present) and run `emotk extract` again to rebuild it."
        )
    diff = {k: (have.get(k), want.get(k)) for k in set(have) | set(want)
            if k not in IGNORED_KEYS and str(have.get(k)) != str(want.get(k))}
    if diff:
        detail = "; ".join(f"{k}: cache has {a!r}, asked {b!r}" for k, (a, b) in sorted(diff.items()))
        raise FeatureStoreError(
            f"{path} was made with other settings ({detail}). emotk will not mix features. "
            "Use --name to write a separate cache, or delete the old one to rebuild it."
        )


def _unreadable(p: Path, exc: BaseException) -> FeatureStoreError:
    error = FeatureStoreError(f"{p} is not a readable HDF5 file ({str(exc)[:160]}); delete it and run extract again.")
    error.reason = str(exc)[:160]
    return error


def _damaged(p: Path, sid: str, reason: str) -> FeatureStoreError:
    return FeatureStoreError(
        f"{p}: sample {sid!r} is damaged ({reason}). Run `emotk extract` again with the same options: it "
        f"recomputes damaged samples (or delete {p.name} to rebuild the whole cache)."
    )


def _sample_unreadable(p: Path, sid: str, exc: BaseException) -> FeatureStoreError:
    return _damaged(p, sid, f"unreadable: {type(exc).__name__}: {str(exc)[:120]}")


def _verify(p: Path, sid: str, attrs: dict, feats: np.ndarray, mask: np.ndarray) -> None:
    """FeatureStoreError unless ``feats`` and ``mask`` match the sha256 stored in ``attrs``."""
    want = attrs.get(CHECKSUM)
    if not want:
        raise _damaged(p, sid, "it has no checksum")
    if sample_digest(feats, mask) != want:
        raise _damaged(p, sid, "its bytes do not match the sha256 written with it")


@dataclass(frozen=True)
class Extent:
    """A sample's features stored as one plain block of bytes: ``shape`` × ``dtype`` at ``offset`` of
    ``path``; ``file_id`` is (st_dev, st_ino) of the file the store opened, to check that another
    open of ``path`` reaches the same file."""

    path: Path
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype
    file_id: tuple[int, int]


class FeatureStore:
    """Read access to a store (merged file + parts) as one mapping sample_id → (features, mask).

    Every :meth:`read` checks the sample's sha256; a damaged sample raises :class:`FeatureStoreError`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        files = store_files(self.path)
        if not files:
            raise FeatureStoreError(f"no features at {self.path}. Run `emotk extract` first.")
        self._files: list[h5py.File] = []
        self._names: dict[int, Path] = {}
        self._where: dict[str, h5py.File] = {}
        self.attrs: dict = {}
        try:
            for p in files:
                f, attrs, ids = _open(p)
                self._files.append(f)
                self._names[id(f)] = p
                if not self.attrs:
                    self.attrs = attrs
                else:
                    check_provenance(p, attrs, self.attrs)
                for sid in ids:
                    self._where[sid] = f  # a newer file's copy wins
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()

    def __contains__(self, sid: str) -> bool:
        return sid in self._where

    def __len__(self) -> int:
        return len(self._where)

    def keys(self) -> list[str]:
        return sorted(self._where)

    @property
    def dim(self) -> int:
        return int(self.attrs.get("dim", 0))

    def file_of(self, sid: str) -> Path:
        """The file holding the copy of ``sid`` that :meth:`read` returns."""
        return self._names[id(self._where[sid])]

    def _holder(self, sid: str) -> tuple[h5py.File, Path]:
        """The open file holding ``sid`` (the copy :meth:`read` returns) and its path."""
        if sid not in self._where:
            raise FeatureStoreError(f"sample {sid!r} is not in {self.path}; run `emotk extract` again to add it.")
        f = self._where[sid]
        return f, self._names[id(f)]

    def read(self, sid: str) -> tuple[np.ndarray, np.ndarray]:
        feats, mask, _ = self.read_with_attrs(sid)
        return feats, mask

    def read_with_attrs(self, sid: str) -> tuple[np.ndarray, np.ndarray, dict]:
        """Features, mask and the sample's attributes, after checking its sha256."""
        f, p = self._holder(sid)
        try:
            ds = f[sid]
            attrs = _read_attrs(ds.attrs)
            feats = ds[()]
            mask = f[MASK][sid][()]
        except H5_ERRORS as exc:
            raise _sample_unreadable(p, sid, exc) from None
        _verify(p, sid, attrs, feats, mask)
        return feats, mask, attrs

    def shape_of(self, sid: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of ``sid``'s features (metadata only, nothing verified)."""
        f, p = self._holder(sid)
        try:
            ds = f[sid]
            return tuple(ds.shape), ds.dtype
        except H5_ERRORS as exc:
            raise _sample_unreadable(p, sid, exc) from None

    def extent(self, sid: str) -> Extent | None:
        """Where ``sid``'s features lie as raw bytes in their file, or None when they do not lie there
        as one plain block (chunked, compressed, external or virtual storage, not yet allocated,
        non-native byte order). Metadata only: verify the sample with :meth:`read_into` before use."""
        f, p = self._holder(sid)
        try:
            ds = f[sid]
            layout = ds.id.get_create_plist().get_layout()
            offset = ds.id.get_offset()
            dtype = ds.dtype
            if (layout != h5py.h5d.CONTIGUOUS or offset is None or ds.is_virtual or ds.external
                    or not dtype.isnative or dtype.kind not in "fiub"
                    or ds.id.get_storage_size() != ds.size * dtype.itemsize):
                return None
            st = os.fstat(f.id.get_vfd_handle())
        except (*H5_ERRORS, NotImplementedError):
            return None
        return Extent(p, int(offset), tuple(ds.shape), dtype, (st.st_dev, st.st_ino))

    def read_into(self, sid: str, out: np.ndarray) -> np.ndarray:
        """Read ``sid``'s features into ``out`` (a C-contiguous array of their shape; another dtype is
        a cast, as ``astype``), check its sha256 and return its mask. When ``out`` has the stored
        dtype no other array of the sample's size is made."""
        f, p = self._holder(sid)
        try:
            ds = f[sid]
            attrs = _read_attrs(ds.attrs)
            if tuple(ds.shape) != out.shape:
                raise ValueError(f"features have shape {tuple(ds.shape)}, expected {out.shape}")
            if ds.dtype == out.dtype:
                feats = out
                if out.size:
                    ds.read_direct(out)
            else:
                feats = ds[()]
            mask = f[MASK][sid][()]
        except H5_ERRORS as exc:
            raise _sample_unreadable(p, sid, exc) from None
        _verify(p, sid, attrs, feats, mask)
        if feats is not out:
            out[...] = feats
        return mask

    def problem(self, sid: str) -> str | None:
        """Why ``sid`` cannot be read (damaged, no checksum), or None when it reads and verifies."""
        try:
            self.read_with_attrs(sid)
        except FeatureStoreError as exc:
            return str(exc)
        return None

    def source(self, sid: str) -> str | None:
        """The ``source`` fingerprint the extractor stored with ``sid`` (None if absent or unreadable)."""
        try:
            value = self._where[sid][sid].attrs.get(SOURCE)
        except H5_ERRORS:
            return None
        return value.decode() if isinstance(value, bytes) else (str(value) if value is not None else None)


def _open(p: Path) -> tuple[h5py.File, dict, list[str]]:
    """Open one store file: (file, provenance, sample ids); FeatureStoreError when it is not readable."""
    try:
        f = h5py.File(p, "r")
    except PermissionError:
        raise
    except H5_ERRORS as exc:
        raise _unreadable(p, exc) from None
    try:
        ids = [sid for sid in f.keys() if sid != MASK]
        odd = [sid for sid in ids if not isinstance(sid, str)]
        if odd:
            raise ValueError(f"object names that are not text: {odd[:3]}")
        return f, _read_attrs(f.attrs), ids
    except H5_ERRORS as exc:
        f.close()
        raise _unreadable(p, exc) from None


def existing_attrs(path: Path) -> dict | None:
    """Provenance of an existing store, or None."""
    for p in store_files(path):
        f, attrs, _ = _open(p)
        f.close()
        return attrs
    return None


@dataclass
class Inventory:
    """What a store holds, sample by sample, against what an extraction wants."""

    done: set[str] = field(default_factory=set)  # whole, checksum verified, made from the wanted source
    damaged: dict[str, str] = field(default_factory=dict)  # sample id → why it cannot be read
    stale: set[str] = field(default_factory=set)  # made from another source (older crops / prepare settings)
    removed: list[str] = field(default_factory=list)  # notes on unreadable files set aside


class FeatureWriter:
    """Append samples to a store; each ``flush`` writes one part file atomically.

    ``provenance`` is checked against what is already there. ``rank`` keeps part names apart when
    several processes write (torchrun). With one process (``world_size == 1``), unreadable files of
    the store are set aside (a part is deleted, the merged file renamed to ``<name>.h5.unreadable``)
    and listed in :attr:`removed`, so their samples are extracted again instead of failing forever.
    """

    def __init__(self, path: str | os.PathLike, provenance: dict, rank: int = 0, flush_frames: int = 4096,
                 world_size: int = 1):
        self.path = Path(path)
        self.provenance = {**provenance, "store_format": STORE_FORMAT, "emotk_version": __version__}
        self.rank = rank
        self.flush_frames = flush_frames
        self.removed: list[str] = []
        self.written: set[str] = set()
        self._buffer: list[tuple[str, np.ndarray, np.ndarray, dict]] = []
        self._frames = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        parts_dir(self.path).mkdir(exist_ok=True)
        # temporaries of a killed run: each rank removes its own (another rank may be writing now);
        # in one process, every rank's and a half-merged <name>.h5 too
        prefix = ".part-" if world_size == 1 else f".part-r{rank}-"
        remove_stale_temporaries(parts_dir(self.path), prefix)
        if world_size == 1:
            remove_stale_temporaries(self.path.parent, f".{self.path.name}.")
            self.removed = set_aside_unreadable(self.path)
        have = existing_attrs(self.path)
        if have is not None:
            check_provenance(self.path, have, self.provenance)

    def inventory(self, sources: dict[str, str] | None = None) -> Inventory:
        """Read and verify every stored sample; with ``sources`` (sample id → fingerprint), samples
        stored with another fingerprint are stale. Reads the whole store once."""
        inv = Inventory(removed=list(self.removed))
        if not store_files(self.path):
            return inv
        with FeatureStore(self.path) as store:
            for sid in store.keys():
                problem = store.problem(sid)
                if problem is not None:
                    inv.damaged[sid] = problem
                elif sources is not None and sid in sources and store.source(sid) != sources[sid]:
                    inv.stale.add(sid)
                else:
                    inv.done.add(sid)
        return inv

    def done_ids(self) -> set[str]:
        """Samples stored whole with a valid checksum."""
        return self.inventory().done

    def add(self, sid: str, features: np.ndarray, mask: np.ndarray | None = None, source: str | None = None) -> None:
        if not sid or "/" in sid or sid == MASK or sid in (".", ".."):
            raise FeatureStoreError(f"sample id {sid!r} cannot be a key of the feature store ('/', '.', '..' and "
                                    f"{MASK!r} are reserved); fix the dataset's sample ids and prepare again.")
        features = np.asarray(features)
        if not np.isfinite(features.astype(np.float32)).all():
            raise FeatureStoreError(f"features of {sid!r} contain NaN/inf; refusing to cache them.")
        if mask is None:
            mask = np.ones(features.shape[0] if features.ndim > 1 else 1, dtype=bool)
        attrs = {SOURCE: source} if source is not None else {}
        self._buffer.append((sid, features, np.asarray(mask, dtype=bool), attrs))
        self._frames += features.shape[0] if features.ndim > 1 else 1
        if self._frames >= self.flush_frames:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        name = f"part-r{self.rank}-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.h5"
        image = hdf5_image(self.provenance, self._buffer)
        write_bytes(parts_dir(self.path) / name, image, ".h5", what="a part file of the feature cache")
        self.written.update(sid for sid, *_ in self._buffer)
        self._buffer, self._frames = [], 0

    def finalize(self, drop: Iterable[str] = ()) -> None:
        """Flush, then merge all parts into ``<name>.h5`` (atomic) and remove them."""
        self.flush()
        merge_parts(self.path, drop)


def set_aside_unreadable(path: Path) -> list[str]:
    """Delete unreadable part files and rename an unreadable merged file to ``<name>.h5.unreadable``;
    one note per file. Call only when no other process writes this store."""
    notes = []
    for p in store_files(path):
        try:
            f, _, _ = _open(p)
            f.close()
            continue
        except FeatureStoreError as exc:
            reason = getattr(exc, "reason", "unreadable")
        if p == path:
            aside = p.with_name(p.name + ".unreadable")
            os.replace(p, aside)
            notes.append(f"{p} was not a readable HDF5 file ({reason}): moved to {aside.name}, its samples are "
                         "extracted again (delete it once you no longer need it)")
        else:
            p.unlink()
            notes.append(f"{p} was not a readable HDF5 file ({reason}): deleted, its samples are extracted again")
    return notes


def _fill(f: h5py.File, attrs: dict, samples: Iterable[tuple]) -> None:
    for k, v in attrs.items():
        f.attrs[k] = v if v is not None else ""
    masks = f.create_group(MASK)
    for sid, feats, mask, sample_attrs in samples:
        ds = f.create_dataset(sid, data=feats)
        masks.create_dataset(sid, data=mask)
        for k, v in sample_attrs.items():
            if k != CHECKSUM:
                ds.attrs[k] = v
        ds.attrs[CHECKSUM] = sample_digest(np.asarray(feats), np.asarray(mask))


def hdf5_image(attrs: dict, samples: Iterable[tuple]) -> bytes:
    """The bytes of an HDF5 file holding ``samples`` ((sid, features, mask, attrs)), built in memory."""
    return hdf5_bytes(lambda f: _fill(f, attrs, samples), LIBVER)


def write_samples(path: Path, attrs: dict, samples: Iterable[tuple]) -> None:
    """Write an HDF5 file of ``samples`` ((sid, features, mask) or (sid, features, mask, attrs)) at ``path``."""
    with h5py.File(path, "w", libver=LIBVER) as f:
        _fill(f, attrs, ((s[0], s[1], s[2], s[3] if len(s) > 3 else {}) for s in samples))


def merge_parts(path: Path, drop: Iterable[str] = ()) -> None:
    """Merge ``<name>.parts/`` into ``<name>.h5`` atomically, leaving out the samples in ``drop``
    (damaged ones nobody recomputed). Call only when no writer is running.

    Checks first that the disk has room for the merged file (at most the size of its inputs);
    every sample is verified as it is copied, so a damaged one stops the merge with the parts intact.
    """
    pdir = parts_dir(path)
    remove_stale_temporaries(path.parent, f".{path.name}.")  # a merge killed half-way
    drop = set(drop)
    parts = part_files(path)
    if not parts and not (drop and path.exists()):
        if pdir.is_dir():
            shutil.rmtree(pdir, ignore_errors=True)
        return
    needed = sum(p.stat().st_size for p in store_files(path)) + MERGE_MARGIN
    ensure_free_space(path, needed, what=f"the feature cache (merging {len(parts)} part files into it)")
    with FeatureStore(path) as store:
        attrs = dict(store.attrs)
        keep = [sid for sid in store.keys() if sid not in drop]
        with atomic_path(path, ".h5", what="the feature cache") as tmp:
            write_samples(tmp, attrs, ((sid, *store.read_with_attrs(sid)) for sid in keep))
    shutil.rmtree(pdir, ignore_errors=True)
