"""The man in the middle (lab.mitm), each vector proven on real sockets against a `none` control.

One local lab runs the six shipped downgrade states plus `mitm-none` (the same healthy TLS 1.3
receiver behind a proxy that changes nothing) and `mitm-direct` (no proxy). Clients are smtplib
(RoutedSMTP) and, for the injection, a raw-socket client that keeps its plaintext read buffer
across STARTTLS. Every check reads the proxy's record of the connection and the receiver's record
of the session behind it.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import eventually as wait_until

from harness.model import ReferenceSenderProfile
from harness.proxy_evidence import receiver_peers
from harness.scenarios import load_sender
from harness.senders.base import SendAction, TestMessage
from harness.senders.reference import ReferenceSender, RoutedSMTP
from lab.backends.base import RunningLab
from lab.backends.local import LocalBackend
from lab.evidence_store import read_sessions
from lab.mitm import GARBAGE, INJECTED
from lab.pki import LabPki, ensure_certs
from lab.proxy_record import ProxyRecord, read_proxy_records
from lab.spec import ProxySpec, ProxyVector, ReceiverSpec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
DOWNGRADE_STATES = [v.value for v in ProxyVector if v is not ProxyVector.NONE]
RECORD_TIMEOUT = 5.0
MAIL_FROM = "probe@client.lab.test"
HELO = "client.lab.test"


@pytest.fixture(scope="module")
def specs(receiver_specs: dict[str, ReceiverSpec]) -> dict[str, ReceiverSpec]:
    """Return the shipped downgrade states plus a `none` proxy and a direct receiver (controls)."""
    healthy = receiver_specs["tls13"]
    chosen = {state: receiver_specs[state] for state in DOWNGRADE_STATES}
    none = ProxySpec(vector=ProxyVector.NONE)
    chosen["mitm-none"] = healthy.model_copy(update={"id": "mitm-none", "proxy": none})
    chosen["mitm-direct"] = healthy.model_copy(update={"id": "mitm-direct"})
    return chosen


@pytest.fixture(scope="module")
def pki(specs: dict[str, ReceiverSpec], tmp_path_factory: pytest.TempPathFactory) -> LabPki:
    """Return certificates for the module's receivers."""
    return ensure_certs(specs.values(), tmp_path_factory.mktemp("mitm-certs"))


@pytest.fixture(scope="module")
def lab(
    specs: dict[str, ReceiverSpec], pki: LabPki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningLab]:
    """Run the module's receivers (and their proxies) on the local backend."""
    evidence = tmp_path_factory.mktemp("mitm-evidence")
    with LocalBackend().start(list(specs.values()), pki, evidence) as running:
        yield running


def connect(lab: RunningLab, receiver: str) -> RoutedSMTP:
    """Open an SMTP session to a receiver's MX address (its proxy when it has one)."""
    endpoint = lab.endpoint(receiver)
    smtp = RoutedSMTP((endpoint.host, endpoint.port), HELO)
    code, _ = smtp.connect(endpoint.mx_host, endpoint.port)
    assert code == 220
    return smtp


def send(smtp: RoutedSMTP, lab: RunningLab, receiver: str) -> str:
    """Send one message in the open session and QUIT; return its Message-ID."""
    message_id = f"<{receiver}.{smtp.local_endpoint()[1]}@client.lab.test>"
    rcpt = f"inbox@{lab.endpoint(receiver).domain}"
    body = f"From: <{MAIL_FROM}>\r\nTo: <{rcpt}>\r\nMessage-ID: {message_id}\r\n\r\nhello\r\n"
    smtp.sendmail(MAIL_FROM, [rcpt], body.encode())
    smtp.quit()
    return message_id


def proxy_record(lab: RunningLab, receiver: str, peer: tuple[str, int]) -> ProxyRecord:
    """Wait (bounded) for the proxy's record of the connection from `peer`."""
    directory = lab.endpoint(receiver).evidence_dir

    def probe() -> ProxyRecord | None:
        return next((r for r in read_proxy_records(directory) if r.peer == peer), None)

    return wait_until(probe, f"{receiver}'s proxy record of {peer}", RECORD_TIMEOUT)


