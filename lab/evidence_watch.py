"""Wait for evidence without polling: block until a watched folder changes or a deadline passes.

One inotify instance per process (Linux, via ctypes) and one reader thread serve every wait;
each folder has one kernel watch while anyone waits on it, removed when the last wait ends, so
waits neither leak descriptors nor use up `fs.inotify.max_user_instances` (128 per user). A wait
is "check the condition; if not met, block until a watched folder changes (a file in it is
created, written, closed after writing or moved in) or the deadline passes; check again".
Receivers in Docker containers write their evidence into bind-mounted host folders, so the
host's kernel sees those writes as it sees its own children's.

Where inotify is unavailable (not Linux, the instance limit reached, a folder that cannot be
watched), one warning line is logged and the waits re-check every FALLBACK_POLL_SECONDS instead,
still bounded by their deadlines.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TypeVar

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000  # the watch is gone (removed, or its folder deleted)
IN_CLOEXEC = 0o2000000
WATCH_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE
FALLBACK_POLL_SECONDS = 0.05
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
_READ_BYTES = 64 * 1024

log = logging.getLogger(__name__)
T = TypeVar("T")


class WakingEvent(threading.Event):
    """A threading.Event whose set() also wakes every Changes that was opened with it."""

    def __init__(self) -> None:
        """Start unset, waking nothing."""
        super().__init__()
        self._wakes: set[threading.Event] = set()
        self._wakes_lock = threading.Lock()

    def set(self) -> None:
        """Set the flag and wake every wait that watches this event."""
        super().set()
        with self._wakes_lock:
            wakes = list(self._wakes)
        for wake in wakes:
            wake.set()

    def _register(self, wake: threading.Event) -> None:
        """Wake `wake` when this event is set (at once if it already is)."""
        with self._wakes_lock:
            self._wakes.add(wake)
        if self.is_set():
            wake.set()

    def _unregister(self, wake: threading.Event) -> None:
        """Stop waking `wake`."""
        with self._wakes_lock:
            self._wakes.discard(wake)


class _Watch:
    """One kernel watch: its descriptor, how many waits hold it, the events it sets."""

    def __init__(self, wd: int) -> None:
        """Hold a fresh watch descriptor, not yet held by any wait."""
        self.wd, self.holders = wd, 0
        self.wakes: set[threading.Event] = set()


class _Inotify:
    """The process's one inotify instance and the thread that turns its events into wakes."""

    def __init__(self) -> None:
        """Open the instance (close-on-exec) and start its reader; OSError when impossible."""
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            self._add = libc.inotify_add_watch
            self._rm = libc.inotify_rm_watch
            init = libc.inotify_init1
        except AttributeError as missing:
            raise OSError(f"no inotify in this C library ({missing})") from None
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = int(init(IN_CLOEXEC))
        if fd < 0:
            number = ctypes.get_errno()
            raise OSError(number, f"inotify_init1: {os.strerror(number)}")
        self.fd = fd
        self.lock = threading.Lock()
        self.watches: dict[int, _Watch] = {}
        threading.Thread(target=self._read_events, name="evidence-watch", daemon=True).start()

    def hold(self, directory: Path, wake: threading.Event) -> int:
        """Have changes in `directory` set `wake`; return the watch descriptor to release."""
        with self.lock:
            wd = int(self._add(self.fd, os.fsencode(directory), WATCH_MASK))
            if wd < 0:
                number = ctypes.get_errno()
                raise OSError(number, os.strerror(number), str(directory))
            watch = self.watches.setdefault(wd, _Watch(wd))
            watch.holders += 1
            watch.wakes.add(wake)
            return wd

    def release(self, wd: int, wake: threading.Event) -> None:
        """Undo one hold; the kernel watch goes with the last one."""
        with self.lock:
            watch = self.watches.get(wd)
            if watch is None:
                return  # the folder was deleted: the kernel removed the watch already
            watch.holders -= 1
            watch.wakes.discard(wake)
            if watch.holders <= 0:
                del self.watches[wd]
                self._rm(self.fd, wd)

    def _read_events(self) -> None:
        """Read events for the life of the process; wake the waits of every folder that changed."""
        fd = self.fd
        while True:
            try:
                data = os.read(fd, _READ_BYTES)
            except OSError:
                return  # the descriptor was closed (a forked child's copy)
            wakes: set[threading.Event] = set()
            with self.lock:
                offset = 0
                while offset + _EVENT.size <= len(data):
                    wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                    offset += _EVENT.size + length
                    if mask & IN_Q_OVERFLOW:  # events were lost: wake every wait to re-check
                        for watch in self.watches.values():
                            wakes |= watch.wakes
                        continue
                    changed = self.watches.get(wd)
                    if changed is not None:
                        wakes |= changed.wakes
                        if mask & IN_IGNORED:
                            del self.watches[wd]
            for wake in wakes:
                wake.set()

    def watch_count(self) -> int:
        """Return how many kernel watches this instance holds now."""
        with self.lock:
            return len(self.watches)


