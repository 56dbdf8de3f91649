"""Job slots: a cell in a modelled wait lends its slot; cells coming back go before new ones."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from harness import cell_pool
from harness.job_slots import JobSlots, holding, modelled_wait
from harness.model import CellResult, Outcome, Verdict
from lab.evidence_watch import WakingEvent

JOIN = 10.0  # seconds a thread that should end is given (a bound, never a measure)


def started(target: Callable[[], object]) -> threading.Thread:
    """Return a started daemon thread running `target`."""
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_lent_slot_serves_another_cell_and_lending_is_bounded() -> None:
    slots = JobSlots(1, 1)
    assert slots.take()
    assert slots.lend()
    other = started(slots.take)  # would wait for ever if the slot were not lent
    other.join(JOIN)
    assert not other.is_alive()
    second = JobSlots(2, 1)
    assert second.take()
    assert second.take()
    assert second.lend()
    assert not second.lend(), "no more lenders than allowed: that cell keeps its slot"


def test_a_cell_coming_back_from_a_wait_goes_before_a_new_cell() -> None:
    slots = JobSlots(1, 1)
    order: list[str] = []
    assert slots.take()
    assert slots.lend()  # the first cell waits, its slot lent ...
    assert slots.take()  # ... to a second cell

    def come_back() -> None:
        slots.reclaim()
        order.append("back")

    def start_new() -> None:
        slots.take()
        order.append("new")

    back = started(come_back)
    while not slots._returning:  # the first cell's wait has ended: it asks for a slot
        threading.Event().wait(0.01)
    new = started(start_new)
    slots.give_back()  # the second cell ends
    back.join(JOIN)
    assert order == ["back"], "the returning cell got the slot, the new one still waits"
    slots.give_back()
    new.join(JOIN)
    assert order == ["back", "new"]


def test_closed_slots_start_no_cell() -> None:
    slots = JobSlots(1, 1)
    assert slots.take()
    result: list[bool] = []
    waiting = started(lambda: result.append(slots.take()))
    slots.close()
    waiting.join(JOIN)
    assert result == [False]
    assert not slots.take()


def test_a_wait_outside_a_pool_just_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("harness.job_slots.time.sleep", slept.append)
    holding(None)
    modelled_wait(1.5)
    assert slept == [1.5]


class Run:
    """A cell runner whose `wait` cells sit in a modelled wait until the `work` cell has run."""

    def __init__(self, senders: dict[str, Any]) -> None:
        """Know the senders; nothing has run."""
        self.loaded: Any = type("Loaded", (), {"senders": senders})()
        self.stopping = WakingEvent()
        self.worked = threading.Event()
        self.seen_during_wait: list[bool] = []

    def run_cell(self, receiver: str, sender: str) -> CellResult:
        """Run one cell: `wait` waits (modelled) for `work`, which just runs."""
        if receiver == "wait":
            modelled_wait(0)
        else:
            self.worked.set()
        return CellResult(
            receiver=receiver, sender=sender, outcome=Outcome.DELIVERED,
            expected=Outcome.DELIVERED, verdict=Verdict.PASS, detail="",
        )  # fmt: skip

    def submit_cell(self, receiver: str, sender: str, watchers: Any) -> CellResult:
        """Not used: no sender here is watched from outside."""
        raise AssertionError("no watched sender")


@pytest.mark.parametrize("lenders", [cell_pool.LENDERS, 0])
def test_cells_in_a_modelled_wait_let_the_next_cell_run(
    monkeypatch: pytest.MonkeyPatch, lenders: int
) -> None:
    run = Run({"s": object()})
    monkeypatch.setattr(cell_pool, "watched_from_outside", lambda profile: False)
    monkeypatch.setattr(cell_pool, "LENDERS", lenders)

    def sleep(seconds: float) -> None:  # the modelled wait ends when `work` ran, or gives up
        run.seen_during_wait.append(run.worked.wait(1.0 if lenders == 0 else JOIN))

    monkeypatch.setattr("harness.job_slots.time.sleep", sleep)
    results: list[CellResult] = []
    cells = [("wait", "s"), ("wait", "s"), ("work", "s")]
    cell_pool.run_cells(run, cells, 2, results.append)
    assert sorted(r.receiver for r in results) == ["wait", "wait", "work"]
    if lenders:
        assert run.seen_during_wait == [True, True], "work ran while both slots' cells waited"
    else:
        assert run.seen_during_wait[0] is False, "control: both holding their slots, it could not"
