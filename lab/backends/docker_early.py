"""Sender containers started together once the lab is up, each handed out to the run's first ask.

A run says up front which sender containers it will ask for (`SenderContainer` specs). Once the
receivers and the lab DNS answer, those containers are started side by side (not during the
receivers' boot: on 2 cores they took its CPU), each with its `warm` command already started in
it (e.g. the first reference-sender worker's interpreter). The first `sender_host(spec)` of an
equal spec gets that container; any other ask starts one as before. Nothing started early
outlives the run: `close` waits for every start in progress, then closes what nobody took, so
the lab's removal that follows finds every container.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from lab.backends.base import SenderContainer, SenderHost

STARTS = 4  # early containers started side by side (the engine's calls, as for receivers)


class WarmHost(SenderHost, Protocol):
    """A sender host whose `warm` command may still be waiting to be taken."""

    def close_warm(self) -> None:
        """Close the warm command's channel if nobody took it."""
        ...


class EarlySenders:
    """The run's sender containers started early, until each is taken or the run ends."""

    def __init__(self, start: Callable[[SenderContainer], WarmHost]) -> None:
        """Start containers with `start` (the backend's own sender_host); nothing started yet."""
        self._start = start
        self._pool: ThreadPoolExecutor | None = None
        self._waiting: dict[SenderContainer, Future[WarmHost]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def begin(self, specs: Sequence[SenderContainer]) -> None:
        """Start each distinct spec in the background (once per run; later calls add nothing)."""
        with self._lock:
            if self._closed or self._pool is not None:
                return
            distinct = list(dict.fromkeys(specs))
            self._pool = ThreadPoolExecutor(
                max_workers=max(1, min(STARTS, len(distinct))), thread_name_prefix="early-sender"
            )
            for spec in distinct:
                self._waiting[spec] = self._pool.submit(self._start, spec)

    def sender_host(self, spec: SenderContainer) -> WarmHost:
        """Return the container started early for an equal spec (once), else start one now.

        An early start that failed raises its error to this first ask; the next ask starts anew.
        """
        with self._lock:
            early = self._waiting.pop(spec, None)
        if early is None:
            return self._start(spec)
        return early.result()

    def close(self) -> None:
        """Wait for the starts in progress, then close the warm commands nobody took."""
        with self._lock:
            self._closed = True
            pool, left = self._pool, list(self._waiting.values())
            self._waiting.clear()
        if pool is not None:
            pool.shutdown(wait=True)
        for future in left:
            if future.exception() is None:
                future.result().close_warm()
