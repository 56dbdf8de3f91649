"""Hostile senders: the receiver answers abuse per RFC 5321 and keeps serving and recording others.

One local receiver (the tls12 state, with tight limits so timeouts take about a second) runs in
a child process for the module; a second one with a small session cap serves the cap test.
Clients are raw sockets (to send what no SMTP library would) and smtplib for the deliveries
that prove the receiver still works. Every wait has a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import eventually as wait_until

from harness.senders.reference import RoutedSMTP
from lab import limits
from lab.backends.local import LocalBackend
from lab.evidence_store import read_messages, read_sessions
from lab.pki import LabPki
from lab.serve import ReceiverEndpoint
from lab.spec import SESSION_LIMITS, ReceiverSpec

pytestmark = pytest.mark.integration

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
CLIENT = "client.lab.test"
IDLE = 1.0
COMMAND = 2.5
MAX_BYTES = 64 * 1024
CAP = 3
WAIT = 10.0  # upper bound of any wait for the receiver in this module
SLACK = 5.0  # how late, on the receiver's own clock, a timeout may fire on a loaded machine
POLL = 0.01
REPLY_LINE = re.compile(rb"^(\d{3})([ -])")
QUEUED_AS = re.compile(r"queued as (?P<qid>[0-9A-F]{12})\b")


@dataclasses.dataclass(frozen=True)
class Receiver:
    """One running receiver under test and what a client needs to reach it."""

    endpoint: ReceiverEndpoint
    pki: LabPki

    @property
    def address(self) -> tuple[str, int]:
        """Return (host, port); always loopback."""
        assert self.endpoint.host == LOOPBACK, self.endpoint.host
        return self.endpoint.host, self.endpoint.port

    @property
    def rcpt(self) -> str:
        """Return a recipient the receiver accepts."""
        return f"inbox@{self.endpoint.domain}"


@contextlib.contextmanager
def _start(spec: ReceiverSpec, pki: LabPki, evidence: Path) -> Iterator[Receiver]:
    """Run one receiver on the local backend; on stop, check it had every session closed."""
    with LocalBackend().start([spec], pki, evidence) as lab:
        yield Receiver(lab.endpoint(spec.id), pki)
    log = (evidence / "receivers.log").read_text()
    assert "sessions open" not in log, f"the receiver lost track of sessions: {log}"


@pytest.fixture(scope="module")
def receiver(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Receiver]:
    """Run the tls12 state with short timeouts and a 64 KiB message limit for this module."""
    spec = receiver_specs["tls12"].model_copy(
        update={
            "idle_timeout_seconds": IDLE,
            "command_timeout_seconds": COMMAND,
            "max_message_bytes": MAX_BYTES,
        }
    )
    with _start(spec, lab_pki, tmp_path_factory.mktemp("hostile")) as running:
        yield running


@pytest.fixture(scope="module")
def capped(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Receiver]:
    """Run the tls12 state admitting at most CAP concurrent sessions."""
    spec = receiver_specs["tls12"].model_copy(update={"max_sessions": CAP})
    with _start(spec, lab_pki, tmp_path_factory.mktemp("capped")) as running:
        yield running


@pytest.fixture(scope="module")
def lenient(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Receiver]:
    """Run the tls12 state with the error and junk-command limits at their highest, for floods."""
    spec = receiver_specs["tls12"].model_copy(
        update={
            "idle_timeout_seconds": IDLE,
            "max_errors": SESSION_LIMITS["max_errors"][1],
            "max_junk_commands": SESSION_LIMITS["max_junk_commands"][1],
        }
    )
    with _start(spec, lab_pki, tmp_path_factory.mktemp("lenient")) as running:
        yield running


@dataclasses.dataclass(frozen=True)
class Peer:
    """A client connection as the receiver records it: local port, and when it connected."""

    port: int
    since: float  # time.time() just before connecting; ports get reused, sessions do not

    def owns(self, record: dict[str, Any]) -> bool:
        """Return True when a session record is this connection's."""
        return bool(record["peer_port"] == self.port and record["started"] >= self.since)


# ---------------------------------------------------------------- waiting and reading


def eventually(probe: Callable[[], T | None], what: str, timeout: float = WAIT) -> T:
    """Return probe()'s first non-None value within `timeout` s (module default); else fail."""
    return wait_until(probe, what, timeout)


