"""Job slots of a cell pool: `jobs` cells work at once; a cell in a modelled wait lends its slot.

A wait that is part of the model (the reference sender's retry delay) is time, not work: while
a cell sleeps through one, its slot runs another cell. When the wait ends, the cell takes a
slot back before any new cell starts.
"""

from __future__ import annotations

import threading
import time

__all__ = ["JobSlots", "holding", "modelled_wait"]


class JobSlots:
    """A count of free slots; cells coming back from a wait are served before new cells.

    Each change wakes only as many waiters as there are free slots (cells coming back first),
    not every waiting thread: with dozens of cells waiting for a slot, waking them all on each
    freed slot cost one thread switch per waiter per cell.
    """

    def __init__(self, jobs: int, lenders: int) -> None:
        """Start with `jobs` free slots; at most `lenders` cells may wait without their slot."""
        self._free, self._lenders = jobs, lenders
        self._returning = 0  # cells whose wait has ended, waiting for a slot
        self._lent = 0  # cells in a wait, their slot lent
        self._closed = False
        lock = threading.Lock()
        self._new = threading.Condition(lock)  # new cells wait here
        self._back = threading.Condition(lock)  # cells coming back from a wait wait here

    def take(self) -> bool:
        """Wait for a free slot for a new cell (after every cell coming back from a wait).

        Return False, taking nothing, once the slots are closed: the cell must not start.
        """
        with self._new:
            self._new.wait_for(lambda: self._closed or (self._free > 0 and not self._returning))
            if self._closed:
                return False
            self._free -= 1
            return True

    def close(self) -> None:
        """Refuse every later take (the run was interrupted); waits already begun go on."""
        with self._new:
            self._closed = True
            self._new.notify_all()

    def give_back(self) -> None:
        """Free the slot of a cell that has ended."""
        with self._new:
            self._free += 1
            self._wake()

    def lend(self) -> bool:
        """Lend the calling cell's slot for a wait; False when too many cells already wait."""
        with self._new:
            if self._lent >= self._lenders:
                return False
            self._lent += 1
            self._free += 1
            self._wake()
            return True

    def reclaim(self) -> None:
        """Take a slot back after a wait, before any new cell takes one."""
        with self._back:
            self._lent -= 1
            self._returning += 1
            self._back.wait_for(lambda: self._free > 0)
            self._returning -= 1
            self._free -= 1
            self._wake()  # a new cell may take a slot once none come back

    def _wake(self) -> None:
        """Wake one waiter per free slot (the lock held): cells coming back, else new cells."""
        if self._free <= 0:
            return
        if self._returning:
            self._back.notify(self._free)
        else:
            self._new.notify(self._free)


_CURRENT = threading.local()  # the slots of the pool whose cell this thread runs, if any


def holding(slots: JobSlots | None) -> None:
    """Record that this thread runs a cell holding one of `slots` (None: no pool's slot)."""
    _CURRENT.slots = slots


def modelled_wait(seconds: float) -> None:
    """Sleep `seconds` of modelled time, lending this thread's job slot meanwhile if it has one."""
    slots: JobSlots | None = getattr(_CURRENT, "slots", None)
    if slots is None or not slots.lend():
        time.sleep(seconds)
        return
    try:
        time.sleep(seconds)
    finally:
        slots.reclaim()