def receiver_session(lab: RunningLab, receiver: str, record: ProxyRecord) -> dict[str, object]:
    """Wait (bounded) for the receiver's record of the session the proxy opened for `record`."""
    directory = lab.endpoint(receiver).evidence_dir
    peers = receiver_peers([record])

    def probe() -> dict[str, object] | None:
        found = (r for r in read_sessions(directory) if (r["peer_ip"], r["peer_port"]) in peers)
        return next(found, None)

    return wait_until(probe, f"{receiver}'s session behind the proxy", RECORD_TIMEOUT)


def unverified() -> ssl.SSLContext:
    """Return a client context that accepts any certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def verifying(pki: LabPki) -> ssl.SSLContext:
    """Return a client context that trusts the lab CA and checks the MX host name."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pki.ca_cert_path))
    return context


# ---------------------------------------------------------------- vectors, real sockets


def test_the_none_proxy_is_transparent(lab: RunningLab, pki: LabPki) -> None:
    """Through `none` a client sees what it sees directly; only the proxy keeps a record."""
    seen = {}
    for receiver in ("mitm-direct", "mitm-none"):
        with connect(lab, receiver) as smtp:
            smtp.ehlo()
            features = dict(smtp.esmtp_features)
            smtp.starttls(context=verifying(pki))
            smtp.ehlo()
            peer = smtp.local_endpoint()
            send(smtp, lab, receiver)
        seen[receiver] = features
    assert seen["mitm-none"] == seen["mitm-direct"]
    assert "starttls" in seen["mitm-none"]
    record = proxy_record(lab, "mitm-none", peer)
    assert not record.manipulated
    assert record.passthrough_tls
    assert not record.data_in_plaintext
    assert not record.data_decrypted
    assert list(read_proxy_records(lab.endpoint("mitm-direct").evidence_dir)) == []


def test_strip_starttls_hides_starttls_and_records_plaintext_data(lab: RunningLab) -> None:
    """Through strip-starttls the EHLO reply lacks STARTTLS; the data crosses in plaintext."""
    with connect(lab, "mitm-none") as control:
        control.ehlo()
        assert control.has_extn("starttls"), "control: the receiver itself offers STARTTLS"
    with connect(lab, "strip-starttls") as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        assert smtp.has_extn("size"), "the rest of the EHLO reply is relayed"
        peer = smtp.local_endpoint()
        message_id = send(smtp, lab, "strip-starttls")
    record = proxy_record(lab, "strip-starttls", peer)
    assert record.manipulated
    assert record.manipulation == "removed STARTTLS from the EHLO reply"
    assert [line.split()[0] for line in record.sent_before] == ["ehlo"]
    assert [line.split()[0] for line in record.sent_after][:3] == ["mail", "rcpt", "data"]
    assert record.data_in_plaintext
    assert record.data_bytes > 0
    assert not record.data_decrypted
    session = receiver_session(lab, "strip-starttls", record)
    assert session["starttls_offered"] is True
    assert session["handshake"] == "none"
    assert [m["message_id"] for m in session["messages"]] == [message_id]  # type: ignore[attr-defined]


@pytest.mark.parametrize("state", ["starttls-454", "starttls-501"])
def test_starttls_refusal_and_plaintext_in_the_same_session(lab: RunningLab, state: str) -> None:
    """STARTTLS gets the vector's refusal (the control gets 220); what follows is plaintext."""
    with connect(lab, "mitm-none") as control:
        control.ehlo()
        code, _ = control.docmd("STARTTLS")
        assert code == 220
        control.close()
    with connect(lab, state) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls"), "the offer is relayed unchanged"
        code, _ = smtp.docmd("STARTTLS")
        assert code == int(state[-3:])
        peer = smtp.local_endpoint()
        send(smtp, lab, state)  # a sender that goes on without TLS, as Postfix `may` does
    record = proxy_record(lab, state, peer)
    assert record.manipulated
    assert record.manipulation == f"answered STARTTLS with {state[-3:]}"
    assert [line.split()[0].upper() for line in record.sent_before] == ["EHLO", "STARTTLS"]
    assert "MAIL" in [line.split()[0].upper() for line in record.sent_after]
    assert record.data_in_plaintext
    session = receiver_session(lab, state, record)
    assert session["starttls_asked"] is False, "the refusal came from the proxy alone"
    assert session["handshake"] == "none"