def read_until_closed(sock: socket.socket, timeout: float = WAIT) -> tuple[bytes, str]:
    """Read until the receiver closes; return (bytes, 'eof' | 'reset'); fail after `timeout`."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"receiver kept the connection open for {timeout} s; got {data[-300:]!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        except TimeoutError:
            continue
        if not chunk:
            return data, "eof"
        data += chunk


def read_replies(sock: socket.socket, count: int, timeout: float = WAIT) -> list[bytes]:
    """Read `count` complete replies (multi-line ones joined); fail on junk or after `timeout`."""
    deadline = time.monotonic() + timeout
    buffer, current, replies = b"", b"", list[bytes]()
    while len(replies) < count:
        while b"\r\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"got {len(replies)} of {count} replies: {replies[-3:]!r} {buffer!r}")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                pytest.fail(f"connection closed after {len(replies)} of {count} replies")
            buffer += chunk
        line, buffer = buffer.split(b"\r\n", 1)
        match = REPLY_LINE.match(line)
        assert match is not None, f"not an SMTP reply line: {line!r}"
        current += line + b"\r\n"
        if match.group(2) == b" ":
            replies.append(current)
            current = b""
    assert buffer == b"", f"unexpected bytes after {count} replies: {buffer!r}"
    return replies


def codes(replies: list[bytes]) -> list[int]:
    """Return the reply codes of complete replies."""
    return [int(reply[:3]) for reply in replies]


@contextlib.contextmanager
def raw_session(receiver: Receiver, ehlo: bool = True) -> Iterator[tuple[socket.socket, Peer]]:
    """Connect a raw socket, read the greeting, optionally EHLO; yield (socket, peer)."""
    since = time.time()
    sock = socket.create_connection(receiver.address, timeout=WAIT)
    try:
        assert codes(read_replies(sock, 1)) == [220]
        if ehlo:
            sock.sendall(f"EHLO {CLIENT}\r\n".encode())
            assert codes(read_replies(sock, 1)) == [250]
        yield sock, Peer(sock.getsockname()[1], since)
    finally:
        sock.close()


def client_tls(receiver: Receiver) -> ssl.SSLContext:
    """Return a verifying TLS 1.2 client context trusting the lab CA."""
    context = ssl.create_default_context(cafile=str(receiver.pki.ca_cert_path))
    context.minimum_version = context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


# ---------------------------------------------------------------- the receiver's evidence


def session_record(receiver: Receiver, peer: Peer) -> dict[str, Any]:
    """Return the one session record of the client connection `peer`."""

    def probe() -> list[dict[str, Any]] | None:
        found = [r for r in read_sessions(receiver.endpoint.evidence_dir) if peer.owns(r)]
        return found or None

    [record] = eventually(probe, f"the session record of peer port {peer.port}")
    assert record["peer_ip"] == LOOPBACK
    return record


def messages_of(receiver: Receiver, peer: Peer) -> list[dict[str, Any]]:
    """Return the per-message records of the session `peer` (its record must exist)."""
    session_id = session_record(receiver, peer)["session_id"]
    directory = receiver.endpoint.evidence_dir
    return [m for m in read_messages(directory) if m["session_id"] == session_id]


def eml_body(receiver: Receiver, message: dict[str, Any]) -> bytes:
    """Return a stored message's content after the receiver's Received header."""
    data = (receiver.endpoint.evidence_dir / str(message["eml"])).read_bytes()
    header = f"Received: {message['received']}\r\n".encode()
    assert data.startswith(header), f"{message['eml']} does not start with its Received header"
    return data[len(header) :]


def deliver(receiver: Receiver) -> str:
    """Deliver one message over STARTTLS with smtplib and return its queue id, checked on disk."""
    message_id = f"<{secrets.token_hex(8)}@{CLIENT}>"
    body = f"From: <probe@{CLIENT}>\r\nMessage-ID: {message_id}\r\n\r\nstill serving\r\n"
    since = time.time()
    with RoutedSMTP(receiver.address, CLIENT) as smtp:
        assert smtp.connect(receiver.endpoint.mx_host, receiver.endpoint.port)[0] == 220
        peer = Peer(smtp.local_endpoint()[1], since)
        smtp.ehlo()
        smtp.starttls(context=client_tls(receiver))
        smtp.ehlo()
        assert smtp.mail(f"probe@{CLIENT}")[0] == 250
        assert smtp.rcpt(receiver.rcpt)[0] == 250
        code, reply = smtp.data(body.encode())
        assert code == 250, f"DATA answered {code} {reply!r}"
    match = QUEUED_AS.search(reply.decode())
    assert match is not None, reply
    [stored] = messages_of(receiver, peer)
    assert (stored["queue_id"], stored["message_id"]) == (match["qid"], message_id)
    assert (stored["handshake"], stored["version"]) == ("ok", "TLSv1.2")
    assert eml_body(receiver, stored) == body.encode()
    record = session_record(receiver, peer)
    assert [m["queue_id"] for m in record["messages"]] == [match["qid"]]
    return match["qid"]


def assert_nothing_stored(receiver: Receiver, peer: Peer) -> dict[str, Any]:
    """Assert the session `peer` stored no message; return its record."""
    record = session_record(receiver, peer)
    assert record["messages"] == [], record["messages"]
    assert messages_of(receiver, peer) == []
    return record


# ---------------------------------------------------------------- malformed and oversized input

MALFORMED = [
    pytest.param(b"\r\n", 500, id="empty-line"),
    pytest.param(b"\xff\xfe\x00\r\n", 500, id="binary-command"),
    pytest.param(b"NOOP caf\xc3\xa9\r\n", 500, id="non-ascii-argument"),
    pytest.param(b"EHLO\r\n", 501, id="ehlo-without-name"),
    pytest.param(b"MAIL\r\n", 501, id="mail-without-argument"),
    pytest.param(b"MAIL FROM:<a@@b.test>\r\n", 553, id="mail-malformed-path"),
    pytest.param(b"MAIL FROM:<a@[1.2.3>\r\n", 553, id="mail-broken-address-literal"),
    pytest.param(b"MAIL TO:<a@b.test>\r\n", 501, id="mail-wrong-keyword"),
    pytest.param(b"RCPT TO:<inbox@tls12.lab.test>\r\n", 503, id="rcpt-before-mail"),
    pytest.param(b"DATA\r\n", 503, id="data-before-rcpt"),
    pytest.param(b"STARTTLS now\r\n", 501, id="starttls-with-argument"),
    pytest.param(b"QUIT now\r\n", 501, id="quit-with-argument"),
    pytest.param(b"NOOP " + b"a" * 600 + b"\r\n", 500, id="command-over-512-bytes"),
    pytest.param(b"A" * 5000 + b"\r\n", 500, id="line-over-1000-bytes"),
    pytest.param(b"NOOP\rRSET\r\n", 500, id="bare-cr-inside"),
    pytest.param(b"NOOP\n", 250, id="bare-lf-ending"),
]


@pytest.mark.parametrize(("line", "code"), MALFORMED)
def test_malformed_command_gets_one_reply_and_the_session_goes_on(
    receiver: Receiver, line: bytes, code: int
) -> None:
    with raw_session(receiver) as (sock, peer):
        sock.sendall(line)
        assert codes(read_replies(sock, 1)) == [code]
        sock.sendall(b"NOOP\r\nQUIT\r\n")
        assert codes(read_replies(sock, 2)) == [250, 221]
        assert read_until_closed(sock) == (b"", "eof")
    record = assert_nothing_stored(receiver, peer)
    assert record["ended_by"] == "quit"
    deliver(receiver)


def test_line_of_a_megabyte_without_newline_is_discarded_in_bounded_memory(
    receiver: Receiver,
) -> None:
    with raw_session(receiver) as (sock, peer):
        for _ in range(16):
            sock.sendall(b"X" * 65536)
        sock.sendall(b"\r\nNOOP\r\n")
        assert codes(read_replies(sock, 2)) == [500, 250]
    assert_nothing_stored(receiver, peer)
    deliver(receiver)


def test_unrecognised_commands_end_the_session_after_five(receiver: Receiver) -> None:
    with raw_session(receiver) as (sock, peer):
        sock.sendall(b"".join(b"XCMD%d\r\n" % i for i in range(5)) + b"NOOP\r\n" * 3)
        replies = read_replies(sock, 5)
        assert codes(replies) == [500, 500, 500, 500, 502]
        assert read_until_closed(sock) == (b"", "eof"), "nothing is answered after 502"
    record = assert_nothing_stored(receiver, peer)
    said = [line for line in record["transcript"] if line.startswith("S: ")]
    assert said[-1].startswith("S: 502 5.5.1 Too many unrecognized commands"), said
    deliver(receiver)


def test_overlong_line_inside_data_rejects_the_message_only(receiver: Receiver) -> None:
    with raw_session(receiver) as (sock, peer):
        sock.sendall(
            f"MAIL FROM:<probe@{CLIENT}>\r\nRCPT TO:<{receiver.rcpt}>\r\nDATA\r\n".encode()
        )
        assert codes(read_replies(sock, 3)) == [250, 250, 354]
        sock.sendall(b"Subject: long\r\n\r\n" + b"y" * 5000 + b"\r\n.\r\nNOOP\r\n")
        assert codes(read_replies(sock, 2)) == [500, 250]
    assert_nothing_stored(receiver, peer)


def test_message_over_the_limit_gets_552_and_a_smaller_one_is_then_accepted(
    receiver: Receiver,
) -> None:
    envelope = f"MAIL FROM:<probe@{CLIENT}>\r\nRCPT TO:<{receiver.rcpt}>\r\nDATA\r\n".encode()
    line = b"z" * 998 + b"\r\n"
    with raw_session(receiver) as (sock, peer):
        sock.sendall(f"MAIL FROM:<probe@{CLIENT}> SIZE={MAX_BYTES + 1}\r\n".encode())
        assert codes(read_replies(sock, 1)) == [552], "SIZE over the limit is refused up front"
        sock.sendall(envelope)
        assert codes(read_replies(sock, 3)) == [250, 250, 354]
        sock.sendall(line * (MAX_BYTES // len(line) + 2) + b".\r\n")
        assert codes(read_replies(sock, 1)) == [552]
        sock.sendall(envelope + b"small\r\n.\r\n")
        replies = read_replies(sock, 4)
        assert codes(replies) == [250, 250, 354, 250]
    [stored] = messages_of(receiver, peer)
    assert eml_body(receiver, stored) == b"small\r\n"
    assert stored["queue_id"] in replies[-1].decode()


# ---------------------------------------------------------------- pipelining


def test_a_pipelined_flood_is_answered_in_order(lenient: Receiver) -> None:
    receiver = lenient  # 400 errors and 800 junk commands: within the raised limits
    cycle = [
        (f"MAIL FROM:<probe@{CLIENT}>\r\n".encode(), 250),
        (f"RCPT TO:<{receiver.rcpt}>\r\n".encode(), 250),
        (b"RCPT TO:<victim@example.com>\r\n", 550),
        (b"RSET\r\n", 250),
        (b"NOOP\r\n", 250),
    ]
    rounds = 400
    with raw_session(receiver) as (sock, peer):
        sock.sendall(b"".join(line for line, _ in cycle) * rounds)
        got = codes(read_replies(sock, len(cycle) * rounds))
        assert got == [code for _, code in cycle] * rounds
        transaction = (
            f"MAIL FROM:<probe@{CLIENT}>\r\nRCPT TO:<{receiver.rcpt}>\r\nDATA\r\n"
            "Subject: pipelined\r\n\r\n..dot-stuffed\r\n.\r\nQUIT\r\n"
        )
        sock.sendall(transaction.encode())
        assert codes(read_replies(sock, 5)) == [250, 250, 354, 250, 221]
    [stored] = messages_of(receiver, peer)
    assert eml_body(receiver, stored) == b"Subject: pipelined\r\n\r\n.dot-stuffed\r\n"


def test_a_client_that_pipelines_without_reading_replies_cannot_hold_its_session(
    lenient: Receiver,
) -> None:
    receiver = lenient  # the junk-command limit would end the session before its replies stall
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with sock:
        since = time.time()
        sock.connect(receiver.address)
        peer = Peer(sock.getsockname()[1], since)
        sock.settimeout(WAIT)
        sock.sendall(b"NOOP\r\n" * 20_000)  # 120 kB of commands; their replies are never read
        deliver(receiver)  # another client is served meanwhile
        record = session_record(receiver, peer)  # the receiver ends the session by itself
        data, _how = read_until_closed(sock)
    assert record["ended_by"] == "idle-timeout", record["ended_by"]
    assert record["messages"] == []
    assert data.startswith(b"220 ")
    assert all(REPLY_LINE.match(line) for line in data.split(b"\r\n")[:-1])


# ---------------------------------------------------------------- STARTTLS abuse


def test_commands_pipelined_after_starttls_are_not_executed(receiver: Receiver) -> None:
    """CVE-2011-0411: plaintext sent with STARTTLS must be dropped, not run inside TLS."""
    injected = f"MAIL FROM:<injected@{CLIENT}>\r\nRCPT TO:<{receiver.rcpt}>\r\nNOOP injected\r\n"
    with raw_session(receiver) as (sock, peer):
        sock.sendall(b"STARTTLS\r\n" + injected.encode())  # one packet
        assert read_replies(sock, 1)[0].startswith(b"220 ")
        with client_tls(receiver).wrap_socket(
            sock, server_hostname=receiver.endpoint.mx_host
        ) as tls:
            tls.sendall(b"DATA\r\n")
            [reply] = read_replies(tls, 1)
            assert reply.startswith(b"503 "), f"injected MAIL/RCPT ran: DATA answered {reply!r}"
            tls.sendall(f"EHLO {CLIENT}\r\n".encode())
            assert read_replies(tls, 1)[0].startswith(b"250-mx.tls12.lab.test\r\n")
            tls.sendall(f"MAIL FROM:<probe@{CLIENT}>\r\nQUIT\r\n".encode())
            assert codes(read_replies(tls, 2)) == [250, 221]
    record = assert_nothing_stored(receiver, peer)
    assert record["handshake"] == "ok"
    assert not [line for line in record["transcript"] if "injected" in line], record["transcript"]
    after_220 = record["transcript"][record["transcript"].index("S: 220 Ready to start TLS") + 1]
    assert after_220 == "C: DATA"


def test_a_transaction_begun_before_starttls_is_forgotten(receiver: Receiver) -> None:
    with raw_session(receiver) as (sock, peer):
        sock.sendall(f"MAIL FROM:<probe@{CLIENT}>\r\nRCPT TO:<{receiver.rcpt}>\r\n".encode())
        assert codes(read_replies(sock, 2)) == [250, 250]
        sock.sendall(b"STARTTLS\r\n")
        assert codes(read_replies(sock, 1)) == [220]
        with client_tls(receiver).wrap_socket(
            sock, server_hostname=receiver.endpoint.mx_host
        ) as tls:
            tls.sendall(f"EHLO {CLIENT}\r\nDATA\r\n".encode())
            assert codes(read_replies(tls, 2)) == [250, 503], "RFC 3207: state before TLS is reset"
            tls.sendall(b"STARTTLS\r\n")
            assert read_replies(tls, 1) == [b"554 5.5.1 Error: TLS already active\r\n"]
            tls.sendall(
                f"MAIL FROM:<probe@{CLIENT}>\r\nRCPT TO:<{receiver.rcpt}>\r\nDATA\r\n"
                "inside TLS\r\n.\r\nQUIT\r\n".encode()
            )
            assert codes(read_replies(tls, 5)) == [250, 250, 354, 250, 221]
    [stored] = messages_of(receiver, peer)
    assert (stored["version"], eml_body(receiver, stored)) == ("TLSv1.2", b"inside TLS\r\n")


def test_plaintext_flooded_after_starttls_stalls_the_handshake_until_the_idle_timeout(
    receiver: Receiver,
) -> None:
    with raw_session(receiver) as (sock, peer):
        sock.sendall(b"STARTTLS\r\n" + b"NOOP\r\n" * 1000)  # more than the reader buffers
        assert codes(read_replies(sock, 1)) == [220]
        record = session_record(receiver, peer)  # written without the client doing anything
        data, _how = read_until_closed(sock)
    assert data == b"", "nothing is said in plaintext once TLS was promised"
    assert (record["handshake"], record["ended_by"]) == ("failed", "idle-timeout")
    assert record["tls_error"] == "connection closed during the tls handshake (idle-timeout)"
    assert record["transcript"][-2:] == ["C: STARTTLS", "S: 220 Ready to start TLS"]
    assert record["messages"] == []
    deliver(receiver)


def _client_hello(receiver: Receiver) -> bytes:
    """Return the bytes of a real TLS ClientHello for the receiver's MX name."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_tls(receiver).wrap_bio(
        incoming, outgoing, server_hostname=receiver.endpoint.mx_host
    )
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


