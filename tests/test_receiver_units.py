"""Receiver parts driven in-process with stand-ins: what real sockets cannot force on demand.

A peer that never lets a close finish, and a queue id drawn twice, need a fake transport or a
patched id source; they live here, outside the `integration` modules, which use only real parts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiosmtpd.smtp import Envelope, Session

from lab import limits, receiver
from lab.evidence_store import EvidenceStore, read_messages, read_sessions
from lab.receiver import LabSMTP
from lab.session_record import SessionRecord
from lab.spec import ReceiverSpec

LOOPBACK = "127.0.0.1"
WAIT = 10.0  # upper bound of any wait in this module


class StalledTransport(asyncio.Transport):
    """A transport whose peer never reads: `close()` never completes, only `abort()` ends it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.calls: list[str] = []
        self.aborted = asyncio.Event()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (LOOPBACK, 40000)}.get(name, default)

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return bool(self.calls)

    def close(self) -> None:
        self.calls.append("close")

    def abort(self) -> None:
        self.calls.append("abort")
        self.aborted.set()


def test_a_close_the_peer_never_lets_finish_is_aborted(
    receiver_specs: dict[str, ReceiverSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "ABORT_GRACE", 0.05)
    spec = receiver_specs["no-starttls"].model_copy(update={"idle_timeout_seconds": 0.05})

    async def scenario() -> StalledTransport:
        transport = StalledTransport()
        loop = asyncio.get_running_loop()
        protocol = LabSMTP(spec, EvidenceStore(tmp_path, spec.id), loop=loop)
        protocol.connection_made(transport)
        await asyncio.wait_for(transport.aborted.wait(), WAIT)
        protocol.connection_lost(None)  # what the transport reports once aborted
        return transport

    transport = asyncio.run(scenario())
    assert transport.calls[:2] == ["close", "abort"]
    greeting, goodbye = transport.written.decode().splitlines()
    assert greeting.startswith("220 mx.no-starttls.lab.test ")
    assert goodbye.startswith("421 4.4.2 mx.no-starttls.lab.test Error: idle timeout exceeded")
    [record] = read_sessions(tmp_path / spec.id)
    assert record["ended_by"] == "idle-timeout"


def test_a_queue_id_already_on_disk_is_drawn_again(
    receiver_specs: dict[str, ReceiverSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = receiver_specs["tls12"]
    store = EvidenceStore(tmp_path, spec.id)
    drawn = iter(["AAAAAAAAAAAA", "AAAAAAAAAAAA", "BBBBBBBBBBBB"])
    monkeypatch.setattr(receiver, "new_queue_id", lambda: next(drawn))
    handler = receiver.LabHandler(spec, store)
    server = SimpleNamespace(
        record=SessionRecord(receiver=spec.id, starttls_offered=True),
        deadlines=SimpleNamespace(busy=False),
    )
    replies = []
    for text in (b"one\r\n", b"two\r\n"):
        envelope = Envelope()
        envelope.mail_from, envelope.rcpt_tos = "a@client.lab.test", [f"inbox@{spec.domain}"]
        envelope.original_content = text
        stand_in: Any = server  # the handler only touches the session's record and deadlines
        session = Session(asyncio.new_event_loop())
        replies.append(asyncio.run(handler.handle_DATA(stand_in, session, envelope)))
        session.loop.close()
    assert replies == [
        "250 2.0.0 Ok: queued as AAAAAAAAAAAA",
        "250 2.0.0 Ok: queued as BBBBBBBBBBBB",
    ]
    assert (store.directory / "AAAAAAAAAAAA.eml").read_bytes().endswith(b"\r\none\r\n")
    assert (store.directory / "BBBBBBBBBBBB.eml").read_bytes().endswith(b"\r\ntwo\r\n")
    assert [m["queue_id"] for m in read_messages(store.directory)] == [
        "AAAAAAAAAAAA",
        "BBBBBBBBBBBB",
    ]
