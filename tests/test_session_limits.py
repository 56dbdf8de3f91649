"""Session limits modelled on Postfix's: per-client and per-receiver session caps, recipients per
message, junk commands and errors per session; each with a control just under the limit.

The integration tests run the shipped tls12 state (Postfix's default limits) in a child process
and talk to it from several loopback addresses (127.0.0.x, all on `lo`) with raw sockets, or
with the reference sender. Counts and waits are bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import assert_usage_error, tlslab
from test_hostile import CLIENT, WAIT, Receiver, _start, codes, deliver, read_replies
from test_hostile import read_until_closed as read_to_end
from waiting import eventually

from harness.classify import classify
from harness.model import Outcome, ReferenceSenderProfile
from harness.scenarios import ScenarioError, load_receiver
from harness.senders.base import SendAction, TestMessage
from harness.senders.reference import ReferenceSender
from lab.evidence_store import read_messages, read_sessions
from lab.limits import ErrorCount
from lab.pki import LabPki
from lab.serve import ReceiverEndpoint
from lab.spec import SESSION_LIMITS, ReceiverSpec

integration = pytest.mark.integration

STOCK = ReceiverSpec(id="tls12")  # Postfix's defaults, as the shipped tls12 state keeps them
HOST = "mx.tls12.lab.test"
TOO_MANY_SESSIONS = b"421 4.7.0 Too many sessions, try later\r\n"
TOO_MANY_ERRORS = f"421 4.7.0 {HOST} Error: too many errors\r\n".encode()


@pytest.fixture(scope="module")
def stock(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Receiver]:
    """Run the shipped tls12 state, every limit at its default, for this module."""
    spec = receiver_specs["tls12"]
    assert spec.model_dump(include=set(SESSION_LIMITS)) == STOCK.model_dump(
        include=set(SESSION_LIMITS)
    )
    with _start(spec, lab_pki, tmp_path_factory.mktemp("stock")) as running:
        yield running


@dataclasses.dataclass(frozen=True)
class Client:
    """One raw connection from a chosen loopback address, and how to find its session record."""

    sock: socket.socket
    ip: str
    port: int
    since: float

    def owns(self, record: dict[str, Any]) -> bool:
        """Return True when a session record is this connection's."""
        return bool(
            (record["peer_ip"], record["peer_port"]) == (self.ip, self.port)
            and record["started"] >= self.since
        )


def connect(receiver: Receiver, ip: str = "127.0.0.1") -> Client:
    """Open a TCP connection to the receiver from `ip` (a loopback address)."""
    since = time.time()
    sock = socket.create_connection(receiver.address, timeout=WAIT, source_address=(ip, 0))
    return Client(sock, ip, sock.getsockname()[1], since)


def record_of(receiver: Receiver, client: Client) -> dict[str, Any]:
    """Return the one session record of `client`, waiting (bounded) for it to be written."""

    def probe() -> list[dict[str, Any]] | None:
        found = [r for r in read_sessions(receiver.endpoint.evidence_dir) if client.owns(r)]
        return found or None

    [record] = eventually(probe, f"the session record of {client.ip}:{client.port}", WAIT)
    return record


def all_recorded(receiver: Receiver, clients: list[Client], timeout: float) -> None:
    """Wait until every client's session record is written (each session ended, slot freed)."""

    def probe() -> bool | None:
        records = list(read_sessions(receiver.endpoint.evidence_dir))
        done = sum(any(c.owns(r) for r in records) for c in clients)
        return True if done == len(clients) else None

    eventually(probe, f"the session records of {len(clients)} clients", timeout)


@contextlib.contextmanager
def held(receiver: Receiver, clients: list[Client]) -> Iterator[list[Client]]:
    """Close every client connection on exit, then wait until the receiver has ended each."""
    try:
        yield clients
    finally:
        for client in clients:
            client.sock.close()
    all_recorded(receiver, clients, timeout=60.0)


