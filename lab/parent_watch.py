"""End a child process (SIGTERM to itself) when the process that started it goes away."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def exit_with_parent(pipe_fd: int) -> bool:
    """Get SIGTERM when the parent dies: by prctl (Linux) and when `pipe_fd` reaches EOF.

    The parent holds the write end of the pipe and never writes; the kernel closes it when the
    parent dies however it dies, so the watch works where prctl does not. Returns whether prctl
    was set. prctl's "parent" is the thread that forked this process: spawn from a thread that
    lives as long as the parent process.
    """
    armed = set_parent_death_signal(signal.SIGTERM)
    watcher = threading.Thread(target=_signal_on_eof, args=(pipe_fd,), daemon=True)
    watcher.name = "parent-watch"
    watcher.start()
    return armed


def set_parent_death_signal(signum: signal.Signals) -> bool:
    """Ask Linux to send `signum` when the parent thread exits; False where prctl is missing."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return False
    return int(prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)) == 0


def _signal_on_eof(pipe_fd: int) -> None:
    """Read `pipe_fd` until EOF (anything written is ignored), then SIGTERM this process."""
    with contextlib.suppress(OSError):
        while os.read(pipe_fd, 4096):
            pass
    os.kill(os.getpid(), signal.SIGTERM)