_shared: _Inotify | None = None
_shared_lock = threading.Lock()
_warned = False


def _inotify() -> _Inotify | None:
    """Return the process's inotify instance, opening it on first use; None if unavailable."""
    global _shared
    with _shared_lock:
        if _shared is None:
            try:
                _shared = _Inotify()
            except OSError as error:
                _warn_once(f"inotify unavailable ({error})")
                return None
        return _shared


def _warn_once(reason: str) -> None:
    """Log, once per process, that evidence waits fall back to bounded polling, and why."""
    global _warned
    if not _warned:
        _warned = True
        log.warning("evidence waits poll every %.0f ms: %s", FALLBACK_POLL_SECONDS * 1000, reason)


def _forget_in_child() -> None:
    """In a forked child: close the inherited instance (its reader thread is not there)."""
    global _shared, _shared_lock
    if _shared is not None:
        with contextlib.suppress(OSError):
            os.close(_shared.fd)
    _shared, _shared_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def kernel_watches() -> int:
    """Return how many folders the process's instance watches now (0 when none is open)."""
    shared = _shared
    return 0 if shared is None else shared.watch_count()


def instance_fd() -> int | None:
    """Return the descriptor of the process's inotify instance, None when none is open."""
    shared = _shared
    return None if shared is None else shared.fd


class Changes:
    """A subscription to changes in some folders; open it before the first check of a wait."""

    def __init__(self, directories: Iterable[Path], stop: WakingEvent | None = None) -> None:
        """Watch `directories` from now on; a set `stop` wakes every wait too."""
        self._wake = threading.Event()
        self._held: list[int] = []
        self._stop = stop
        self._polling = False
        inotify = _inotify()
        self._inotify = inotify
        if inotify is None:
            self._polling = True
        else:
            for directory in directories:
                try:
                    self._held.append(inotify.hold(directory, self._wake))
                except OSError as error:
                    _warn_once(f"cannot watch {directory} ({error})")
                    self._polling = True
        if stop is not None:
            stop._register(self._wake)

    def wait(self, seconds: float) -> bool:
        """Block until a watched folder changes, `seconds` pass or the stop is set.

        Return whether something may have changed (False: the time ran out with no change).
        """
        if seconds <= 0:
            return False
        if self._polling:
            woke = self._wake.wait(min(seconds, FALLBACK_POLL_SECONDS))
            self._wake.clear()
            return woke or seconds > FALLBACK_POLL_SECONDS
        woke = self._wake.wait(seconds)
        self._wake.clear()  # before the caller's next check: a change after it wakes again
        return woke

    def close(self) -> None:
        """Stop watching: the last wait on a folder removes its kernel watch."""
        if self._stop is not None:
            self._stop._unregister(self._wake)
            self._stop = None
        held, self._held = self._held, []
        if self._inotify is not None:
            for wd in held:
                self._inotify.release(wd, self._wake)

    def __enter__(self) -> Changes:
        """Return the open subscription."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """Close the subscription."""
        self.close()


def wait_until(
    directories: Iterable[Path],
    probe: Callable[[], T],
    done: Callable[[T], bool],
    seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Return the first `probe()` result that `done` accepts, or the one taken at the deadline.

    The condition is checked once at the start and again after each change in `directories`
    (never on a timer while inotify works), and a last time when `seconds` have passed.
    """
    deadline = clock() + seconds
    with Changes(directories) as changes:
        while True:
            result = probe()
            remaining = deadline - clock()
            if done(result) or remaining <= 0:
                return result
            changes.wait(remaining)
