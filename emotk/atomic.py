"""Atomic file writes: write to a temporary name in the same folder, then rename.

Every output is created with the user's umask (``0o666 & ~umask``), like a file opened by ``open``;
a write that fails because the disk (or quota) is full raises :class:`DiskFullError` naming what
was being written and how much space is free, and leaves the previous version of the output as it was.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from emotk.errors import DiskFullError, EmotkError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
#: Below this many free bytes a failed write is taken for a full disk, whatever the exception says:
#: some writers (torch.save) report a full disk only as "unexpected pos …".
NEARLY_FULL = 1 << 20


def current_umask() -> int:
    """The process's umask (from /proc on Linux; elsewhere set and restored at once)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes free for this user on the filesystem holding ``folder`` (its nearest existing ancestor)."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` says the disk or quota is full (errno, or the text h5py/polars wrap it in)."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    return any(s in text for s in ("No space left on device", "Disk quota exceeded", "errno = 28", "os error 28"))


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def disk_full_error(path: Path, what: str | None = None, needed: int | None = None, written: int | None = None,
                    cause: BaseException | None = None) -> DiskFullError:
    """The one message for a full disk: what was being written, the space needed / free, what to do."""
    path = Path(path)
    free = free_bytes(path.parent)
    parts = [f"no space left on the device while writing {what + ' ' if what else ''}{path}"]
    if needed is not None:
        parts.append(f"about {_size(needed)} are needed and {_size(free)} are free in {path.parent}")
    else:
        parts.append(f"{_size(free)} free in {path.parent}"
                     + (f" after {_size(written)} of it were written" if written else ""))
    kept = f"the existing {path.name} is unchanged" if path.exists() else f"nothing was written to {path.name}"
    detail = f" (the write failed with {type(cause).__name__}: {str(cause)[:160]})" if cause is not None else ""
    return DiskFullError(
        f"{'; '.join(parts)}{detail}. Free space on that disk (or use another --workspace) and run the same "
        f"command again; {kept}."
    )


def ensure_free_space(path: str | os.PathLike, needed: int, what: str | None = None) -> None:
    """Raise :class:`DiskFullError` before writing ``needed`` bytes to ``path`` if the disk has less free."""
    free = free_bytes(Path(path).parent)
    if free is not None and free < needed:
        raise disk_full_error(Path(path), what, needed=needed)


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "", what: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    The result gets the permissions ``0o666 & ~umask``. A failure caused by a full disk or quota is
    raised as :class:`DiskFullError` (``what`` names the output in its message); ``path`` itself is
    never touched unless the write succeeded.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, what, cause=exc) from exc
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except Exception as exc:
        written = tmp_path.stat().st_size if tmp_path.exists() else None
        free = free_bytes(path.parent)  # measured before the temporary is removed
        full = is_disk_full(exc) or (free is not None and free < NEARLY_FULL and not isinstance(exc, EmotkError))
        tmp_path.unlink(missing_ok=True)
        if full and not isinstance(exc, DiskFullError):
            raise disk_full_error(path, what, written=written, cause=exc) from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, what: str | None = None) -> None:
    with atomic_path(path, what=what) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | os.PathLike, data: bytes, suffix: str = "", what: str | None = None) -> None:
    with atomic_path(path, suffix, what=what) as tmp:
        tmp.write_bytes(data)


#: HDF5 1.10 file format: checksummed metadata (garbage in it is an error, not misread), any HDF5 >= 1.10 reads it.
HDF5_LIBVER = ("v110", "v110")


def hdf5_bytes(fill: Callable, libver: tuple[str, str] = HDF5_LIBVER) -> bytes:
    """The bytes of an HDF5 file that ``fill(h5py.File)`` populates, built in memory (no disk I/O)."""
    import uuid

    import h5py

    with h5py.File(f"emotk-{uuid.uuid4().hex}.h5", "w", driver="core", backing_store=False, libver=libver) as f:
        fill(f)
        f.flush()
        return f.id.get_file_image()


def write_hdf5(path: str | os.PathLike, fill: Callable, what: str | None = None) -> None:
    """Write an HDF5 file atomically: ``fill(h5py.File)`` populates it in memory, then its bytes are
    written with plain file I/O. HDF5 itself can crash the process when a write meets a full disk;
    this way a full disk is a :class:`DiskFullError` like any other write. For files that fit in memory."""
    write_bytes(path, hdf5_bytes(fill), ".h5", what=what)


def write_json(path: str | os.PathLike, obj, what: str | None = None) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", what=what)


def write_parquet(path: str | os.PathLike, frame, what: str | None = None) -> None:
    """Write a polars DataFrame atomically."""
    with atomic_path(path, ".parquet", what=what) as tmp:
        frame.write_parquet(tmp)


def remove_stale_temporaries(folder: str | os.PathLike, prefix: str = ".") -> int:
    """Delete ``.name.*.tmp*`` files left by a killed process (only those starting with ``prefix``); returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for p in folder.glob(".*.tmp*"):
        if not p.name.startswith(prefix):
            continue
        p.unlink(missing_ok=True)
        n += 1
    return n


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a file's content, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
