"""Group commit: concurrent appends share fsyncs, yet none returns before its line is durable,
and a failed fsync fails (and cuts away) exactly the lines it would have made durable.

Unit tests on real files with os.fsync counted or failed by injection; the delays that make
appends overlap are injected into fsync too, so no test depends on the machine's speed.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from lab.evidence_store import MESSAGES_FILE, JsonLines, read_messages

REAL_FSYNC = os.fsync
WRITERS = 8


def slow_fsync(calls: list[int], folder: Path, fail: threading.Event | None = None) -> Any:
    """Return an os.fsync that counts (and slows) the fsyncs of files under `folder`."""

    def fsync(fd: int) -> None:
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            REAL_FSYNC(fd)
            return
        calls.append(fd)
        time.sleep(0.05)  # long enough for the other writers to queue behind this flush
        if fail is not None and fail.is_set():
            fail.clear()
            raise OSError(errno.EIO, "Input/output error")
        REAL_FSYNC(fd)

    return fsync


def append_all(lines: JsonLines, count: int, barrier: threading.Barrier | None) -> list[Any]:
    """Append records 0..count-1, from `count` threads at once (or one by one without barrier)."""

    def one(n: int) -> Any:
        if barrier is not None:
            barrier.wait(10)
        try:
            lines.append({"n": n})
        except OSError as error:
            return error
        return None

    if barrier is None:
        return [one(n) for n in range(count)]
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


@pytest.mark.parametrize("together", [True, False], ids=["concurrent", "control-sequential"])
def test_concurrent_appends_share_fsyncs_and_every_record_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, together: bool
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", slow_fsync(calls, tmp_path))
    lines = JsonLines(tmp_path / MESSAGES_FILE)
    outcomes = append_all(lines, WRITERS, threading.Barrier(WRITERS) if together else None)
    assert outcomes == [None] * WRITERS
    assert sorted(r["n"] for r in read_messages(tmp_path)) == list(range(WRITERS))
    if together:
        assert len(calls) < WRITERS, f"{len(calls)} fsyncs for {WRITERS} concurrent appends"
    else:
        assert len(calls) == WRITERS, "one by one, every append flushes its own line"


def test_no_append_returns_before_an_fsync_that_began_after_its_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / MESSAGES_FILE
    durable: list[int] = []  # line count at the start of each successful fsync

    def fsync(fd: int) -> None:
        seen = path.read_bytes().count(b"\n") if path.exists() else 0
        time.sleep(0.02)
        REAL_FSYNC(fd)
        durable.append(seen)

    monkeypatch.setattr(os, "fsync", fsync)
    lines = JsonLines(path)
    returned: list[tuple[int, int]] = []  # (the record's line number, fsyncs done on return)
    lock = threading.Lock()
    barrier = threading.Barrier(WRITERS)

    def one(n: int) -> None:
        barrier.wait(10)
        lines.append({"n": n})
        with lock:
            number = next(i for i, r in enumerate(read_messages(tmp_path), 1) if r["n"] == n)
            returned.append((number, max(durable, default=0)))

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(one, range(WRITERS)))
    assert len(returned) == WRITERS
    for number, covered in returned:
        assert covered >= number, f"line {number} returned before an fsync covered it"


def test_a_failed_fsync_fails_and_cuts_the_lines_it_covered_and_later_appends_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    fail = threading.Event()
    monkeypatch.setattr(os, "fsync", slow_fsync(calls, tmp_path, fail))
    lines = JsonLines(tmp_path / MESSAGES_FILE)
    lines.append({"n": -1})  # durable before the fault
    fail.set()  # the next fsync fails
    outcomes = append_all(lines, WRITERS, threading.Barrier(WRITERS))
    failed = {n for n, outcome in enumerate(outcomes) if isinstance(outcome, OSError)}
    assert failed, "the failing fsync must fail at least the append that ran it"
    kept = [r["n"] for r in read_messages(tmp_path)]
    assert kept[0] == -1
    assert set(kept[1:]) == set(range(WRITERS)) - failed, "exactly the successful appends stay"
    assert (tmp_path / MESSAGES_FILE).read_bytes().endswith(b"\n")
    lines.append({"n": 99})  # the disk works again
    assert [r["n"] for r in read_messages(tmp_path)][-1] == 99


def test_an_append_opens_its_file_once_and_flushes_through_that_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / MESSAGES_FILE
    lines = JsonLines(path)
    opened: list[int] = []
    flushed: list[int] = []
    real_open = os.open

    def counting_open(name: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(name, flags, *args, **kwargs)
        if Path(name) == path:
            opened.append(fd)
        return fd

    def counting_fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}") == str(path):
            flushed.append(fd)
            assert os.fstat(fd).st_size == path.stat().st_size  # the flushed file is the file
        REAL_FSYNC(fd)

    before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(os, "open", counting_open)
    monkeypatch.setattr(os, "fsync", counting_fsync)
    assert append_all(lines, 5, None) == [None] * 5
    assert len(opened) == 5  # was two per append: one to write, one more to fsync
    assert flushed == opened  # each line flushed through the descriptor it was written by
    assert [r["n"] for r in read_messages(tmp_path)] == list(range(5))
    assert len(os.listdir("/proc/self/fd")) == before  # every descriptor closed again


def test_a_failed_write_closes_its_descriptor_and_leaves_no_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = JsonLines(tmp_path / MESSAGES_FILE)
    lines.append({"n": 0})
    before = len(os.listdir("/proc/self/fd"))
    real_write = os.write

    def full_disk(fd: int, data: Any) -> int:
        if os.readlink(f"/proc/self/fd/{fd}") == str(tmp_path / MESSAGES_FILE):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space left"):
        lines.append({"n": 1})
    monkeypatch.setattr(os, "write", real_write)
    assert len(os.listdir("/proc/self/fd")) == before  # nothing left open
    lines.append({"n": 2})  # control: the next append works and the failed one left nothing
    assert [r["n"] for r in read_messages(tmp_path)] == [0, 2]
