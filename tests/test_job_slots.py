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


class CountingCondition(threading.Condition):
    """A condition that counts the waits its waiters come back from (woken or timed out)."""

    woken = 0

    def wait(self, timeout: float | None = None) -> bool:
        """Wait as a Condition does, then count the return."""
        result = super().wait(timeout)
        CountingCondition.woken += 1
        return result


def waiting_takers(slots: JobSlots, count: int) -> list[threading.Thread]:
    """Start `count` threads each taking a slot; return once all of them wait."""
    takers = [started(slots.take) for _ in range(count)]
    while len(slots._new._waiters) < count:  # type: ignore[attr-defined]
        threading.Event().wait(0.005)
    return takers


def test_a_freed_slot_wakes_one_waiting_cell_not_every_one() -> None:
    slots = JobSlots(1, 1)
    assert slots.take()
    slots._new = CountingCondition(slots._new._lock)  # type: ignore[attr-defined]
    CountingCondition.woken = 0
    takers = waiting_takers(slots, 20)
    slots.give_back()
    threading.Event().wait(0.2)  # time for any other woken waiter to come back from its wait
    assert sum(not t.is_alive() for t in takers) == 1
    assert CountingCondition.woken == 1, "only the cell that got the slot was woken"
    slots.close()
    for taker in takers:
        taker.join(JOIN)
    assert not any(t.is_alive() for t in takers), "closing still wakes every waiting cell"
    assert CountingCondition.woken == 20


def test_control_a_notify_all_wakes_every_waiting_cell() -> None:
    condition = CountingCondition()
    CountingCondition.woken = 0
    ready = threading.Semaphore(0)

    def waiter() -> None:
        with condition:
            ready.release()
            condition.wait(JOIN)

    threads = [started(waiter) for _ in range(20)]
    for _ in threads:
        ready.acquire()
    with condition:
        condition.notify_all()
    for thread in threads:
        thread.join(JOIN)
    assert CountingCondition.woken == 20, "the counter sees every woken waiter"


def test_slots_freed_while_cells_come_back_go_to_them_then_to_new_cells() -> None:
    slots = JobSlots(2, 2)
    assert [slots.take(), slots.take()] == [True, True]
    assert [slots.lend(), slots.lend()] == [True, True]  # both cells wait, their slots free
    assert [slots.take(), slots.take()] == [True, True]  # two new cells use them
    back = []
    for _ in range(2):
        back.append(started(slots.reclaim))
    while slots._returning < 2:
        threading.Event().wait(0.005)
    takers = waiting_takers(slots, 3)
    slots.give_back()
    slots.give_back()
    for thread in back:
        thread.join(JOIN)
    assert not any(t.is_alive() for t in back), "both returning cells got a slot"
    assert all(t.is_alive() for t in takers), "no new cell started before them"
    slots.give_back()
    slots.give_back()
    threading.Event().wait(0.1)
    assert sum(not t.is_alive() for t in takers) == 2, "two freed slots: two new cells"
    slots.close()
    for taker in takers:
        taker.join(JOIN)
