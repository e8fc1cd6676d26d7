"""Advisory locks on outputs: one process at a time writes a given output.

``with output_lock(path, what="feature extraction"):`` takes an exclusive ``flock`` on
``<path>.lock`` (created beside the output, left in place afterwards). While another process holds
it, the caller waits, printing once who holds it — pid, host, since when, and its command line,
which the holder writes into the lock file — or, with ``timeout`` seconds, raises
:class:`OutputLockedError` saying so. The kernel releases the lock when its holder exits, however
it exits (kill -9 included), so a lock is never stale. The lock is re-entrant within one process.

On systems without ``fcntl`` (Windows) no lock is taken.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from emotk.errors import EmotkError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_DETAILS_GRACE = 2.0  # seconds a waiter gives a fresh holder to write its details
_HELD: dict[str, int] = {}  # lock files this process holds → nesting depth


class OutputLockedError(EmotkError):
    """Another process holds the lock of an output and the wait timed out."""


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output: ``<path>.lock``."""
    return Path(f"{Path(path)}.lock")


def lock_holder(path: str | os.PathLike) -> dict:
    """What the holder wrote into ``<path>.lock`` (pid, host, since, what, command); {} when unknown."""
    try:
        return json.loads(lock_path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(holder: dict) -> str:
    if not holder:
        return "another process (it has not written its details yet)"
    since = holder.get("since")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} since {when}"
            + (f" ({holder['command']})" if holder.get("command") else ""))


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@contextmanager
def output_lock(path: str | os.PathLike, what: str = "output", timeout: float | None = None,
                poll: float = 0.2, notify: Callable[[str], None] | None = _stderr) -> Iterator[Path]:
    """Hold the exclusive lock of output ``path`` for the ``with`` block; yields the lock file's path.

    ``timeout``: None waits as long as it takes; a number of seconds (0: do not wait) raises
    :class:`OutputLockedError` naming the holder when the lock is still taken by then. ``notify``
    receives one line when the call has to wait (default: printed to stderr; None: silent).
    """
    lock = lock_path(path)
    key = str(lock.absolute())
    if fcntl is None or key in _HELD:
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield lock
        finally:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        _acquire(fd, path, what, timeout, poll, notify)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "what": what,
                  "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        _HELD[key] = 1
        try:
            yield lock
        finally:
            del _HELD[key]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, path, what: str, timeout: float | None, poll: float, notify) -> None:
    """flock ``fd`` exclusively, polling; tell ``notify`` once who holds it; give up after ``timeout``."""
    start = time.monotonic()
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        details = lock_holder(path)
        holder = describe_holder(details)
        waited = time.monotonic() - start
        if timeout is not None and waited >= timeout:
            raise OutputLockedError(
                f"{what} {path} is being written by {holder}; gave up after {timeout:g} s. Wait for that "
                "process to finish (or stop it), then run the command again."
            )
        # The holder writes its details just after taking the lock: give it a moment before
        # telling the user "unknown", so the line names the holder whenever it can.
        if not told and notify is not None and (details or waited >= _DETAILS_GRACE):
            notify(f"waiting for {what} {path}: it is being written by {holder}")
            told = True
        time.sleep(poll)
