"""Run a scoreboard's cells in one lane per sender: independent senders run at the same time."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from harness.model import CellResult
from harness.runner import LabRun


@dataclasses.dataclass(frozen=True)
class Span:
    """When one cell began and ended, in perf_counter seconds."""

    began: float
    ended: float


class Lanes:
    """Cells grouped by sender; each sender's cells run `per_sender` at a time, all senders at once.

    A sender's cells share its container and queue, so its lane is short; different senders
    share nothing but the receivers, so their lanes overlap. `stop()` lets running cells end and
    starts no new one.
    """

    def __init__(self, cells: list[tuple[str, str]], per_sender: int = 1) -> None:
        """Queue the cells by sender, in the order given."""
        self.queues: dict[str, list[tuple[str, str]]] = {}
        for receiver, sender in cells:
            self.queues.setdefault(sender, []).append((receiver, sender))
        self.per_sender = per_sender
        self.spans: dict[tuple[str, str], Span] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def _next(self, sender: str) -> tuple[str, str] | None:
        """Return the sender's next cell to run, or None when its queue is empty or stopped."""
        with self._lock:
            queue = self.queues[sender]
            if self._stopped.is_set() or not queue:
                return None
            return queue.pop(0)

    def _lane(self, run: LabRun, sender: str, report: Callable[[CellResult], None]) -> None:
        """Run the sender's cells one after another until its queue is empty."""
        while (cell := self._next(sender)) is not None:
            began = time.perf_counter()
            result = run.run_cell(*cell)
            with self._lock:
                self.spans[cell] = Span(began, time.perf_counter())
            report(result)

    def stop(self) -> None:
        """Start no new cell."""
        self._stopped.set()

    def run(self, run: LabRun, on_result: Callable[[CellResult], None]) -> None:
        """Run every lane at once and return when all are done (or stopped and drained)."""
        told = threading.Lock()

        def report(result: CellResult) -> None:
            with told:
                on_result(result)

        lanes = [s for s in self.queues for _ in range(self.per_sender)]
        pool = ThreadPoolExecutor(max_workers=max(1, len(lanes)), thread_name_prefix="lane")
        try:
            futures = [pool.submit(self._lane, run, sender, report) for sender in lanes]
            wait(futures)  # blocks on the lanes themselves: no polling
            for future in futures:
                future.result()
        finally:
            self.stop()
            pool.shutdown(wait=True, cancel_futures=True)


__all__ = ["Lanes", "Span"]
