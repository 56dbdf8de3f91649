"""An acknowledged message survives a disk that fills and frees: appends that fail leave no
fragment, a torn tail never swallows the next record, and a failed store is never answered 250.

Unit tests inject the failing write; the integration test fills a real tmpfs (as root) under a
real receiver on 127.0.0.1 and drives it with smtplib until ENOSPC, then frees it.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import secrets
import smtplib
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope, Session
from full_disk import fill, free_one_page, small_tmpfs

from harness.arrivals import find_arrivals
from lab import evidence_store, receiver
from lab.backends.local import LocalBackend
from lab.evidence_store import (
    FAULTS_FILE,
    MESSAGES_FILE,
    SESSIONS_FILE,
    EvidenceStore,
    JsonLines,
    read_faults,
    read_messages,
    read_sessions,
    write_durably,
)
from lab.pki import LabPki
from lab.serve import ReceiverEndpoint
from lab.session_record import SessionRecord
from lab.spec import ReceiverSpec

CLIENT = "disk.lab.test"
STORE_FAILED = "451 4.3.0 Lab evidence store failed"
FULL_DISK_ROUNDS = 24  # pages freed one at a time while the disk is full
REAL_WRITE = os.write


def failing_write(folder: Path, short_after: int) -> Callable[[int, Any], int]:
    """Return an os.write that, under `folder` from write `short_after`, writes half then ENOSPC."""
    calls = {"n": 0}

    def write(fd: int, data: Any) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(str(folder)):
            return REAL_WRITE(fd, data)
        calls["n"] += 1
        if calls["n"] < short_after:
            return REAL_WRITE(fd, data)
        if calls["n"] == short_after:
            return REAL_WRITE(fd, bytes(data)[: max(1, len(data) // 2)])
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def record(n: int) -> dict[str, Any]:
    """Return a message-like record with a nested object, as the receiver writes them."""
    return {"kind": "message", "n": n, "rcpt_tos": [f"inbox{n}@x.lab.test"], "nested": {"n": n}}


# ---------------------------------------------------------------- appends (injected failure)


def test_an_append_cut_short_by_enospc_leaves_nothing_and_the_next_one_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = JsonLines(tmp_path / MESSAGES_FILE)
    lines.append(record(1))
    monkeypatch.setattr(os, "write", failing_write(tmp_path, short_after=1))
    with pytest.raises(OSError, match="No space left"):
        lines.append(record(2))
    monkeypatch.setattr(os, "write", REAL_WRITE)  # the disk is freed
    lines.append(record(3))
    assert [r["n"] for r in evidence_store.read_messages(tmp_path)] == [1, 3]
    data = lines.path.read_bytes()
    assert data.count(b"\n") == 2, data  # no fragment of record 2
    assert data.endswith(b"\n"), data


def test_an_append_without_the_fault_keeps_every_record(tmp_path: Path) -> None:
    lines = JsonLines(tmp_path / MESSAGES_FILE)
    for n in (1, 2, 3):
        lines.append(record(n))
    assert [r["n"] for r in read_messages(tmp_path)] == [1, 2, 3]


def test_a_torn_tail_left_by_a_crash_is_ended_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / MESSAGES_FILE
    whole = json.dumps(record(1), sort_keys=True).encode() + b"\n"
    torn = json.dumps(record(2), sort_keys=True).encode()[:25]  # a kill mid-write
    path.write_bytes(whole + torn)
    JsonLines(path).append(record(3))
    assert path.read_bytes().split(b"\n")[1] == torn, "the fragment stays on a line of its own"
    assert [r["n"] for r in read_messages(tmp_path)] == [1, 3]


def test_a_line_another_process_is_writing_is_not_taken_for_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / MESSAGES_FILE
    whole = json.dumps(record(1), sort_keys=True).encode() + b"\n"
    second = json.dumps(record(2), sort_keys=True).encode() + b"\n"
    path.write_bytes(whole)
    other = os.open(path, os.O_WRONLY | os.O_APPEND)  # another writer, its lock held mid-line
    try:
        fcntl.flock(other, fcntl.LOCK_EX)
        os.write(other, second[:20])
        appending = threading.Thread(target=JsonLines(path).append, args=(record(3),))
        appending.start()
        appending.join(0.3)
        assert appending.is_alive(), "the append waits for the other writer's line"
        assert path.read_bytes() == whole + second[:20]
        os.write(other, second[20:])
        fcntl.flock(other, fcntl.LOCK_UN)
        appending.join(10)
    finally:
        os.close(other)
    assert path.read_bytes().count(b"\n") == 3, "no newline put into the other writer's line"
    assert [r["n"] for r in read_messages(tmp_path)] == [1, 2, 3]
    path.write_bytes(whole + second[:20])  # the control: the same fragment, no writer holding it
    JsonLines(path).append(record(3))
    assert [r["n"] for r in read_messages(tmp_path)] == [1, 3]  # ended as a crash's torn tail


def test_a_file_system_without_locks_still_takes_appends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    lines = JsonLines(tmp_path / MESSAGES_FILE)
    for n in (1, 2):
        lines.append(record(n))
    assert [r["n"] for r in read_messages(tmp_path)] == [1, 2]

    def broken(fd: int, operation: int) -> None:  # the control: any other error fails the append
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fcntl, "flock", broken)
    with pytest.raises(OSError, match="Input/output"):
        lines.append(record(3))
    assert [r["n"] for r in read_messages(tmp_path)] == [1, 2]


def test_appends_from_two_processes_keep_every_record_whole_on_its_own_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / SESSIONS_FILE
    per_process = 300
    children = []
    for first in (0, per_process):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            lines = JsonLines(path)
            for n in range(first, first + per_process):
                lines.append(record(n) | {"pad": "x" * 3000})  # a line over a page
            os._exit(0)
        children.append(pid)
    assert all(os.waitpid(pid, 0)[1] == 0 for pid in children)
    data = path.read_bytes()
    assert b"\n\n" not in data, "no spurious newline between two processes' lines"
    assert data.endswith(b"\n")
    assert sorted(r["n"] for r in read_sessions(tmp_path)) == list(range(2 * per_process))


def test_a_line_still_being_written_yields_no_record_not_even_a_nested_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / SESSIONS_FILE
    whole = json.dumps(record(1), sort_keys=True).encode() + b"\n"
    session = json.dumps({"messages": [record(7)], "peer_ip": "127.0.0.1"}, sort_keys=True)
    cut = session.index("}") + 1  # right after the nested object: it parses on its own
    path.write_bytes(whole + session[:cut].encode())
    assert [r["n"] for r in read_sessions(tmp_path)] == [1]
    path.write_bytes(whole + session.encode() + b"\n")  # the control: the write completes
    assert [r.get("n") for r in read_sessions(tmp_path)] == [1, None]


@pytest.mark.parametrize("junk", [b'{"n": 1, "kind": "mess', b"[1, 2]", b'"text"', b"\xff\xfe{"])
def test_a_reader_yields_nothing_for_a_line_without_a_complete_object(
    tmp_path: Path, junk: bytes
) -> None:
    (tmp_path / MESSAGES_FILE).write_bytes(junk + b"\n" + junk)
    assert list(read_messages(tmp_path)) == []


# ---------------------------------------------------------------- the receiver's reply


def deliver(handler: receiver.LabHandler, spec: ReceiverSpec, text: bytes) -> tuple[str, Any]:
    """Run handle_DATA for one message on a stand-in session; return the reply and the record."""
    server: Any = SimpleNamespace(
        record=SessionRecord(receiver=spec.id, starttls_offered=True),
        deadlines=SimpleNamespace(busy=False),
    )
    envelope = Envelope()
    envelope.mail_from, envelope.rcpt_tos = f"a@{CLIENT}", [f"inbox@{spec.domain}"]
    envelope.original_content = text
    session = Session(asyncio.new_event_loop())
    try:
        reply = asyncio.run(handler.handle_DATA(server, session, envelope))
    finally:
        session.loop.close()
    return reply, server.record


@pytest.mark.parametrize("short_after", [1, 2], ids=["eml-write", "record-append"])
def test_a_failed_store_is_answered_451_and_leaves_no_trace(
    receiver_specs: dict[str, ReceiverSpec],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    short_after: int,
) -> None:
    spec = receiver_specs["tls12"]
    store = EvidenceStore(tmp_path, spec.id)
    handler = receiver.LabHandler(spec, store)
    assert deliver(handler, spec, b"before\r\n")[0].startswith("250 ")
    monkeypatch.setattr(os, "write", failing_write(tmp_path, short_after))
    reply, session = deliver(handler, spec, b"during\r\n")
    monkeypatch.setattr(os, "write", REAL_WRITE)
    assert reply.startswith(STORE_FAILED), reply
    assert reply.endswith("(ENOSPC)"), reply
    assert session.store_error == "ENOSPC: No space left on device"
    assert session.messages == []
    assert deliver(handler, spec, b"after\r\n")[0].startswith("250 ")
    bodies = sorted(p.read_bytes().rsplit(b"\r\n", 2)[-2] for p in store.directory.glob("*.eml"))
    assert bodies == [b"after", b"before"], "nothing of the refused message stays"
    assert not list(store.directory.glob(".*.tmp"))
    assert len(list(read_messages(store.directory))) == 2
    faults = list(read_faults(store.directory))
    assert [f["error"] for f in faults] == ["ENOSPC: No space left on device"]
    assert faults[0]["file"].endswith(".eml" if short_after == 1 else MESSAGES_FILE)


def test_the_fault_ledger_takes_no_new_space_and_keeps_the_newest_fault(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, "tls12")
    ledger = store.directory / FAULTS_FILE
    size = ledger.stat().st_size
    for n in range(evidence_store.FAULT_SLOTS + 3):
        store.faults.record(f"file{n}", OSError(errno.EIO, "Input/output error"))
    assert ledger.stat().st_size == size
    files = [f["file"] for f in read_faults(store.directory)]
    assert len(files) == evidence_store.FAULT_SLOTS
    assert files[0] == "file0"
    assert files[-1] == f"file{evidence_store.FAULT_SLOTS + 2}"
    assert EvidenceStore(tmp_path, "tls12").faults.path.stat().st_size == size  # reopened: kept
    assert len(list(read_faults(store.directory))) == evidence_store.FAULT_SLOTS


def test_opening_a_store_flushes_nothing_and_its_first_fault_flushes_the_ledger_and_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store = EvidenceStore(tmp_path, "tls12")
    ledger = store.directory / FAULTS_FILE
    assert ledger.stat().st_size == evidence_store.FAULT_SLOTS * evidence_store.FAULT_SLOT_BYTES
    assert synced == []  # allocated, not flushed: a ledger lost in a crash held no fault
    store.faults.record("a.eml", OSError(errno.EIO, "Input/output error"))
    assert synced == [str(ledger), str(store.directory)]  # the fault, then the ledger's name
    store.faults.record("b.eml", OSError(errno.EIO, "Input/output error"))
    assert synced == [str(ledger), str(store.directory), str(ledger)]  # control: once is enough
    synced.clear()
    reopened = EvidenceStore(tmp_path, "tls12")  # another process: it flushes the name again
    reopened.faults.record("c.eml", OSError(errno.EIO, "Input/output error"))
    assert synced == [str(ledger), str(store.directory)]
    assert [f["file"] for f in read_faults(store.directory)] == ["a.eml", "b.eml", "c.eml"]


def test_a_fault_with_a_long_escaped_name_stays_in_its_own_slot(tmp_path: Path) -> None:
    store = EvidenceStore(tmp_path, "tls12")
    store.faults.record("\x01" * 200 + ".eml", OSError(errno.ENOSPC, "\x02" * 200))
    store.faults.record("next.eml", OSError(errno.EIO, "Input/output error"))
    faults = list(read_faults(store.directory))
    assert [f["error"] for f in faults] == [str(errno.ENOSPC), "EIO: Input/output error"]
    assert faults[1]["file"] == "next.eml"


# ---------------------------------------------------------------- a real full disk (root)


def send(endpoint: ReceiverEndpoint, tag: str) -> tuple[str, int, str]:
    """Send one small message over plaintext SMTP; return its Message-ID and the DATA reply."""
    message_id = f"<{tag}.{secrets.token_hex(6)}@{CLIENT}>"
    body = f"From: <d@{CLIENT}>\r\nMessage-ID: {message_id}\r\n\r\n{tag}\r\n".encode()
    with smtplib.SMTP(endpoint.host, endpoint.port, CLIENT, timeout=20) as smtp:
        smtp.ehlo()
        assert smtp.mail(f"d@{CLIENT}")[0] == 250
        assert smtp.rcpt(f"inbox@{endpoint.domain}")[0] == 250
        code, reply = smtp.data(body)
    return message_id, code, reply.decode()


@pytest.mark.integration
def test_every_acknowledged_message_survives_a_real_disk_full_and_free(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    spec = receiver_specs["no-starttls"]
    with (
        small_tmpfs(tmp_path) as mount,
        LocalBackend().start([spec], lab_pki, mount / "evidence") as lab,
    ):
        endpoint = lab.endpoint(spec.id)
        replies = [send(endpoint, "before") for _ in range(3)]
        filler = fill(mount)
        for round_number in range(FULL_DISK_ROUNDS):
            free_one_page(filler)  # a page at a time: the .eml or a record line gets it
            replies.append(send(endpoint, f"full{round_number}"))
        filler.unlink()
        replies += [send(endpoint, "after") for _ in range(3)]

        acked = [mid for mid, code, _ in replies if code == 250]
        refused = [(code, text) for _, code, text in replies if code != 250]
        directory = endpoint.evidence_dir
        faults = list(read_faults(directory))
        print(f"\ndisk full: {len(acked)} acknowledged, {len(refused)} refused, faults {faults}")
        assert refused, "the disk never filled"
        assert all(code == 451 and STORE_FAILED[4:] in text for code, text in refused), refused
        stored = [r["message_id"] for r in read_messages(directory)]
        missing = [mid for mid in acked if stored.count(mid) != 1]
        assert not missing, f"acknowledged but not readable: {missing}"
        assert all(len(find_arrivals(directory, mid, "lab.test")) == 1 for mid in acked)
        assert set(stored) == set(acked), "only acknowledged messages have records"
        assert {mid for mid, _, _ in replies[-3:]} <= set(acked), "stores again once freed"
        torn = [f for f in faults if f["file"].endswith(".jsonl")]
        assert torn, f"no record append hit the full disk: {faults}"


def test_concurrent_writers_of_one_path_never_rename_each_others_file_away(tmp_path: Path) -> None:
    target = tmp_path / "store-faults.bin"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        for _ in range(40):
            try:
                write_durably(target, bytes([n]) * 4096)
            except OSError as error:  # the old shared temporary name: FileNotFoundError
                errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    data = target.read_bytes()
    assert len(data) == 4096
    assert len(set(data)) == 1, "one writer's whole content, never a mix"
    assert not list(tmp_path.glob(".*.tmp"))
