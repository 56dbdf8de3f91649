"""Receiver limits: session caps per receiver and per client, errors, idle and command deadlines."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Callable
from typing import Any, Protocol

TOO_MANY_SESSIONS = "421 4.7.0 Too many sessions, try later"
TOO_MANY_CONNECTIONS = "421 4.7.0 {host} Error: too many connections from {ip}"  # Postfix's text
TOO_MANY_ERRORS = "421 4.7.0 {host} Error: too many errors"  # Postfix's text
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"  # Postfix's text
JUNK_COMMANDS = frozenset({"NOOP", "RSET", "VRFY", "EXPN", "HELP", "HELO", "EHLO", "ETRN"})
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
        self._per_client: collections.Counter[tuple[str, str]] = collections.Counter()
        self._counted: dict[Closable, tuple[str, str]] = {}
        self._pending: set[asyncio.Future[None]] = set()
        self._changed: asyncio.Event | None = None

    def open(
        self, session: Closable, receiver: str, client: str, cap: int, per_client: int
    ) -> str | None:
        """Track a new session; admit it (None) or name the cap it is over (not counted then)."""
        # Postfix exempts $mynetworks (loopback too) from its per-client cap; the lab exempts
        # nobody, so a local run's senders, all on 127.0.0.1, share `per_client` places.
        self.live.add(session)
        key = (receiver, client)
        if self._per_client[key] >= per_client:
            return "client-cap"
        if self._admitted[receiver] >= cap:
            return "session-cap"
        self._admitted[receiver] += 1
        self._per_client[key] += 1
        self._counted[session] = key
        return None

    def close(self, session: Closable) -> None:
        """Forget a session (idempotent), freeing its place under both caps."""
        self.live.discard(session)
        key = self._counted.pop(session, None)
        if key is not None:
            self._admitted[key[0]] -= 1
            self._per_client[key] -= 1
            if not self._per_client[key]:
                del self._per_client[key]
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


class ErrorCount:
    """Postfix's smtpd_hard_error_limit with smtpd_junk_command_limit: 421 and close past them."""

    # The rule of Postfix's smtpd_proto() (smtpd_hard_error_limit, smtpd_junk_command_limit,
    # smtpd_recipient_overshoot_limit): every command answered with a 4xx or 5xx reply counts
    # one error; the junk commands (NOOP, RSET, VRFY, EXPN, HELP, HELO, EHLO, ETRN: repeatable
    # without delivering anything) are free up to `junk_limit` and each one past it counts one
    # error; a RCPT answered 452 for exceeding the recipient limit counts only once the client
    # has overshot that limit by as many recipients again (Postfix's defaults are 1000 and
    # 1000). Once `error_limit` errors are counted the receiver answers
    # "421 4.7.0 <host> Error: too many errors" before reading another command and closes.
    # A message accepted with 250 forgives both counts, as Postfix does. Unlike Postfix, a
    # 4.3.X reply (the receiver's own transient fault) is not held against the client.

    def __init__(self, error_limit: int, junk_limit: int, recipient_limit: int) -> None:
        """Count nothing yet; enforce the given limits."""
        self._error_limit, self._junk_limit = error_limit, junk_limit
        self._overshoot_limit = recipient_limit
        self.errors = self.junk = self.overshoot = 0

    @property
    def exceeded(self) -> bool:
        """Return True once the session has made `error_limit` errors."""
        return self.errors >= self._error_limit

    def command(self, verb: str) -> None:
        """Count a command about to run: a junk command past the junk limit is an error."""
        if verb in JUNK_COMMANDS:
            self.junk += 1
            if self.junk > self._junk_limit:
                self.errors += 1

    def reply(self, status: str) -> None:
        """Count a reply: 4xx/5xx is an error, but not 421 (nothing is read after it) or 4.3.X."""
        if status.startswith("250 2.0.0 Ok: queued"):
            self.errors = self.junk = 0  # a delivery forgives earlier trouble
        elif status.startswith(TOO_MANY_RECIPIENTS):
            self.overshoot += 1
            self.errors += self.overshoot > self._overshoot_limit
        elif status[:1] in ("4", "5") and not status.startswith("421"):
            self.errors += status[4:8] != "4.3."  # a transient fault of the receiver itself

    def new_transaction(self) -> None:
        """Start counting recipients past the limit afresh (MAIL, RSET, or a finished DATA)."""
        self.overshoot = 0


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
