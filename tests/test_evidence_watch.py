"""Evidence waits: woken by a write in the watched folder, bounded by their deadline, no leaks."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tools import missing

from lab import evidence_watch
from lab.backends.base import BackendError
from lab.backends.docker import RUN_LABEL
from lab.backends.docker_images import choose_base
from lab.evidence_watch import Changes, WakingEvent, wait_until

LONG = 20.0  # a deadline far beyond what a woken wait takes, even on a loaded runner
WRITE_AFTER = 0.3


def write_later(path: Path, delay: float = WRITE_AFTER) -> subprocess.Popen[bytes]:
    """Start another process that appends a line to `path` after `delay` seconds."""
    script = (
        "import sys, time; time.sleep(float(sys.argv[2]));open(sys.argv[1], 'a').write('{}\\n')"
    )
    return subprocess.Popen([sys.executable, "-c", script, str(path), str(delay)])


def open_fds() -> set[str]:
    """Return this process's open descriptor numbers."""
    return set(os.listdir("/proc/self/fd"))


def test_a_write_by_another_process_wakes_the_wait_long_before_its_deadline(
    tmp_path: Path,
) -> None:
    target = tmp_path / "sessions.jsonl"
    writer = write_later(target)
    began = time.monotonic()
    found = wait_until([tmp_path], target.exists, bool, LONG)
    took = time.monotonic() - began
    writer.wait(10)
    assert found
    assert took < LONG / 4, took


def test_without_a_write_the_wait_returns_at_its_deadline_with_the_last_check(
    tmp_path: Path,
) -> None:
    checks: list[float] = []

    def probe() -> bool:
        checks.append(time.monotonic())
        return (tmp_path / "never").exists()

    began = time.monotonic()
    assert wait_until([tmp_path], probe, bool, 0.5) is False
    took = time.monotonic() - began
    assert 0.5 <= took < 5.0, took
    assert len(checks) == 2, "checked at the start and at the deadline, never on a timer"


def test_a_write_in_another_folder_does_not_wake_the_wait(tmp_path: Path) -> None:
    watched, other = tmp_path / "watched", tmp_path / "other"
    watched.mkdir()
    other.mkdir()
    with Changes([watched]) as changes:
        writer = write_later(other / "sessions.jsonl", 0.1)
        began = time.monotonic()
        woke = changes.wait(1.0)
        took = time.monotonic() - began
        writer.wait(10)
    assert not woke
    assert took >= 1.0, took
    with Changes([watched]) as changes:  # control: the same write in the watched folder wakes it
        writer = write_later(watched / "sessions.jsonl", 0.1)
        began = time.monotonic()
        woke = changes.wait(LONG)
        took = time.monotonic() - began
        writer.wait(10)
    assert woke
    assert took < LONG / 4, took


def test_a_thousand_waits_leave_no_descriptor_and_no_kernel_watch(tmp_path: Path) -> None:
    wait_until([tmp_path], lambda: True, bool, 0.1)  # the process's one instance, opened once
    before = open_fds()
    target = tmp_path / "grows"
    for number in range(1000):

        def write(line: str = f"{number}\n") -> None:
            with target.open("a") as handle:
                handle.write(line)

        writer = threading.Thread(target=write)
        writer.start()
        wait_until([tmp_path], lambda: target.exists() and target.stat().st_size > 0, bool, LONG)
        writer.join()  # its file closed: only the waits' descriptors are left to count
        target.unlink()
    assert open_fds() == before
    assert evidence_watch.kernel_watches() == 0
    fd = evidence_watch.instance_fd()
    assert fd is not None
    marks = Path(f"/proc/self/fdinfo/{fd}").read_text().count("inotify wd:")
    assert marks == 0, "the kernel still holds watches"
    with Changes([tmp_path]):  # control: a wait in progress does show its watch
        assert evidence_watch.kernel_watches() == 1
        assert Path(f"/proc/self/fdinfo/{fd}").read_text().count("inotify wd:") == 1