GARBAGE = {
    "http-request": b"GET / HTTP/1.1\r\nHost: mx\r\n\r\n",
    "smtp-commands": b"EHLO again\r\nMAIL FROM:<a@b.test>\r\n",
    "random-bytes": bytes(range(256)) * 4,
    "sslv2-hello": bytes.fromhex("801c01000200030000001001008000000000000000000000000000000000"),
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_instead_of_a_client_hello_fails_the_handshake_cleanly(
    receiver: Receiver, garbage: bytes
) -> None:
    with raw_session(receiver) as (sock, peer):
        sock.sendall(b"STARTTLS\r\n")
        assert codes(read_replies(sock, 1)) == [220]
        sock.sendall(garbage)
        data, _how = read_until_closed(sock)
        assert not data.startswith(b"2"), f"the receiver answered garbage with {data!r}"
    record = assert_nothing_stored(receiver, peer)
    assert (record["handshake"], record["ended_by"]) == ("failed", "handshake-failed")
    assert record["tls_error"], "a failed handshake says why"
    assert record["version"] is None
    deliver(receiver)


HANDSHAKE_ABORTS = ["close-after-220", "half-a-client-hello", "reset-after-client-hello"]


@pytest.mark.parametrize("how", HANDSHAKE_ABORTS)
def test_an_aborted_handshake_is_recorded_and_others_are_served(
    receiver: Receiver, how: str
) -> None:
    hello = _client_hello(receiver)
    with raw_session(receiver) as (sock, peer):
        sock.sendall(b"STARTTLS\r\n")
        assert codes(read_replies(sock, 1)) == [220]
        if how == "half-a-client-hello":
            sock.sendall(hello[: len(hello) // 2])
        elif how == "reset-after-client-hello":
            sock.sendall(hello)
            # wait (bounded) for the ServerHello, then reset instead of answering it
            assert select.select([sock], [], [], WAIT)[0], "no ServerHello"
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    record = assert_nothing_stored(receiver, peer)
    assert (record["handshake"], record["ended_by"]) == ("failed", "handshake-failed")
    assert record["tls_error"], record
    deliver(receiver)


# ---------------------------------------------------------------- slow clients


def test_a_silent_client_gets_421_after_the_idle_timeout(receiver: Receiver) -> None:
    began = time.monotonic()
    with raw_session(receiver) as (sock, peer):
        deliver(receiver)  # served while this session sits idle
        data, how = read_until_closed(sock, timeout=IDLE + WAIT)
    waited = time.monotonic() - began
    assert data.startswith(b"421 4.4.2 mx.tls12.lab.test Error: idle timeout"), data
    assert how == "eof"
    assert waited >= IDLE, f"closed after {waited:.2f} s, idle timeout is {IDLE} s"
    record = assert_nothing_stored(receiver, peer)
    assert record["ended_by"] == "idle-timeout"
    # the receiver's own clock, not the loaded client's: it gave up at the timeout, not long after
    assert IDLE <= record["ended"] - record["started"] < IDLE + SLACK, record
    assert record["transcript"][-1].startswith("S: 421 4.4.2")


def test_a_client_stalling_inside_data_gets_421_and_nothing_is_stored(
    receiver: Receiver,
) -> None:
    with raw_session(receiver) as (sock, peer):
        sock.sendall(
            f"MAIL FROM:<probe@{CLIENT}>\r\nRCPT TO:<{receiver.rcpt}>\r\nDATA\r\n".encode()
        )
        assert codes(read_replies(sock, 3)) == [250, 250, 354]
        sock.sendall(b"Subject: never finished\r\n\r\nhalf a bo")
        data, _how = read_until_closed(sock, timeout=IDLE + WAIT)
    assert data.startswith(b"421 4.4.2 "), data
    assert assert_nothing_stored(receiver, peer)["ended_by"] == "idle-timeout"


def test_a_client_trickling_one_command_gets_421_after_the_command_timeout(
    receiver: Receiver,
) -> None:
    began = time.monotonic()
    with raw_session(receiver) as (sock, peer):
        data = b""
        while time.monotonic() - began < COMMAND + WAIT:
            sock.sendall(b"N")  # a byte per pause: never idle, never a whole command
            readable, _, _ = select.select([sock], [], [], IDLE / 4)
            if readable:
                data, _how = read_until_closed(sock)
                break
    waited = time.monotonic() - began
    assert data.startswith(b"421 4.4.2 mx.tls12.lab.test Error: command timeout"), data
    assert waited >= COMMAND, f"closed after {waited:.2f} s"
    record = assert_nothing_stored(receiver, peer)
    assert record["ended_by"] == "command-timeout"
    assert COMMAND <= record["ended"] - record["started"] < COMMAND + SLACK, record


def test_a_receiver_behind_on_its_input_does_not_call_the_client_idle() -> None:
    async def scenario() -> list[str]:
        expired, reasons, behind = asyncio.Event(), list[str](), [True]

        def expire(reason: str) -> None:
            reasons.append(reason)
            expired.set()

        loop = asyncio.get_running_loop()
        deadlines = limits.Deadlines(loop, 0.05, WAIT, expire, lambda: behind[0])
        deadlines.command_started()
        with pytest.raises(TimeoutError):  # a whole command is buffered: not the client's fault
            await asyncio.wait_for(asyncio.shield(expired.wait()), 0.3)
        behind[0] = False
        await asyncio.wait_for(expired.wait(), WAIT)
        return reasons

    assert asyncio.run(scenario()) == ["idle-timeout"]


# ---------------------------------------------------------------- too many sessions


def test_sessions_over_the_cap_get_421_and_admitted_ones_work(capped: Receiver) -> None:
    with contextlib.ExitStack() as stack:
        admitted = [stack.enter_context(raw_session(capped)) for _ in range(CAP)]
        since = time.time()
        with socket.create_connection(capped.address, timeout=WAIT) as extra:
            refused = Peer(extra.getsockname()[1], since)
            data, how = read_until_closed(extra)
        assert (data, how) == (b"421 4.7.0 Too many sessions, try later\r\n", "eof")
        sock, peer = admitted[0]
        sock.sendall(
            f"MAIL FROM:<probe@{CLIENT}>\r\nRCPT TO:<{capped.rcpt}>\r\nDATA\r\n"
            "under the cap\r\n.\r\nQUIT\r\n".encode()
        )
        assert codes(read_replies(sock, 5)) == [250, 250, 354, 250, 221]
        # Once that session has ended (its record is written), a new client is admitted.
        session_record(capped, peer)
        deliver(capped)
    [stored] = messages_of(capped, peer)
    assert eml_body(capped, stored) == b"under the cap\r\n"
    record = assert_nothing_stored(capped, refused)
    assert record["ended_by"] == "session-cap"
    assert record["transcript"] == ["S: 421 4.7.0 Too many sessions, try later"]


# ---------------------------------------------------------------- any command stream

DOMAIN = "tls12.lab.test"
STOCK = ReceiverSpec(id="tls12")  # the limits the module's receiver keeps at their defaults
BROKEN = "<a@[1.2.3>"  # an address literal the email parser chokes on
VERBS = {
    "HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY", "EXPN", "HELP",
    "STARTTLS", "AUTH",
}  # fmt: skip
TOKENS = [
    f"EHLO {CLIENT}", f"HELO {CLIENT}", "EHLO", "ehlo lower.lab.test",
    f"MAIL FROM:<probe@{CLIENT}>", "MAIL FROM:<>", "MAIL",
    f"RCPT TO:<inbox@{DOMAIN}>", f"rcpt to:<Inbox@{DOMAIN.upper()}>", "RCPT TO:<x@example.com>",
    "MAIL FROM:<a@[1.2.3>", "RCPT TO:<a@[1.2.3>", "DATA", "DATA now", "RSET", "RSET x",
    "NOOP", "NOOP x", "HELP", "VRFY", "QUIT x", "STARTTLS x", "", ".", "..", ".stuffed",
    "Subject: hi", "QUIT", "STARTTLS",
]  # fmt: skip
token = st.one_of(
    st.sampled_from(TOKENS).map(str.encode),
    st.from_regex(r"\AX[A-Z]{0,5}( [!-~]{1,10})?\Z").map(str.encode),  # unknown verbs
    st.binary(min_size=1, max_size=20).map(lambda b: b"\xff" + b.replace(b"\n", b"")),
    st.integers(1001, 4000).map(lambda n: b"A" * n),  # a line over the length limit
)


@dataclasses.dataclass
class Model:
    """aiosmtpd's state machine as the lab configures it: expected replies and stored bodies."""

    helo: bool = False
    mail: bool = False
    rcpt: bool = False
    data: list[bytes] | None = None
    bogus: int = 5
    errors: int = 0  # Postfix's hard error count, with the shipped limits (lab.limits.ErrorCount)
    junk: int = 0
    closed: bool = False
    replies: list[int] = dataclasses.field(default_factory=list)
    stored: list[bytes] = dataclasses.field(default_factory=list)

    def feed(self, line: bytes) -> None:
        """Apply one client line (without CRLF) and note the reply the receiver should give."""
        if self.closed:
            return
        if self.data is None and len(line) <= 1000:
            word = line.partition(b" ")[0].upper().decode("latin-1")
            self.junk += word in limits.JUNK_COMMANDS
            self.errors += word in limits.JUNK_COMMANDS and self.junk > STOCK.max_junk_commands
        if self.data is not None:
            self._data_line(line)
        elif len(line) > 1000 or not line:
            self._reply(500)
        else:
            verb, _, arg = line.partition(b" ")
            if not verb.isascii() or not arg.isascii():
                self._reply(500)
            else:
                self._command(verb.decode().upper(), arg.decode())

    def _data_line(self, line: bytes) -> None:
        """Collect message data until the lone dot, then store the message."""
        assert self.data is not None
        if line != b".":
            self.data.append(line)
            return
        if any(len(raw) + 2 > 1001 for raw in self.data):
            self._reply(500)
        else:
            unstuffed = (raw[1:] if raw.startswith(b".") else raw for raw in self.data)
            self.stored.append(b"".join(part + b"\r\n" for part in unstuffed))
            self.errors = self.junk = 0  # a delivery forgives earlier errors
            self._reply(250)
        self.data, self.mail, self.rcpt = None, False, False

    def _command(self, verb: str, arg: str) -> None:
        """Answer one command line."""
        if verb not in VERBS:
            self.bogus -= 1
            self._reply(502 if self.bogus < 1 else 500, close=self.bogus < 1)
        elif verb in ("HELO", "EHLO"):
            if arg:
                self.helo, self.mail, self.rcpt = True, False, False
            self._reply(250 if arg else 501)
        elif verb == "MAIL":
            ok = arg.upper().startswith("FROM:<") and BROKEN not in arg  # `<>` is fine
            self._after_helo(self._path_error(arg, "FROM:") or (503 if self.mail else 250))
            self.mail = self.mail or (self.helo and ok)
        elif verb == "RCPT":
            ours = arg.lower().endswith(f"@{DOMAIN}>")
            if not self.helo or not self.mail:
                self._reply(503)
            elif BROKEN in arg:
                self._reply(553)
            else:
                self.rcpt = self.rcpt or ours
                self._reply(250 if ours else 550)
        elif verb == "DATA":
            self._after_helo(503 if not self.rcpt else 501 if arg else 354)
            if self.helo and self.rcpt and not arg:
                self.data = []
        elif verb in ("RSET", "QUIT", "STARTTLS"):
            self._simple(verb, arg)
        else:
            self._reply({"NOOP": 250, "HELP": 250, "VRFY": 501}[verb])

    @staticmethod
    def _path_error(arg: str, keyword: str) -> int | None:
        """Return 501 for a missing keyword, 553 for an unparsable path, None when fine."""
        if not arg.upper().startswith(keyword):
            return 501
        return 553 if BROKEN in arg else None

    def _after_helo(self, code: int) -> None:
        """Reply `code`, or 503 when no HELO/EHLO came first."""
        self._reply(code if self.helo else 503)

    def _simple(self, verb: str, arg: str) -> None:
        """Answer RSET, QUIT and STARTTLS (after which the client sends no TLS and leaves)."""
        if arg:
            self._reply(501)
        elif verb == "RSET":
            self.mail = self.rcpt = False
            self._reply(250)
        else:
            self._reply(221 if verb == "QUIT" else 220, close=True)

    def _reply(self, code: int, close: bool = False) -> None:
        """Note an expected reply code, that the receiver closes after it, or 421 for errors."""
        self.replies.append(code)
        self.closed = close
        self.errors += code >= 400
        if self.errors >= STOCK.max_errors and not self.closed:
            self.replies.append(421)
            self.closed = True


@settings(
    max_examples=120,
    deadline=timedelta(seconds=60),  # generous: fsync stalls when the disk is busy
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(lines=st.lists(token, min_size=1, max_size=25))
def test_any_command_stream_gets_valid_replies_and_stores_only_whole_transactions(
    receiver: Receiver, lines: list[bytes]
) -> None:
    model = Model()
    for line in lines:
        model.feed(line)
    stream = list(lines)
    if model.data is not None:  # end an open DATA so the session can finish
        stream.append(b".")
        model.feed(b".")
    if not model.closed:
        stream.append(b"QUIT")
        model.feed(b"QUIT")
    with raw_session(receiver, ehlo=False) as (sock, peer):
        sock.sendall(b"".join(line + b"\r\n" for line in stream))
        replies = read_replies(sock, len(model.replies))
        if model.replies[-1] != 220:  # after 220 the receiver expects a TLS handshake
            assert read_until_closed(sock) == (b"", "eof")
    assert codes(replies) == model.replies, f"stream {stream!r}"
    if model.replies[-1] == 220:
        return  # the record is written once the receiver sees the handshake end
    stored = messages_of(receiver, peer)
    assert [eml_body(receiver, m) for m in stored] == model.stored
    record = session_record(receiver, peer)
    assert [m["queue_id"] for m in record["messages"]] == [m["queue_id"] for m in stored]


def test_every_stored_message_has_its_record_and_the_receiver_still_delivers(
    receiver: Receiver,
) -> None:
    deliver(receiver)
    directory = receiver.endpoint.evidence_dir
    records = [m["eml"] for m in read_messages(directory)]
    assert len(records) == len(set(records)), "a queue id was used twice"
    assert sorted(records) == sorted(p.name for p in directory.glob("*.eml"))
    assert not list(directory.glob(".*.tmp")), "a temporary file was left behind"
    lines = (directory / "sessions.jsonl").read_text().splitlines()
    assert len(lines) == len(list(read_sessions(directory))), "a torn session line"
