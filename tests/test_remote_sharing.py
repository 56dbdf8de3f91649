"""Every reference profile of a run delivers from one sender container through one worker pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.model import ReferenceSenderProfile, TlsMode
from harness.senders.remote import CONTAINER_ROLE, WORKERS_PER_SENDER, RemoteReferenceSender
from harness.senders.worker_pool import WorkerFailed, WorkerPool
from lab.backends.base import LineChannel, RunningLab, SenderContainer
from lab.pki import LabPki

DEFAULT = ReferenceSenderProfile(id="opportunistic")
REQUIRE = ReferenceSenderProfile(id="require", tls=TlsMode.REQUIRED)


class FakeHost:
    """A sender host that runs nothing: the pool never starts a worker in these tests."""

    def __init__(self, name: str) -> None:
        """Name the host."""
        self.name, self.address = name, "192.0.2.1"

    def exec(self, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run nothing."""
        return 0, ""

    def logs(self, tail: int) -> str:
        """Return no log."""
        return ""

    def open_channel(self, argv: list[str], env: dict[str, str] | None = None) -> LineChannel:
        """Refuse: no test here runs a job."""
        raise AssertionError("no worker is started by these tests")


class FakeEngine:
    """Starts FakeHosts and remembers every container it was asked for."""

    def __init__(self) -> None:
        """Nothing started yet."""
        self.asked: list[SenderContainer] = []

    def start(self, spec: SenderContainer) -> FakeHost:
        """Start a host for `spec`."""
        self.asked.append(spec)
        return FakeHost(f"{spec.role}-{len(self.asked)}")


def lab_of(engine: FakeEngine, tmp_path: Path) -> RunningLab:
    """Return a lab whose sender containers come from `engine`."""
    pki = LabPki(tmp_path / "certs", tmp_path / "ca.pem", tmp_path / "untrusted.pem", {})
    return RunningLab("docker", {}, pki, tmp_path / "evidence", sender_host=engine.start)


def test_the_profiles_of_one_lab_share_one_container_and_pool(tmp_path: Path) -> None:
    engine = FakeEngine()
    lab = lab_of(engine, tmp_path)
    first = RemoteReferenceSender(DEFAULT, lab, tmp_path)
    second = RemoteReferenceSender(REQUIRE, lab, tmp_path)
    assert [spec.role for spec in engine.asked] == [CONTAINER_ROLE]
    assert second.host is first.host
    assert second.workers is first.workers
    # negative control: another lab (another run) gets a container of its own
    other_engine = FakeEngine()
    other = RemoteReferenceSender(DEFAULT, lab_of(other_engine, tmp_path), tmp_path)
    assert len(other_engine.asked) == 1
    assert other.host is not first.host
    for sender in (first, second, other):
        sender.close()


def test_the_last_profile_to_close_ends_the_shared_workers(tmp_path: Path) -> None:
    engine = FakeEngine()
    lab = lab_of(engine, tmp_path)
    first = RemoteReferenceSender(DEFAULT, lab, tmp_path)
    second = RemoteReferenceSender(REQUIRE, lab, tmp_path)
    first.close()
    first.close()  # closing twice counts once
    assert not second.workers._closed, "a profile still open keeps the workers"
    second.close()
    with pytest.raises(WorkerFailed, match="closed"):
        second.workers.run({"job": "none"})
    # once every profile closed, the next run on the same lab object starts afresh
    third = RemoteReferenceSender(DEFAULT, lab, tmp_path)
    assert len(engine.asked) == 2
    assert third.host is not first.host
    third.close()


def test_a_container_that_fails_to_start_is_tried_again_by_the_next_profile(
    tmp_path: Path,
) -> None:
    engine = FakeEngine()
    calls: list[str] = []

    def flaky(spec: SenderContainer) -> FakeHost:
        calls.append(spec.role)
        if len(calls) == 1:
            raise RuntimeError("the engine failed")
        return engine.start(spec)

    pki = LabPki(tmp_path / "certs", tmp_path / "ca.pem", tmp_path / "untrusted.pem", {})
    lab = RunningLab("docker", {}, pki, tmp_path / "evidence", sender_host=flaky)
    with pytest.raises(RuntimeError, match="the engine failed"):
        RemoteReferenceSender(DEFAULT, lab, tmp_path)
    sender = RemoteReferenceSender(REQUIRE, lab, tmp_path)
    assert calls == [CONTAINER_ROLE, CONTAINER_ROLE]
    assert len(engine.asked) == 1
    sender.close()


def test_the_shared_pool_may_grow_as_the_profiles_own_pools_could(tmp_path: Path) -> None:
    engine = FakeEngine()
    lab = lab_of(engine, tmp_path)
    first = RemoteReferenceSender(DEFAULT, lab, tmp_path)
    assert first.workers.most == WORKERS_PER_SENDER  # control: one profile, one profile's cap
    second = RemoteReferenceSender(REQUIRE, lab, tmp_path)
    assert first.workers.most == 2 * WORKERS_PER_SENDER
    for sender in (first, second):
        sender.close()


def test_allow_raises_a_capped_pool_only() -> None:
    capped = WorkerPool(FakeHost("h"), ["worker"], most=1)
    capped.allow(2)
    assert capped.most == 3
    uncapped = WorkerPool(FakeHost("h"), ["worker"])
    uncapped.allow(2)
    assert uncapped.most is None