def test_two_waits_on_one_folder_share_its_watch_and_both_wake(tmp_path: Path) -> None:
    with Changes([tmp_path]) as first, Changes([tmp_path]) as second:
        assert evidence_watch.kernel_watches() == 1
        (tmp_path / "x").write_text("x")
        assert first.wait(LONG)
        assert second.wait(LONG)
        with Changes([tmp_path]):
            pass  # a third wait ending keeps the watch the other two still hold
        assert evidence_watch.kernel_watches() == 1
    assert evidence_watch.kernel_watches() == 0


def test_setting_the_stop_event_wakes_a_wait_at_once(tmp_path: Path) -> None:
    stop = WakingEvent()
    with Changes([tmp_path], stop) as changes:
        threading.Timer(0.2, stop.set).start()
        began = time.monotonic()
        woke = changes.wait(LONG)
        took = time.monotonic() - began
    assert woke
    assert stop.is_set()
    assert took < LONG / 4, took
    with Changes([tmp_path], WakingEvent()) as changes:  # control: an unset stop wakes nothing
        assert not changes.wait(0.3)


def test_a_folder_that_cannot_be_watched_falls_back_to_a_bounded_poll_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evidence_watch, "_warned", False)
    missing = tmp_path / "not-yet"
    target = missing / "ready"
    with caplog.at_level(logging.WARNING, logger="lab.evidence_watch"):

        def create() -> None:
            missing.mkdir()
            target.write_text("x")

        threading.Timer(0.3, create).start()
        began = time.monotonic()
        assert wait_until([missing], target.exists, bool, LONG)
        took = time.monotonic() - began
        wait_until([tmp_path / "also-missing"], lambda: False, bool, 0.1)
    lines = [r.getMessage() for r in caplog.records if r.name == "lab.evidence_watch"]
    assert len(lines) == 1, lines
    assert "poll every 50 ms" in lines[0], lines
    assert "not-yet" in lines[0], lines
    assert took < LONG / 4, took
    assert evidence_watch.kernel_watches() == 0


def test_a_forked_child_does_not_keep_the_instance(tmp_path: Path) -> None:
    with Changes([tmp_path]):
        fd = evidence_watch.instance_fd()
        assert fd is not None
        pid = os.fork()
        if pid == 0:  # the child: its copy of the instance must be closed
            try:
                os.fstat(fd)
                gone = False
            except OSError:
                gone = True
            os._exit(0 if gone and evidence_watch.instance_fd() is None else 1)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    os.fstat(fd)  # control: the parent's instance stays open


# run in a container: write into one bind mount, then, later, into the watched one
CONTAINER_WRITES = (
    "sleep 0.5; echo x > /other/file; sleep 2.5; echo '{}' >> /evidence/sessions.jsonl"
)


@pytest.mark.integration
def test_a_container_writing_into_a_bind_mount_wakes_the_host_watch(
    tmp_path: Path, docker_engine: Any
) -> None:
    evidence, other = tmp_path / "evidence", tmp_path / "other"
    evidence.mkdir()
    other.mkdir()
    try:
        image = choose_base(docker_engine)
    except BackendError as error:
        missing(f"no base image: {error}", "make docker-ready", docker=True)
    labels = {RUN_LABEL: f"evidence-watch-test-{secrets.token_hex(4)}"}
    volumes = {str(evidence): {"bind": "/evidence"}, str(other): {"bind": "/other"}}
    with Changes([evidence]) as changes:
        container = docker_engine.containers.run(
            image, ["sh", "-c", CONTAINER_WRITES], detach=True, labels=labels, volumes=volumes,
            network_mode="none", user=f"{os.getuid()}:{os.getgid()}",
        )  # fmt: skip
        try:
            began = time.monotonic()
            woke = changes.wait(LONG * 3)  # the engine may take a while to start it when loaded
            took = time.monotonic() - began
            written = (evidence / "sessions.jsonl").exists()
        finally:
            container.remove(force=True)
    assert woke, "the container's write never woke the watch"
    assert took < LONG * 3, took
    assert written, "woken before the write into the watched folder"
    assert (other / "file").exists(), "the container did write into the other folder first"
