"""Schedule a run's cells: `jobs` at a time, and every external sender's watch at once."""

from __future__ import annotations

import queue
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

from harness.job_slots import JobSlots, holding
from harness.model import CellResult, SenderProfileBase
from harness.scenarios import LoadedSuite
from harness.senders import driver_of
from lab.evidence_watch import WakingEvent

Cell = Generator[None, None, CellResult]  # a cell's run; one pause before an external watch
WATCHERS = 128  # most cells of external senders watched at once (each waits in its own thread)
LENDERS = 64  # most cells in a modelled wait at once with their job slot lent to another cell


class Stopped(BaseException):
    """A watch ended because its run was interrupted (no cell result: the cell is not run)."""


class CellRunner(Protocol):
    """What the pool needs of a run (harness.runner.LabRun)."""

    loaded: LoadedSuite
    stopping: WakingEvent  # its set() also wakes the watches waiting on evidence

    def run_cell(self, receiver: str, sender: str) -> CellResult:
        """Run one cell to its end."""
        ...

    def submit_cell(
        self, receiver: str, sender: str, watchers: ThreadPoolExecutor
    ) -> CellResult | Future[CellResult]:
        """Run a cell up to its submission; return its result or the future of its watch."""
        ...


def drive(steps: Cell) -> CellResult:
    """Run a cell generator to its end; return its CellResult."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: CellResult = done.value
            return result


def watched_from_outside(profile: SenderProfileBase) -> bool:
    """Return whether the profile's driver is a service the lab watches from outside."""
    return driver_of(profile).watch_seconds(profile) is not None


def run_cells(
    run: CellRunner,
    cells: list[tuple[str, str]],
    jobs: int,
    on_result: Callable[[CellResult], None],
) -> None:
    """Run cells, `jobs` at a time (cells are independent), reporting each as it finishes.

    A cell of a sender watched from outside (relay, SES) is submitted like any cell, then
    watched in a pool of its own, so every submitted cell is watched at the same time and such
    a suite takes about its slowest watch, whatever `jobs` is. With `jobs` 1 every cell starts
    in this thread, in suite order, so a signal interrupts a hung submission as before. With
    more, a cell in a modelled wait (harness.job_slots) lends its slot to the next cell.
    """
    watched = {c for c in cells if watched_from_outside(run.loaded.senders[c[1]])}
    if jobs <= 1 and not watched:
        for receiver, sender in cells:
            on_result(run.run_cell(receiver, sender))
        return
    run.stopping.clear()
    watchers = ThreadPoolExecutor(min(WATCHERS, max(1, len(watched))), "watch")
    slots = JobSlots(jobs, LENDERS) if jobs > 1 else None
    threads = min(len(cells), jobs + LENDERS)
    pool = ThreadPoolExecutor(threads, "cell") if slots is not None else None
    finished: queue.SimpleQueue[Future[Any]] = queue.SimpleQueue()
    outstanding = 0

    def done(future: Future[Any]) -> None:
        finished.put(future)

    def step(receiver: str, sender: str) -> CellResult | Future[CellResult]:
        if (receiver, sender) in watched:
            return run.submit_cell(receiver, sender, watchers)
        return run.run_cell(receiver, sender)

    def in_slot(receiver: str, sender: str) -> CellResult | Future[CellResult]:
        assert slots is not None
        if not slots.take():
            raise Stopped
        holding(slots)
        try:
            return step(receiver, sender)
        finally:
            holding(None)
            slots.give_back()

    def deliver(value: object) -> None:
        nonlocal outstanding
        if isinstance(value, Future):
            outstanding += 1  # a submitted cell now being watched
            value.add_done_callback(done)
        else:
            assert isinstance(value, CellResult)
            on_result(value)

    try:
        for receiver, sender in cells:
            if pool is None:
                deliver(step(receiver, sender))
            else:
                outstanding += 1
                pool.submit(in_slot, receiver, sender).add_done_callback(done)
        while outstanding:
            future = finished.get()  # in the order they finish
            outstanding -= 1
            deliver(future.result())
    except BaseException:
        run.stopping.set()  # the watches end at once; their cells are not run
        if slots is not None:
            slots.close()  # cells not yet started do not start
        raise
    finally:
        for executor in (pool, watchers):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