def test_starttls_broken_answers_the_client_hello_with_garbage(lab: RunningLab) -> None:
    """After 220 the handshake fails (wrong version); the control's handshake succeeds."""
    with connect(lab, "mitm-none") as control:
        control.ehlo()
        control.starttls(context=unverified())
        assert isinstance(control.sock, ssl.SSLSocket)
        assert control.sock.version() == "TLSv1.3"
        control.quit()
    with connect(lab, "starttls-broken") as smtp:
        smtp.ehlo()
        peer = smtp.local_endpoint()
        with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
            smtp.starttls(context=unverified())
    record = proxy_record(lab, "starttls-broken", peer)
    assert record.manipulated
    assert record.ended_by == "garbage-sent"
    assert not record.data_in_plaintext
    assert not record.passthrough_tls
    assert b"ServerHello" in GARBAGE


def read_until_lines(sock: socket.socket, buffer: bytearray, lines: int) -> None:
    """Receive into `buffer` until it holds `lines` complete lines (socket timeout bounds it)."""
    while buffer.count(b"\n") < lines:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk


def next_line(buffer: bytearray) -> bytes:
    """Pop the first line off `buffer`."""
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line + b"\n"


def naive_ehlo_after_starttls(lab: RunningLab, receiver: str) -> tuple[bytes, tuple[str, int]]:
    """Act like a client that keeps its plaintext buffer across STARTTLS; return its EHLO reply.

    It reads the 220 (and whatever else arrived with it) into one buffer, upgrades, sends EHLO,
    and takes the next buffered line, if any, as the reply: the NO STARTTLS response injection.
    """
    endpoint = lab.endpoint(receiver)
    with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as raw:
        buffer = bytearray()
        read_until_lines(raw, buffer, 1)
        next_line(buffer)  # banner
        raw.sendall(f"EHLO {HELO}\r\n".encode())
        while True:
            read_until_lines(raw, buffer, 1)
            if next_line(buffer)[3:4] == b" ":
                break
        raw.sendall(b"STARTTLS\r\n")
        read_until_lines(raw, buffer, 2 if receiver == "starttls-injection" else 1)
        assert next_line(buffer).startswith(b"220")
        peer = raw.getsockname()
        with unverified().wrap_socket(raw, server_hostname=endpoint.mx_host) as tls:
            tls.sendall(f"EHLO {HELO}\r\n".encode())
            if buffer:  # the stale plaintext: a correct client would have discarded it
                return next_line(buffer), peer
            return tls.recv(4096).split(b"\n", 1)[0] + b"\n", peer


def test_injection_fools_a_client_that_keeps_its_buffer(lab: RunningLab) -> None:
    """The injected 250 becomes a naive client's EHLO reply; through `none` it gets the real one."""
    genuine, _ = naive_ehlo_after_starttls(lab, "mitm-none")
    assert genuine.startswith(b"250-mx.mitm-none."), genuine
    fooled, peer = naive_ehlo_after_starttls(lab, "starttls-injection")
    assert fooled == INJECTED, "the forged line was taken as the receiver's EHLO reply"
    record = proxy_record(lab, "starttls-injection", peer)
    assert record.injected == INJECTED.decode()
    assert record.injected_sent
    assert record.passthrough_tls
    control = [r for r in read_proxy_records(lab.endpoint("mitm-none").evidence_dir)]
    assert control, "the control proxy recorded its connections too"
    assert not any(r.injected_sent or r.manipulated for r in control)


def test_injection_is_discarded_by_smtplib(lab: RunningLab, pki: LabPki) -> None:
    """smtplib drops its plaintext buffer on STARTTLS: TLS 1.3 end to end, real EHLO reply."""
    with connect(lab, "starttls-injection") as smtp:
        smtp.ehlo()
        smtp.starttls(context=verifying(pki))
        code, reply = smtp.ehlo()
        assert code == 250
        assert reply.startswith(b"mx.starttls-injection."), reply
        peer = smtp.local_endpoint()
        send(smtp, lab, "starttls-injection")
    record = proxy_record(lab, "starttls-injection", peer)
    assert record.injected_sent
    assert record.passthrough_tls
    assert not record.data_in_plaintext
    assert not record.data_decrypted, "the proxy only relayed ciphertext"
    session = receiver_session(lab, "starttls-injection", record)
    assert session["version"] == "TLSv1.3"


