"""Sender containers started early are handed to the run's first ask, and none outlives the run."""

from __future__ import annotations

import threading

import pytest

from lab.backends.base import LineChannel, SenderContainer
from lab.backends.docker_early import EarlySenders

REFERENCE = SenderContainer("reference", warm=("python", "-m", "worker"))
OTHER = SenderContainer("postfix-may", target="postfix")


class FakeHost:
    """A started container: remembers whether its warm command was closed."""

    def __init__(self, spec: SenderContainer) -> None:
        """Name the host after its spec."""
        self.name, self.address, self.spec = spec.role, "192.0.2.1", spec
        self.warm_closed = False

    def exec(self, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run nothing."""
        return 0, ""

    def logs(self, tail: int) -> str:
        """Return no log."""
        return ""

    def open_channel(self, argv: list[str], env: dict[str, str] | None = None) -> LineChannel:
        """Refuse: nothing here runs a command."""
        raise AssertionError("no command is run by these tests")

    def close_warm(self) -> None:
        """Record that the warm command was closed."""
        self.warm_closed = True


class FakeEngine:
    """Starts FakeHosts, optionally held until released or failing once."""

    def __init__(self, fail_first: bool = False) -> None:
        """Nothing started yet."""
        self.started: list[FakeHost] = []
        self.release = threading.Event()
        self.release.set()
        self.fail_first = fail_first

    def start(self, spec: SenderContainer) -> FakeHost:
        """Start a host for `spec` once released."""
        self.release.wait(10)
        if self.fail_first:
            self.fail_first = False
            raise RuntimeError("the engine failed")
        host = FakeHost(spec)
        self.started.append(host)
        return host


def test_an_early_container_is_handed_out_once_then_asks_start_anew() -> None:
    engine = FakeEngine()
    early = EarlySenders(engine.start)
    early.begin([REFERENCE, REFERENCE])  # equal specs start one container
    first = early.sender_host(REFERENCE)
    assert len(engine.started) == 1
    assert first is engine.started[0]
    second = early.sender_host(REFERENCE)
    assert second is not first
    assert len(engine.started) == 2
    early.close()
    assert not first.warm_closed, "a container that was taken keeps its warm command"


def test_a_spec_not_begun_starts_when_asked() -> None:
    engine = FakeEngine()
    early = EarlySenders(engine.start)
    early.begin([REFERENCE])
    host = early.sender_host(OTHER)
    assert host.name == OTHER.role
    early.close()
    assert [h.spec for h in engine.started] == [REFERENCE, OTHER]


def test_close_waits_for_starts_in_progress_and_closes_what_nobody_took() -> None:
    engine = FakeEngine()
    engine.release.clear()
    early = EarlySenders(engine.start)
    early.begin([REFERENCE])
    threading.Timer(0.2, engine.release.set).start()
    early.close()  # returns only once the start in progress ended
    (host,) = engine.started
    assert host.warm_closed
    early.begin([OTHER])  # a closed run starts nothing more
    assert len(engine.started) == 1


def test_an_early_start_that_failed_raises_to_the_first_ask_only() -> None:
    engine = FakeEngine(fail_first=True)
    early = EarlySenders(engine.start)
    early.begin([REFERENCE])
    with pytest.raises(RuntimeError, match="the engine failed"):
        early.sender_host(REFERENCE)
    host = early.sender_host(REFERENCE)
    assert host.name == REFERENCE.role
    early.close()
