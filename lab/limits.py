"""Receiver limits: a cap on concurrent sessions per receiver, idle and per-command deadlines."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

TOO_MANY_SESSIONS = "421 4.7.0 Too many sessions, try later"
IDLE_TIMEOUT = "421 4.4.2 {host} Error: idle timeout exceeded, closing connection"
COMMAND_TIMEOUT = "421 4.4.2 {host} Error: command timeout exceeded, closing connection"
ABORT_GRACE = 2.0  # seconds a closing peer gets to take our last reply before we abort

log = logging.getLogger("lab.receiver")


class Closable(Protocol):
    """An open session the registry can ask to close."""

    def close_connection(self) -> None:
        """Tell the peer the receiver is shutting down and close the connection."""
        ...


class SessionRegistry:
    """One process's open sessions: admits at most a cap per receiver, finishes record writes."""

    def __init__(self) -> None:
        """Start with no sessions and no pending writes."""
        self.live: set[Closable] = set()
        self._admitted: collections.Counter[str] = collections.Counter()
        self._counted: set[Closable] = set()
        self._pending: set[asyncio.Future[None]] = set()
        self._changed: asyncio.Event | None = None

    def open(self, session: Closable, receiver: str, cap: int) -> bool:
        """Track a new session; return False (not counted) when `receiver` already has `cap`."""
        self.live.add(session)
        if self._admitted[receiver] >= cap:
            return False
        self._admitted[receiver] += 1
        self._counted.add(session)
        return True

    def close(self, session: Closable, receiver: str) -> None:
        """Forget a session (idempotent), freeing its place under the cap."""
        self.live.discard(session)
        if session in self._counted:
            self._counted.discard(session)
            self._admitted[receiver] -= 1
        self._notify()

    def write(
        self, loop: asyncio.AbstractEventLoop, job: Callable[[], None]
    ) -> asyncio.Future[None]:
        """Run a blocking record write in the executor; `drain` waits for it to finish."""
        future = loop.run_in_executor(None, job)
        self._pending.add(future)
        future.add_done_callback(self._written)
        return future

    def _written(self, future: asyncio.Future[None]) -> None:
        """Forget a finished write and log its failure (the session already ended)."""
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.error("session record not written: %r", future.exception())
        self._notify()

    def _notify(self) -> None:
        """Wake `drain` so it re-checks whether everything is closed and written."""
        if self._changed is not None:
            self._changed.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until no session is open and no write is pending; False if `timeout` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._changed = asyncio.Event()
        while self.live or self._pending:
            self._changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                break
        if self.live or self._pending:
            log.warning(
                "stopped with %d sessions open, %d record writes pending: %r",
                len(self.live), len(self._pending), list(self.live)[:5],
            )  # fmt: skip
            return False
        return True


class Deadlines:
    """Expires a session idle `idle` s or stuck `command` s in one command; not while `busy`."""

    # Idle: no byte from the client (and no reply from us) for `idle` seconds. Command: one
    # command line, DATA transfer or TLS handshake plus the wait for the next command takes
    # longer than `command` seconds (a client trickling bytes is never idle). One timer, armed
    # for the nearer deadline; `busy` (the receiver is storing a message) defers both, and a
    # receiver `behind` (a complete command line still unread, e.g. when starved of CPU) is
    # not a reason to call the client idle.

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        idle: float,
        command: float,
        expire: Callable[[str], None],
        behind: Callable[[], bool] = lambda: False,
    ) -> None:
        """Call `expire(reason)` when a deadline passes; not idle while `behind()` is True."""
        self._loop, self._idle, self._command, self._expire = loop, idle, command, expire
        self._behind = behind
        self._idle_at = self._command_at = math.inf
        self._handle: asyncio.TimerHandle | None = None
        self.busy = False

    def command_started(self) -> asyncio.TimerHandle:
        """Restart both deadlines (a command began or the connection changed); return the timer."""
        now = self._loop.time()
        self._command_at = now + self._command
        self._idle_at = now + self._idle
        return self._schedule()

    def activity(self) -> None:
        """Push the idle deadline back: the client sent bytes, or the receiver replied."""
        self._idle_at = self._loop.time() + self._idle

    def cancel(self) -> None:
        """Stop enforcing the deadlines."""
        if self._handle is not None:
            self._handle.cancel()
        self._idle_at = self._command_at = math.inf

    def _schedule(self) -> asyncio.TimerHandle:
        """Arm the timer for the nearer deadline."""
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_at(min(self._idle_at, self._command_at), self._fire)
        return self._handle

    def _fire(self) -> None:
        """Expire the session if a deadline passed; otherwise re-arm for the nearer one."""
        now = self._loop.time()
        if self.busy:
            self._idle_at = max(self._idle_at, now + self._idle)
            self._command_at = max(self._command_at, now + self._idle)
        elif now >= self._command_at:
            self.cancel()
            self._expire("command-timeout")
            return
        elif now >= self._idle_at and self._behind():
            self._idle_at = now + self._idle  # a whole command waits: we are slow, not the client
        elif now >= self._idle_at:
            self.cancel()
            self._expire("idle-timeout")
            return
        self._schedule()


def abort_later(loop: asyncio.AbstractEventLoop, transport: Any) -> asyncio.TimerHandle:
    """Abort `transport` after ABORT_GRACE unless cancelled (a peer not reading stalls close)."""
    return loop.call_later(ABORT_GRACE, transport.abort)