def greeted(clients: list[Client]) -> list[bytes]:
    """Return the first reply each client got."""
    return [read_replies(client.sock, 1)[0] for client in clients]


# ---------------------------------------------------------------- sessions per client


@integration
def test_one_client_gets_max_sessions_per_client_and_another_is_still_served(
    stock: Receiver,
) -> None:
    cap = STOCK.max_sessions_per_client
    with held(stock, [connect(stock, "127.0.0.2") for _ in range(cap)]) as hog:
        assert codes(greeted(hog)) == [220] * cap, "up to the cap, every session is served"
        extra = connect(stock, "127.0.0.2")
        extra.sock.sendall(f"EHLO {CLIENT}\r\n".encode())  # talks before the greeting
        data, _how = read_to_end(extra.sock)
        extra.sock.close()
        assert data == f"421 4.7.0 {HOST} Error: too many connections from 127.0.0.2\r\n".encode()
        record = record_of(stock, extra)
        assert (record["ended_by"], record["messages"]) == ("client-cap", [])
        with held(stock, [connect(stock, "127.0.0.3")]) as other:  # another client is not capped
            assert codes(greeted(other)) == [220]
        deliver(stock)  # and 127.0.0.1 delivers meanwhile
        hog[0].sock.close()
        record_of(stock, hog[0])  # its session ended: the client has a free place again
        with held(stock, [connect(stock, "127.0.0.2")]) as again:
            assert codes(greeted(again)) == [220]


# ---------------------------------------------------------------- sessions per receiver


@integration
def test_500_concurrent_connections_serve_100_refuse_400_and_leak_no_slot(
    stock: Receiver,
) -> None:
    total, cap = 500, STOCK.max_sessions
    addresses = [f"127.0.0.{10 + n}" for n in range(10)]  # 50 each: no client is over its cap
    with held(stock, [connect(stock, addresses[n % 10]) for n in range(total)]) as burst:
        replies = greeted(burst)
        assert sum(r.startswith(b"220 ") for r in replies) == cap
        assert replies.count(TOO_MANY_SESSIONS) == total - cap
    ours = [r for r in read_sessions(stock.endpoint.evidence_dir) if any(c.owns(r) for c in burst)]
    assert [r["ended_by"] for r in ours].count("session-cap") == total - cap
    with held(stock, [connect(stock, addresses[n % 10]) for n in range(cap + 1)]) as again:
        assert codes(greeted(again)) == [220] * cap + [421], "every slot was given back"


# ---------------------------------------------------------------- recipients per message


@integration
def test_recipients_past_max_recipients_get_452_and_the_message_keeps_the_first(
    stock: Receiver,
) -> None:
    limit = STOCK.max_recipients
    rcpts = [f"inbox+{n}@{stock.endpoint.domain}" for n in range(limit + 1)]
    envelope = f"MAIL FROM:<probe@{CLIENT}>\r\n" + "".join(f"RCPT TO:<{r}>\r\n" for r in rcpts)
    message_id = f"<{secrets.token_hex(8)}@{CLIENT}>"
    client = connect(stock)
    with held(stock, [client]):
        assert codes(read_replies(client.sock, 1)) == [220]
        client.sock.sendall(
            f"EHLO {CLIENT}\r\n{envelope}DATA\r\nMessage-ID: {message_id}\r\n\r\nhi\r\n.\r\n"
            "QUIT\r\n".encode()
        )
        replies = read_replies(client.sock, limit + 6)
    assert codes(replies) == [250, 250] + [250] * limit + [452, 354, 250, 221]
    assert replies[limit + 2] == b"452 4.5.3 Error: too many recipients\r\n"
    [stored] = [
        m for m in read_messages(stock.endpoint.evidence_dir) if m["message_id"] == message_id
    ]
    assert stored["rcpt_tos"] == rcpts[:limit], "the first max_recipients are kept, in order"
    assert record_of(stock, client)["ended_by"] == "quit"


# ---------------------------------------------------------------- junk commands and errors


