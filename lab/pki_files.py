"""Files of the lab PKI: the folder's lock, atomic writes, and file failures as CertificateError."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lab.cert_error import FIX, CertificateError

LOCK_NAME = ".lock"
_UNLOCKABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT)
_FULL = (errno.ENOSPC, errno.EDQUOT)


def writable_fix(root: Path, error: OSError | None = None) -> str:
    """Return the fix for a certs folder the lab cannot write, naming its nearest existing part."""
    existing = next((p for p in (root, *root.parents) if p.exists()), root)
    elsewhere = "point --certs (or TLSLAB_CERTS) at a writable folder"
    if error is not None and error.errno in _FULL:
        return f"free space on the filesystem holding {existing}, or {elsewhere}"
    return f"make {existing} writable, or {elsewhere}"


def not_a_file(path: Path, field: str) -> CertificateError:
    """Return the error for a directory (or other non-file) where the lab keeps a file."""
    kind = "a directory" if path.is_dir() else "not a regular file"
    return CertificateError(
        path, field, f"is {kind}, not a file", f"remove or rename it, then {FIX}"
    )


def check_root(root: Path) -> None:
    """Raise CertificateError unless root is a directory or does not exist yet."""
    if (root.exists() or root.is_symlink()) and not root.is_dir():
        fix = f"remove or rename it, or point --certs (or TLSLAB_CERTS) at a folder; then {FIX}"
        raise CertificateError(root, "certs", "is not a directory", fix)


def make_dir(path: Path, root: Path, field: str) -> None:
    """Create path (and parents) as a folder; raise CertificateError naming what is in the way."""
    if path.is_dir():
        return
    if path.exists() or path.is_symlink():
        raise CertificateError(
            path, field, "is not a directory", f"remove or rename it, then {FIX}"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        problem = f"cannot create the folder ({error.strerror or error})"
        raise CertificateError(path, field, problem, writable_fix(root, error)) from None


@contextlib.contextmanager
def locked(root: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold root/.lock, exclusively to write or shared to read (unlocked if it cannot be made).

    A folder where the lock file cannot be created (read-only filesystem, no permission, not yet
    made) is used unlocked: reading needs no writer's cooperation there, and any write fails and
    names its file.
    """
    path = root / LOCK_NAME
    fd = None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except IsADirectoryError:
        raise not_a_file(path, "lock") from None
    except OSError as error:
        if error.errno not in _UNLOCKABLE:
            problem = f"cannot open the lock file ({error.strerror or error})"
            raise CertificateError(path, "lock", problem, writable_fix(root, error)) from None
    if fd is None:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_atomic(root: Path, path: Path, data: bytes, mode: int, field: str) -> None:
    """Write data to path via a temp file in the same folder and a rename, with mode set."""
    make_dir(path.parent, root, field)
    if path.is_dir():
        raise not_a_file(path, field)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _cannot_write(root, path, field, error) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise _cannot_write(root, path, field, error) from None
        raise


def _cannot_write(root: Path, path: Path, field: str, error: OSError) -> CertificateError:
    """Return the error for a failed write of path."""
    if path.is_dir():
        return not_a_file(path, field)
    return CertificateError(
        path, field, f"cannot write ({error.strerror or error})", writable_fix(root, error)
    )
