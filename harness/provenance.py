"""Where a run's results came from: lab version and commit, tool versions, host, suite file."""

from __future__ import annotations

import functools
import hashlib
import platform
import socket
import ssl
import subprocess
import threading
from importlib import metadata
from pathlib import Path

from harness.model import Provenance
from harness.paths import PROJECT_ROOT

GIT_SECONDS = 5.0
UNKNOWN = "unknown"


@functools.cache
def package_version(name: str) -> str:
    """Return an installed distribution's version, or `unknown`."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return UNKNOWN


_COMMIT_LOCK = threading.Lock()  # one git query per root, whichever thread asks first


def lab_commit(root: Path = PROJECT_ROOT) -> str:
    """Return the lab's git commit (`+modified` when the tree differs), or `unknown`."""
    with _COMMIT_LOCK:
        return _git_commit(root)


def prefetch_lab_commit(root: Path = PROJECT_ROOT) -> threading.Thread:
    """Ask git for the lab's commit in a thread now (returned), so the report need not wait."""
    thread = threading.Thread(target=lab_commit, args=(root,), name="lab-commit", daemon=True)
    thread.start()
    return thread


@functools.cache
def _git_commit(root: Path) -> str:
    """Run git twice (HEAD, then whether tracked files differ); remembered per root."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return f"{head}+modified" if changes else head or UNKNOWN  # fmt: skip


def file_sha256(path: Path) -> str:
    """Return the SHA-256 of a file's bytes as hex, or `unknown` when it cannot be read."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return UNKNOWN


def collect(suite_file: Path, backend: str, started: str, finished: str) -> Provenance:
    """Return the provenance of a run of `suite_file` on `backend` made on this host now."""
    return Provenance(
        lab_version=package_version("sender-tls-lab"),
        lab_commit=lab_commit(),
        python=platform.python_version(),
        openssl=ssl.OPENSSL_VERSION,
        aiosmtpd=package_version("aiosmtpd"),
        backend=backend,
        host=socket.gethostname(),
        suite_file=str(suite_file),
        suite_sha256=file_sha256(suite_file),
        started=started,
        finished=finished,
    )


__all__ = ["collect", "file_sha256", "lab_commit", "package_version", "prefetch_lab_commit"]