def _pipeline(stock: Receiver, lines: bytes) -> tuple[Client, list[str]]:
    """Send `lines` after the greeting; return the client and every reply line until closed."""
    client = connect(stock)
    with held(stock, [client]):
        assert codes(read_replies(client.sock, 1)) == [220]
        client.sock.sendall(lines)
        data, _how = read_to_end(client.sock)
    return client, data.decode().removesuffix("\r\n").split("\r\n")


TOO_MANY = TOO_MANY_ERRORS.decode().rstrip()


@integration
def test_noops_past_the_junk_limit_count_as_errors_until_421(stock: Receiver) -> None:
    free, errors = STOCK.max_junk_commands, STOCK.max_errors
    client, replies = _pipeline(stock, b"NOOP\r\n" * (free + errors + 50))
    assert replies == ["250 OK"] * (free + errors) + [TOO_MANY], "not NOOP forever"
    assert record_of(stock, client)["ended_by"] == "error-limit"


@integration
def test_noops_just_under_the_limits_are_served(stock: Receiver) -> None:
    count = STOCK.max_junk_commands + STOCK.max_errors - 1
    client, replies = _pipeline(stock, b"NOOP\r\n" * count + b"QUIT\r\n")
    assert [r[:3] for r in replies] == ["250"] * count + ["221"]
    assert record_of(stock, client)["ended_by"] == "quit"


@integration
def test_a_delivery_forgives_earlier_junk_commands(stock: Receiver) -> None:
    half = STOCK.max_junk_commands + STOCK.max_errors // 2 - 1  # twice this would be too many
    message = f"MAIL FROM:<probe@{CLIENT}>\r\nRCPT TO:<{stock.rcpt}>\r\nDATA\r\nhi\r\n.\r\n"
    lines = f"EHLO {CLIENT}\r\n".encode() + b"NOOP\r\n" * half  # EHLO is a junk command too
    client, replies = _pipeline(stock, lines + message.encode() + b"NOOP\r\n" * half + b"QUIT\r\n")
    assert [r[:3] for r in replies if not r.startswith("250-")] == (
        ["250"] * (half + 1) + ["250", "250", "354", "250"] + ["250"] * half + ["221"]
    )
    assert record_of(stock, client)["ended_by"] == "quit"


@pytest.mark.parametrize("errors", [STOCK.max_errors - 1, STOCK.max_errors])
@integration
def test_the_hard_error_limit_closes_the_session_and_one_less_does_not(
    stock: Receiver, errors: int
) -> None:
    lines = f"RCPT TO:<{stock.rcpt}>\r\n".encode() * errors + b"NOOP\r\nQUIT\r\n"  # 503 each
    client, replies = _pipeline(stock, lines)
    ended_by = record_of(stock, client)["ended_by"]
    refused = ["503 Error: send HELO first"] * errors
    if errors >= STOCK.max_errors:
        assert (replies, ended_by) == ([*refused, TOO_MANY], "error-limit")
    else:
        assert ([r[:3] for r in replies], ended_by) == (
            [r[:3] for r in refused] + ["250", "221"],
            "quit",
        )


def test_error_count_follows_postfix_rules() -> None:
    count = ErrorCount(error_limit=3, junk_limit=2, recipient_limit=2)
    for verb in ("NOOP", "RSET", "MAIL"):  # two junk commands are free, MAIL is not junk
        count.command(verb)
    assert (count.errors, count.exceeded) == (0, False)
    for _ in range(2):  # 452s up to the recipient limit again are free
        count.reply("452 4.5.3 Error: too many recipients")
    assert count.errors == 0
    count.reply("452 4.5.3 Error: too many recipients")
    count.command("VRFY")  # the third junk command
    assert (count.errors, count.exceeded) == (2, False)
    count.reply("250 2.0.0 Ok: queued as 0123456789AB")  # a delivery forgives
    assert (count.errors, count.junk) == (0, 0)
    for status in ("503 5.5.1 Error: need MAIL command", "550 5.7.1 Relay access denied"):
        count.reply(status)
    count.reply("421 4.4.2 idle timeout")  # nothing is read after a 421: not counted
    count.reply("451 4.3.0 Lab receiver error: no free queue id")  # the lab's, not the client's
    assert not count.exceeded
    count.reply("501 Syntax: NOOP")
    assert count.exceeded


