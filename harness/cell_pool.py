"""Schedule a run's cells: `jobs` at a time, and every external sender's watch at once."""

from __future__ import annotations

from collections.abc import Callable, Generator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Protocol

from harness.model import CellResult, SenderProfileBase
from harness.scenarios import LoadedSuite
from harness.senders import driver_of
from lab.evidence_watch import WakingEvent

Cell = Generator[None, None, CellResult]  # a cell's run; one pause before an external watch
WATCHERS = 128  # most cells of external senders watched at once (each waits in its own thread)


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
    in this thread, in suite order, so a signal interrupts a hung submission as before.
    """
    watched = {c for c in cells if watched_from_outside(run.loaded.senders[c[1]])}
    if jobs <= 1 and not watched:
        for receiver, sender in cells:
            on_result(run.run_cell(receiver, sender))
        return
    run.stopping.clear()
    watchers = ThreadPoolExecutor(min(WATCHERS, max(1, len(watched))), "watch")
    pool = ThreadPoolExecutor(jobs, "cell") if jobs > 1 else None
    pending: set[Future[object]] = set()

    def step(receiver: str, sender: str) -> CellResult | Future[CellResult]:
        if (receiver, sender) in watched:
            return run.submit_cell(receiver, sender, watchers)
        return run.run_cell(receiver, sender)

    def deliver(value: object) -> None:
        if isinstance(value, Future):
            pending.add(value)  # a submitted cell now being watched
        else:
            assert isinstance(value, CellResult)
            on_result(value)

    try:
        for receiver, sender in cells:
            if pool is None:
                deliver(step(receiver, sender))
            else:
                pending.add(pool.submit(step, receiver, sender))
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                deliver(future.result())
    except BaseException:
        run.stopping.set()  # the watches end at once; their cells are not run
        raise
    finally:
        for executor in (pool, watchers):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
