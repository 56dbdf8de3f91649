"""One `tlslab up` per evidence folder: a lock (flock) held for the life of the process."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from lab.backends.base import BackendError

LOCK_FILE = ".tlslab-up.lock"  # never removed: removing it would let two processes lock two files
HINT = "stop the other `tlslab up` first, or give this one its own --evidence-dir"


@contextlib.contextmanager
def hold_evidence_dir(evidence: Path) -> Iterator[None]:
    """Hold `<evidence>/.tlslab-up.lock` for the body; raise BackendError if another `up` holds it.

    The kernel drops the lock when its holder exits, however it exits (a `kill -9` too), so a
    stale `lab.json` left behind never blocks the next `up`, which simply rewrites it.
    """
    try:
        evidence.mkdir(parents=True, exist_ok=True)
        fd = os.open(evidence / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise BackendError(
            f"evidence folder {evidence}: cannot open its lock file: {error.strerror}",
            "pass a writable --evidence-dir",
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackendError(
                f"evidence folder {evidence} is in use by another `tlslab up`{_holder(fd)}", HINT
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _holder(fd: int) -> str:
    """Return ` (pid N)` naming the lock's holder, or nothing when it has not written it yet."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f" (pid {text})" if text.isdigit() else ""
