"""Run `lab.serve` in a forked child of a process that already imported it: no second start-up.

The child is a separate process as before (a receiver crash never takes the parent with it; the
parent-death watch of lab.parent_watch still ends it), with its standard input and output piped
to the parent and its standard error on a log file, like the `python -m lab.serve` it replaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import select
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence

PR_SET_NAME = 15  # from <linux/prctl.h>: the name `ps` and /proc/<pid>/comm show
CHILD_NAME = b"lab.serve"
CRASH_STATUS = 70  # EX_SOFTWARE: the child raised instead of returning a status
_PARENT_ENDS: set[int] = set()  # write ends of live children's watch pipes, closed in new children


class ForkedServe:
    """A forked `lab.serve` child: its pid, the pipe it reads (EOF = parent gone), its output."""

    def __init__(self, pid: int, stdin_fd: int, stdout_fd: int) -> None:
        """Hold the child's pid and the parent's ends of its pipes (raw descriptors)."""
        self.pid, self.stdin_fd, self.stdout_fd = pid, stdin_fd, stdout_fd
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """Return the child's exit status once it has exited, else None (reaps it)."""
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit (TimeoutError after `timeout` seconds); return its status."""
        status = self.poll()
        if status is None:
            _until_exit(self.pid, timeout)
            status = self.poll()
        if status is None:
            raise TimeoutError(f"receiver child {self.pid} still running after {timeout} s")
        return status

    def signal(self, signum: signal.Signals) -> None:
        """Send a signal to the child unless it has already been reaped."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def close_pipes(self) -> None:
        """Close the parent's ends of the child's pipes (closing stdin is the watch's EOF)."""
        for fd in (self.stdin_fd, self.stdout_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        _PARENT_ENDS.discard(self.stdin_fd)
        self.stdin_fd = self.stdout_fd = -1


def _until_exit(pid: int, timeout: float | None) -> None:
    """Block until the child `pid` exits or `timeout` seconds pass (its pidfd: no polling)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone (reaped by someone else): poll() says what is left to say
    except OSError:  # no pidfd (Linux < 5.3): look on a short timer instead (not reaping)
        deadline = None if timeout is None else time.monotonic() + timeout
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(0.005)
        return
    try:
        select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)


def fork_serve(argv: Sequence[str], log_fd: int) -> ForkedServe:
    """Fork a child running `lab.serve.main(argv)` with stdin/stdout piped, stderr on `log_fd`."""
    from lab import serve  # already imported by every caller; the child inherits it

    child_in, parent_in = os.pipe()
    parent_out, child_out = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the parent's code

        def serve_argv() -> int:
            _become_child(child_in, child_out, log_fd, (parent_in, parent_out))
            return serve.main(list(argv))

        os._exit(exit_status_of(serve_argv))
    os.close(child_in)
    os.close(child_out)
    _PARENT_ENDS.add(parent_in)
    return ForkedServe(pid, parent_in, parent_out)


def exit_status_of(life: Callable[[], int]) -> int:
    """Run a child's `life`; return its exit status (a crash: traceback to stderr, CRASH_STATUS)."""
    status = CRASH_STATUS
    try:
        status = life()
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 2
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
    return status


def _become_child(stdin_fd: int, stdout_fd: int, log_fd: int, parent_ends: tuple[int, ...]) -> None:
    """Put the pipes on descriptors 0-2, drop the parent's pipe ends, name the process."""
    os.dup2(stdin_fd, 0)
    os.dup2(stdout_fd, 1)
    os.dup2(log_fd, 2)
    for fd in {stdin_fd, stdout_fd, *parent_ends, *_PARENT_ENDS} - {0, 1, 2}:
        with contextlib.suppress(OSError):
            os.close(fd)  # other children's watch pipes must reach EOF when this parent dies
    _PARENT_ENDS.clear()
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)  # the parent's handlers are not the child's
    warnings.resetwarnings()  # a fresh interpreter's filters, not the parent's (a test runner's)
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)
    logging.root.handlers.clear()  # as in a fresh interpreter: warnings and errors to stderr
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_NAME, CHILD_NAME, 0, 0, 0)