# ---------------------------------------------------------------- the reference sender


@dataclasses.dataclass(frozen=True)
class Route:
    """Routes the receiver's domain to its endpoint, as the lab's DNS would."""

    endpoint: ReceiverEndpoint

    def mx_hosts(self, domain: str) -> list[str]:
        """Return the receiver's MX host for its domain."""
        return [self.endpoint.mx_host] if domain == self.endpoint.domain else []

    def address_of(self, mx_host: str) -> tuple[str, int]:
        """Return where the receiver listens."""
        return self.endpoint.host, self.endpoint.port


def _send(stock: Receiver, outbox: Path) -> tuple[Any, TestMessage]:
    """Deliver one message with the reference sender (opportunistic TLS) from 127.0.0.1."""
    message_id = f"<{secrets.token_hex(8)}@{CLIENT}>"
    data = f"From: <probe@{CLIENT}>\r\nMessage-ID: {message_id}\r\n\r\nhi\r\n".encode()
    message = TestMessage(message_id, f"probe@{CLIENT}", stock.rcpt, data)
    sender = ReferenceSender(ReferenceSenderProfile(id="probe"))
    return sender.deliver(message, Route(stock.endpoint), stock.pki.ca_cert_path, outbox), message


@integration
@pytest.mark.parametrize("cap", ["max_sessions", "max_sessions_per_client"])
def test_the_reference_sender_over_a_receiver_cap_is_a_lab_error(
    stock: Receiver, tmp_path: Path, cap: str
) -> None:
    if cap == "max_sessions":  # the receiver is full of other clients' sessions
        sources = [f"127.0.0.{30 + n % 10}" for n in range(STOCK.max_sessions)]
        expected = TOO_MANY_SESSIONS.decode().strip()
    else:  # the sender's own address holds every session it may have
        sources = ["127.0.0.1"] * STOCK.max_sessions_per_client
        expected = f"421 4.7.0 {HOST} Error: too many connections from 127.0.0.1"
    with held(stock, [connect(stock, ip) for ip in sources]) as hold:
        assert codes(greeted(hold)) == [220] * len(sources)
        report, _message = _send(stock, tmp_path)
        assert (report.action, report.lab_fault) == (SendAction.FAILED, True), report
        assert expected in report.reason, report.reason
        assert "max_sessions" in report.reason, "the reason says which limit to raise"
        verdict = classify(report, [], portal_exists=False)
        assert verdict.outcome is Outcome.ERROR, "the lab's own cap is never the sender's fault"
        hold[0].sock.close()
        record_of(stock, hold[0])  # one place is free again: the same sender now delivers
        report, message = _send(stock, tmp_path)
    assert (report.action, report.tls_version) == (SendAction.DELIVERED, "TLSv1.2"), report
    stored = [m["message_id"] for m in read_messages(stock.endpoint.evidence_dir)]
    assert stored.count(message.message_id) == 1


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize("field", sorted(SESSION_LIMITS))
@pytest.mark.parametrize("how", ["zero", "negative", "absurd", "text", "boolean"])
def test_a_limit_out_of_range_is_refused_naming_the_range(
    tmp_path: Path, field: str, how: str
) -> None:
    low, high = SESSION_LIMITS[field]
    value = {"zero": "0", "negative": "-5", "absurd": str(high + 1), "text": '"50"'}.get(
        how, "true"
    )
    path = tmp_path / "tls12.yaml"
    path.write_text(f"{field}: {value}\n")
    with pytest.raises(ScenarioError) as excinfo:
        load_receiver(path)
    assert excinfo.value.field == field
    assert f"from {low} to {high}" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


