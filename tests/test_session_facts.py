"""Session records: one typed model written by the receiver, a committed schema, and `ended_by`.

The integration tests run the shipped tls12 state on the local backend and end sessions every
way a client can: QUIT, FIN, RST, and hanging up right after the TLS handshake (what a sender
that rejects the certificate after the handshake does), each against a control.
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hostile import Receiver, _start
from waiting import eventually

from harness.senders.reference import RoutedSMTP
from lab.pki import LabPki
from lab.session_facts import (
    SCHEMA_PATH,
    EndedBy,
    Handshake,
    SessionFacts,
    read_session_facts,
    session_schema,
)
from lab.spec import ReceiverSpec

WAIT = 15.0
CLIENT = "client.lab.test"
CONTRACT_FIELDS = {
    "peer_ip", "peer_port", "ehlo", "starttls_asked", "handshake", "version", "cipher", "bits",
    "group", "signature_scheme", "alert", "ended_by", "messages", "transcript",
}  # fmt: skip


def test_the_committed_schema_is_the_models() -> None:
    committed = json.loads(SCHEMA_PATH.read_text())
    assert committed == session_schema(), (
        "lab/session.schema.json is stale; regenerate it with "
        "`python -c 'from lab.session_facts import write_schema; write_schema()'`"
    )
    assert set(committed["properties"]) >= CONTRACT_FIELDS
    assert set(committed["$defs"]["EndedBy"]["enum"]) == {e.value for e in EndedBy}


def test_a_record_with_an_unknown_end_is_not_read_back(tmp_path: Path) -> None:
    line = {"receiver": "tls12", "session_id": "s", "peer_ip": "127.0.0.1", "peer_port": 1}
    line |= {"started": 1.0, "ended": 2.0, "starttls_offered": True}
    good, bad = {**line, "ended_by": "quit"}, {**line, "ended_by": "connection-closed"}
    (tmp_path / "sessions.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    assert [r.ended_by for r in read_session_facts(tmp_path)] == [EndedBy.QUIT]


@pytest.fixture(scope="module")
def tls12(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Receiver]:
    """Run the shipped tls12 state for this module."""
    with _start(receiver_specs["tls12"], lab_pki, tmp_path_factory.mktemp("facts")) as running:
        yield running


def record_of(receiver: Receiver, port: int, since: float) -> SessionFacts:
    """Return the session record of the client that used local `port` since `since`."""

    def probe() -> list[SessionFacts] | None:
        found = [
            r
            for r in read_session_facts(receiver.endpoint.evidence_dir)
            if r.peer_port == port and r.started >= since
        ]
        return found or None

    [record] = eventually(probe, f"the session record of port {port}", WAIT)
    return record


def unverified() -> ssl.SSLContext:
    """Return a client context that completes the handshake whatever the certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def session_after_tls(receiver: Receiver, greet: bool, how: str) -> SessionFacts:
    """Run STARTTLS, EHLO again when `greet`, then leave by `how` (quit, fin or rst)."""
    since = time.time()
    smtp = RoutedSMTP(receiver.address, CLIENT)
    assert smtp.connect(receiver.endpoint.mx_host, receiver.endpoint.port)[0] == 220
    port = smtp.local_endpoint()[1]
    smtp.ehlo()
    smtp.starttls(context=unverified())
    if greet:
        smtp.ehlo()
    if how == "quit":
        smtp.quit()
    else:
        raw = smtp.sock
        assert isinstance(raw, ssl.SSLSocket)
        if how == "rst":
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if smtp.file is not None:
            smtp.file.close()  # it holds the socket open otherwise
        raw.close()  # no close_notify: the SSL socket is dropped, not unwrapped
    return record_of(receiver, port, since)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("greet", "how", "ended_by"),
    [
        pytest.param(False, "fin", EndedBy.CLOSED_AFTER_HANDSHAKE, id="fin-before-ehlo"),
        pytest.param(False, "rst", EndedBy.CLOSED_AFTER_HANDSHAKE, id="rst-before-ehlo"),
        pytest.param(True, "fin", EndedBy.TCP_CLOSE, id="fin-after-ehlo"),
        pytest.param(True, "rst", EndedBy.RESET, id="rst-after-ehlo"),
        pytest.param(True, "quit", EndedBy.QUIT, id="quit"),
    ],
)
def test_how_a_tls_session_ended_is_recorded(
    tls12: Receiver, greet: bool, how: str, ended_by: EndedBy
) -> None:
    record = session_after_tls(tls12, greet, how)
    assert record.handshake is Handshake.OK
    assert record.ended_by is ended_by, record.transcript


@pytest.mark.integration
def test_a_plaintext_session_closed_without_quit_is_a_tcp_close(tls12: Receiver) -> None:
    since = time.time()
    with socket.create_connection(tls12.address, timeout=WAIT) as sock:
        port = sock.getsockname()[1]
        assert sock.recv(512).startswith(b"220")
        sock.sendall(f"EHLO {CLIENT}\r\n".encode())
        replies = b""
        while not replies.endswith(b"250 HELP\r\n"):  # read it all: unread data means RST
            chunk = sock.recv(4096)
            assert chunk, replies
            replies += chunk
    record = record_of(tls12, port, since)
    assert (record.handshake, record.ended_by) == (Handshake.NONE, EndedBy.TCP_CLOSE)


@pytest.mark.integration
def test_every_written_record_carries_the_schemas_required_fields(tls12: Receiver) -> None:
    with smtplib.SMTP(*tls12.address, timeout=WAIT) as smtp:
        smtp.ehlo(CLIENT)
    required = set(session_schema()["required"])
    lines = (tls12.endpoint.evidence_dir / "sessions.jsonl").read_text().splitlines()
    assert lines
    for line in lines:
        raw = json.loads(line)
        assert required <= set(raw), required - set(raw)
        SessionFacts.model_validate(raw)


def half_close(receiver: Receiver, commands: bytes) -> tuple[bytes, SessionFacts]:
    """Send commands then FIN (shutdown for writing); return all replies and the record."""
    since = time.time()
    with socket.create_connection(receiver.address, timeout=WAIT) as sock:
        port = sock.getsockname()[1]
        sock.sendall(commands)
        sock.shutdown(socket.SHUT_WR)
        replies = b""
        while chunk := sock.recv(4096):
            replies += chunk
    return replies, record_of(receiver, port, since)


@pytest.mark.integration
def test_a_plaintext_quit_sent_with_fin_is_answered_221(tls12: Receiver) -> None:
    replies, record = half_close(tls12, f"EHLO {CLIENT}\r\nQUIT\r\n".encode())
    assert b"\r\n221 " in replies, replies
    assert (record.transcript[-1], record.ended_by) == ("C: QUIT", EndedBy.QUIT)


@pytest.mark.integration
def test_a_plaintext_fin_without_quit_gets_no_221(tls12: Receiver) -> None:
    replies, record = half_close(tls12, f"EHLO {CLIENT}\r\n".encode())
    assert b"250 " in replies
    assert b"221 " not in replies, replies
    assert record.ended_by is EndedBy.TCP_CLOSE