def test_tls_intercept_presents_its_own_certificate(lab: RunningLab, pki: LabPki) -> None:
    """A verifying client refuses the interceptor (and accepts the control); others are read."""
    with connect(lab, "mitm-none") as control:
        control.ehlo()
        control.starttls(context=verifying(pki))
        control.quit()
    with connect(lab, "tls-intercept") as smtp:
        smtp.ehlo()
        with pytest.raises(ssl.SSLCertVerificationError, match=r"self-signed|self signed"):
            smtp.starttls(context=verifying(pki))
    with connect(lab, "tls-intercept") as smtp:
        smtp.ehlo()
        smtp.starttls(context=unverified())
        assert isinstance(smtp.sock, ssl.SSLSocket)
        assert smtp.sock.version() == "TLSv1.3"
        peer = smtp.local_endpoint()
        message_id = send(smtp, lab, "tls-intercept")
    record = proxy_record(lab, "tls-intercept", peer)
    assert record.sender_tls == "TLSv1.3"
    assert record.data_decrypted
    assert not record.data_in_plaintext
    assert "MAIL" in [line.split()[0].upper() for line in record.sent_after]
    session = receiver_session(lab, "tls-intercept", record)
    assert session["version"] == "TLSv1.3", "the proxy's own TLS session to the receiver"
    assert [m["message_id"] for m in session["messages"]] == [message_id]  # type: ignore[attr-defined]


def test_reference_sender_treats_a_starttls_refusal_as_no_tls(lab: RunningLab) -> None:
    """ses-default goes plaintext after a 454 (not deferred); ses-require-tls drops the message."""
    senders = ROOT / "scenarios" / "senders"
    for sender, action in (
        ("ses-default", SendAction.DELIVERED),
        ("ses-require-tls", SendAction.REFUSED),
    ):
        profile = load_sender(senders / f"{sender}.yaml")
        assert isinstance(profile, ReferenceSenderProfile)
        domain = lab.endpoint("starttls-454").domain
        message = TestMessage(
            f"<{sender}.454@client.lab.test>",
            MAIL_FROM,
            f"inbox@{domain}",
            b"Subject: x\r\n\r\nx\r\n",
        )
        report = ReferenceSender(profile).deliver(
            message, lab, lab.pki.ca_cert_path, lab.evidence_root
        )
        assert report.action is action, report.reason
        assert "answered STARTTLS with 454" in report.reason


def test_open_connection_is_recorded_when_the_lab_stops(
    specs: dict[str, ReceiverSpec], pki: LabPki, tmp_path: Path
) -> None:
    """A connection still open at shutdown gets its record (ended by shutdown), like sessions."""
    with (
        contextlib.ExitStack() as after_the_lab,
        LocalBackend().start([specs["mitm-none"]], pki, tmp_path) as running,
    ):
        endpoint = running.endpoint("mitm-none")
        idle = socket.create_connection((endpoint.host, endpoint.port), timeout=5)
        after_the_lab.callback(idle.close)  # open until the lab has stopped
        assert idle.recv(512).startswith(b"220")
        peer = idle.getsockname()
    records = [r for r in read_proxy_records(tmp_path / "mitm-none") if r.peer == peer]
    assert [r.ended_by for r in records] == ["shutdown"]


def test_an_overlong_line_ends_the_connection_and_is_recorded(lab: RunningLab) -> None:
    """A line over the proxy's limit closes the connection; the record says why."""
    endpoint = lab.endpoint("strip-starttls")
    with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as raw:
        assert raw.recv(512).startswith(b"220")
        peer = raw.getsockname()
        raw.sendall(b"EHLO " + b"x" * (2 * 1024 * 1024))
        with contextlib.suppress(ConnectionError):
            assert raw.recv(512) == b"", "the proxy closed without relaying the line"
    record = proxy_record(lab, "strip-starttls", peer)
    assert record.ended_by.startswith("error: ValueError"), record.ended_by
    assert record.sent_before == ()
