"""The HDF5 feature store: one dataset per sample, written crash-safely, stamped with provenance.

A store named ``features/<name>.h5`` is the merged file plus, while an extraction is running (or
after it was killed), part files ``features/<name>.parts/part-*.h5``. Each part is written under a
temporary name and renamed when complete, so a SIGKILL at any moment leaves only whole samples
behind; the reader sees the merged file and the parts as one store. (Appending samples to one HDF5
file is not crash-safe: a kill during a metadata write can corrupt the whole file.) ``finalize``
merges the parts into ``<name>.h5`` atomically.

Inside every file: the provenance as file attributes, ``/<sample_id>`` = ``[T, D]`` (or ``[D]``)
features and ``/mask/<sample_id>`` = ``[T]`` bool, True where the frame was really observed.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from emotk import __version__
from emotk.atomic import atomic_path, remove_stale_temporaries
from emotk.errors import FeatureStoreError

IGNORED_KEYS = {"emotk_version"}  # provenance keys that may differ between runs
MASK = "mask"


def parts_dir(path: Path) -> Path:
    return path.with_name(path.stem + ".parts")


def _read_attrs(f: h5py.File) -> dict:
    out = {}
    for k, v in f.attrs.items():
        out[k] = v.item() if isinstance(v, np.generic) else (v.decode() if isinstance(v, bytes) else v)
    return out


def check_provenance(path: Path, have: dict, want: dict) -> None:
    diff = {k: (have.get(k), want.get(k)) for k in set(have) | set(want)
            if k not in IGNORED_KEYS and str(have.get(k)) != str(want.get(k))}
    if diff:
        detail = "; ".join(f"{k}: cache has {a!r}, asked {b!r}" for k, (a, b) in sorted(diff.items()))
        raise FeatureStoreError(
            f"{path} was made with other settings ({detail}). emotk will not mix features. "
            "Use --name to write a separate cache, or delete the old one to rebuild it."
        )


class FeatureStore:
    """Read access to a store (merged file + parts) as one mapping sample_id → (features, mask)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        files = ([self.path] if self.path.exists() else []) + sorted(parts_dir(self.path).glob("part-*.h5"))
        if not files:
            raise FeatureStoreError(f"no features at {self.path}. Run `emotk extract` first.")
        self._files: list[h5py.File] = []
        self._where: dict[str, h5py.File] = {}
        self.attrs: dict = {}
        for p in files:
            try:
                f = h5py.File(p, "r")
            except OSError as exc:
                raise FeatureStoreError(f"{p} is not a readable HDF5 file ({exc}); delete it and run extract again.") from None
            self._files.append(f)
            attrs = _read_attrs(f)
            if not self.attrs:
                self.attrs = attrs
            else:
                check_provenance(p, attrs, self.attrs)
            for sid in f.keys():
                if sid != MASK:
                    self._where.setdefault(sid, f)

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

    def read(self, sid: str) -> tuple[np.ndarray, np.ndarray]:
        if sid not in self._where:
            raise FeatureStoreError(f"sample {sid!r} is not in {self.path}; run `emotk extract` again to add it.")
        f = self._where[sid]
        feats = f[sid][()]
        mask = f[MASK][sid][()] if MASK in f and sid in f[MASK] else np.ones(feats.shape[0] if feats.ndim > 1 else 1, bool)
        return feats, mask


def existing_attrs(path: Path) -> dict | None:
    """Provenance of an existing store, or None."""
    files = ([path] if path.exists() else []) + sorted(parts_dir(path).glob("part-*.h5"))
    for p in files:
        try:
            with h5py.File(p, "r") as f:
                return _read_attrs(f)
        except OSError:
            raise FeatureStoreError(f"{p} is not a readable HDF5 file; delete it and run extract again.") from None
    return None


class FeatureWriter:
    """Append samples to a store; each ``flush`` writes one part file atomically.

    ``provenance`` is checked against what is already there. ``rank`` keeps part names apart when
    several processes write (torchrun).
    """

    def __init__(self, path: str | os.PathLike, provenance: dict, rank: int = 0, flush_frames: int = 4096,
                 world_size: int = 1):
        self.path = Path(path)
        self.provenance = {**provenance, "emotk_version": __version__}
        self.rank = rank
        self.flush_frames = flush_frames
        self._buffer: list[tuple[str, np.ndarray, np.ndarray]] = []
        self._frames = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        parts_dir(self.path).mkdir(exist_ok=True)
        # temporaries of a killed run: each rank removes its own (another rank may be writing now);
        # in one process, every rank's and a half-merged <name>.h5 too
        prefix = ".part-" if world_size == 1 else f".part-r{rank}-"
        remove_stale_temporaries(parts_dir(self.path), prefix)
        if world_size == 1:
            remove_stale_temporaries(self.path.parent, f".{self.path.name}.")
        have = existing_attrs(self.path)
        if have is not None:
            check_provenance(self.path, have, self.provenance)

    def done_ids(self) -> set[str]:
        try:
            with FeatureStore(self.path) as store:
                return set(store.keys())
        except FeatureStoreError:
            return set()

    def add(self, sid: str, features: np.ndarray, mask: np.ndarray | None = None) -> None:
        features = np.asarray(features)
        if not np.isfinite(features.astype(np.float32)).all():
            raise FeatureStoreError(f"features of {sid!r} contain NaN/inf; refusing to cache them.")
        if mask is None:
            mask = np.ones(features.shape[0] if features.ndim > 1 else 1, dtype=bool)
        self._buffer.append((sid, features, np.asarray(mask, dtype=bool)))
        self._frames += features.shape[0] if features.ndim > 1 else 1
        if self._frames >= self.flush_frames:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        target = parts_dir(self.path) / f"part-r{self.rank}-{uuid.uuid4().hex[:12]}.h5"
        with atomic_path(target, ".h5") as tmp:
            write_samples(tmp, self.provenance, self._buffer)
        self._buffer, self._frames = [], 0

    def finalize(self) -> None:
        """Flush, then merge all parts into ``<name>.h5`` (atomic) and remove them."""
        self.flush()
        merge_parts(self.path)


def write_samples(path: Path, attrs: dict, samples: Iterable[tuple[str, np.ndarray, np.ndarray]]) -> None:
    with h5py.File(path, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v if v is not None else ""
        masks = f.create_group(MASK)
        for sid, feats, mask in samples:
            f.create_dataset(sid, data=feats)
            masks.create_dataset(sid, data=mask)


def merge_parts(path: Path) -> None:
    """Merge ``<name>.parts/`` into ``<name>.h5`` atomically. Call only when no writer is running."""
    pdir = parts_dir(path)
    remove_stale_temporaries(path.parent, f".{path.name}.")  # a merge killed half-way
    parts = sorted(pdir.glob("part-*.h5"))
    if not parts:
        if pdir.is_dir():
            shutil.rmtree(pdir, ignore_errors=True)
        return
    with FeatureStore(path) as store:
        attrs = dict(store.attrs)
        with atomic_path(path, ".h5") as tmp:
            write_samples(tmp, attrs, ((sid, *store.read(sid)) for sid in store.keys()))
    shutil.rmtree(pdir, ignore_errors=True)
