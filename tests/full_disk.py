"""A small real tmpfs for disk-full tests (root only), filled to ENOSPC and freed page by page."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tools import missing

PAGE = 4096  # tmpfs allocates whole pages: a file takes at least one
FILLER = ".filler"


@contextlib.contextmanager
def small_tmpfs(base: Path, size: str = "1m", options: str = "") -> Iterator[Path]:
    """Mount a tmpfs of `size` at `base/mnt` for the test, and always unmount it."""
    if os.geteuid() != 0:
        missing(
            "root (to mount a filesystem for this test)", "run the tests as root, as .ci/run does"
        )
    mount = base / "mnt"
    mount.mkdir()
    opts = f"size={size}" + (f",{options}" if options else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(mount: Path, leave_pages: int = 0) -> Path:
    """Fill the tmpfs to ENOSPC with a filler file, then free `leave_pages` pages; return it."""
    filler = mount / FILLER
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while _wrote_a_page(fd):
            pass
        size = os.fstat(fd).st_size
        os.ftruncate(fd, size - size % PAGE - leave_pages * PAGE)
    finally:
        os.close(fd)
    assert free_pages(mount) == leave_pages, f"{free_pages(mount)} pages free"
    return filler


def _wrote_a_page(fd: int) -> bool:
    """Append one page to `fd`; return False once the file system is full (ENOSPC)."""
    try:
        os.write(fd, b"\0" * PAGE)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        return False
    return True


def free_one_page(filler: Path) -> None:
    """Give one page of the filler back to the file system."""
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - PAGE))


def free_pages(mount: Path) -> int:
    """Return how many pages the tmpfs still has free."""
    stats = os.statvfs(mount)
    return stats.f_bavail * stats.f_frsize // PAGE