@pytest.mark.parametrize("field", sorted(SESSION_LIMITS))
def test_a_limit_at_either_end_of_its_range_is_accepted(tmp_path: Path, field: str) -> None:
    path = tmp_path / "tls12.yaml"
    for value in SESSION_LIMITS[field]:
        path.write_text(f"{field}: {value}\n")
        assert getattr(load_receiver(path), field) == value


@integration
def test_a_bad_limit_in_receiver_yaml_makes_up_exit_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "receivers").mkdir()
    path = tmp_path / "receivers" / "tls12.yaml"
    path.write_text("max_sessions_per_client: 0\n")
    args: list[str | Path] = ["up", "--scenarios", tmp_path, "--receivers", "tls12"]
    args += ["--evidence-dir", tmp_path]
    line = assert_usage_error(tlslab(*args), str(path), "max_sessions_per_client", "1 to 10000")
    assert "1 to 10000" in line
    # negative control: the lowest allowed value loads (a bad backend, checked after, fails)
    path.write_text("max_sessions_per_client: 1\n")
    assert_usage_error(tlslab(*args, "--backend", "none"), "unknown backend 'none'")


# ---------------------------------------------------------------- held: size and encoding


def _transaction(body: bytes) -> bytes:
    """Return a pipelined MAIL, RCPT, DATA, `body` and the ending dot."""
    envelope = f"MAIL FROM:<probe@{CLIENT}>\r\nRCPT TO:<inbox@tls12.lab.test>\r\nDATA\r\n"
    return envelope.encode() + body + b".\r\n"


@integration
def test_a_message_of_exactly_max_message_bytes_is_stored_and_one_byte_more_gets_552(
    stock: Receiver,
) -> None:
    limit, line = STOCK.max_message_bytes, b"z" * 998 + b"\r\n"  # counted as sent, CRLF included
    exact = line * (limit // len(line)) + b"z" * (limit % len(line) - 2) + b"\r\n"
    over = exact[:-2] + b"z\r\n"
    assert (len(exact), len(over)) == (limit, limit + 1)
    client = connect(stock)
    with held(stock, [client]):
        assert codes(read_replies(client.sock, 1)) == [220]
        client.sock.sendall(f"EHLO {CLIENT}\r\n".encode() + _transaction(over))
        assert codes(read_replies(client.sock, 5)) == [250, 250, 250, 354, 552]
        client.sock.sendall(_transaction(exact) + b"QUIT\r\n")
        replies = read_replies(client.sock, 5)
    assert codes(replies) == [250, 250, 354, 250, 221]
    [stored] = record_of(stock, client)["messages"]
    assert stored["size"] == limit
    eml = (stock.endpoint.evidence_dir / stored["eml"]).read_bytes()
    assert eml.endswith(b"\r\n" + exact), "stored byte for byte after the Received header"


@integration
def test_invalid_utf8_gets_500_in_a_command_and_is_stored_byte_for_byte_in_a_body(
    stock: Receiver,
) -> None:
    body = b"Subject: bytes\r\n\r\n\xff\xfe\xc3\x28 \xed\xa0\x80 \xf8\x88\x80\x80\x80\r\n"
    client = connect(stock)
    with held(stock, [client]):
        assert codes(read_replies(client.sock, 1)) == [220]
        client.sock.sendall(b"EHLO \xff\xc3\x28.lab.test\r\nMAIL FROM:<\xc3\x28@x.test>\r\n")
        assert codes(read_replies(client.sock, 2)) == [500, 500]
        client.sock.sendall(f"EHLO {CLIENT}\r\n".encode() + _transaction(body) + b"QUIT\r\n")
        assert codes(read_replies(client.sock, 6)) == [250, 250, 250, 354, 250, 221]
    record = record_of(stock, client)
    assert record["ehlo"] == CLIENT, "the invalid name was never taken"
    [stored] = record["messages"]
    eml = (stock.endpoint.evidence_dir / stored["eml"]).read_bytes()
    assert eml.endswith(b"\r\n" + body)
