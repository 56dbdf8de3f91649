"""Every shipped receiver state proven on real sockets, each with a negative control.

One local lab runs all receivers from scenarios/receivers/. Clients are `ssl` + `smtplib`
(RoutedSMTP: connect to 127.0.0.1:port, name the MX host for SNI and verification). Each check
reads the evidence the receiver wrote: the stored .eml (its top Received header) and the JSON
session record, matched to the client by its local port and a per-connection EHLO name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import secrets
import smtplib
import ssl
import warnings
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.utils import make_msgid, parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from waiting import eventually as wait_until

from harness.evidence import parse_received, received_headers
from harness.senders.reference import RoutedSMTP
from lab.backends.base import RunningLab
from lab.backends.local import LocalBackend
from lab.evidence_store import read_sessions
from lab.pki import LabPki
from lab.serve import ReceiverEndpoint
from lab.spec import ReceiverSpec, TlsVersion

pytestmark = pytest.mark.integration

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
CLIENT_DOMAIN = "client.lab.test"
MAIL_FROM = f"probe@{CLIENT_DOMAIN}"
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
RECORD_TIMEOUT = 5.0
POLL_INTERVAL = 0.01
QUEUED_AS = re.compile(r"queued as (?P<qid>[0-9A-F]{12})\b")

V10, V11, V12, V13 = TlsVersion.TLS10, TlsVersion.TLS11, TlsVersion.TLS12, TlsVersion.TLS13

VERSION_STATES = {"tls10": V10, "tls11": V11, "tls12": V12, "tls13": V13}


@dataclasses.dataclass(frozen=True)
class Defect:
    """How a verifying client rejects one certificate state, and the alert it sends."""

    verify_messages: tuple[str, ...]
    alert: str


# Alerts as the receiver records them (checked by hand against OpenSSL 3.0 on both sides).
CERT_DEFECTS = {
    "self-signed": Defect(("self-signed certificate", "self signed certificate"), "unknown_ca"),
    "expired": Defect(("certificate has expired",), "certificate_expired"),
    "mismatched": Defect(("Hostname mismatch",), "bad_certificate"),
    "untrusted-ca": Defect(("unable to get local issuer certificate",), "unknown_ca"),
}
ALL_STATES = [*VERSION_STATES, "no-starttls", *CERT_DEFECTS]

# (receiver, client floor, client ceiling): a client sharing no version with the receiver.
# Ids name the client by number only, so `-k tls10` selects the tls10 receiver's rows alone.
WRONG_VERSION_CLIENTS = [
    pytest.param("tls10", V11, V11, id="tls10-client-1.1-only"),
    pytest.param("tls10", V12, V13, id="tls10-client-1.2-floor"),
    pytest.param("tls11", V10, V10, id="tls11-client-1.0-only"),
    pytest.param("tls11", V12, V13, id="tls11-client-1.2-floor"),
    pytest.param("tls12", V11, V11, id="tls12-client-1.1-only"),
    pytest.param("tls12", V13, V13, id="tls12-client-1.3-only"),
    pytest.param("tls13", V12, V12, id="tls13-client-1.2-only"),
    pytest.param("tls13", V10, V12, id="tls13-client-1.0-to-1.2"),
]


@dataclasses.dataclass
class Attempt:
    """What one client connection did, and how to find its evidence."""

    helo: str
    local_port: int
    greeting: str = ""
    rcpt: str = ""
    message_id: str = ""
    version: str | None = None
    cipher: str | None = None
    queue_id: str | None = None


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lab(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningLab]:
    """Run every shipped receiver state on the local backend for this module."""
    missing = sorted(set(ALL_STATES) - set(receiver_specs))
    assert not missing, f"receiver states missing from scenarios/receivers/: {missing}"
    evidence = tmp_path_factory.mktemp("evidence")
    with LocalBackend().start(list(receiver_specs.values()), lab_pki, evidence) as running:
        yield running


# ---------------------------------------------------------------- client side


def client_context(low: TlsVersion, high: TlsVersion, trust: Path | None) -> ssl.SSLContext:
    """Return a client context for versions low..high; verify against `trust`, or not at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = low.ssl_version
        context.maximum_version = high.ssl_version
    if low.is_legacy:
        context.set_ciphers(LEGACY_CIPHERS)
    if trust is None:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=str(trust))
    return context


def verifying_context(pki: LabPki) -> ssl.SSLContext:
    """Return the strict client: TLS 1.2-1.3, trusts only the lab CA, checks the MX host name."""
    context = client_context(V12, V13, pki.ca_cert_path)
    assert context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED
    return context


def opportunistic_context(spec: ReceiverSpec) -> ssl.SSLContext:
    """Return a non-verifying client that speaks every version the receiver offers."""
    return client_context(spec.tls_min, spec.tls_max, None)


@contextlib.contextmanager
def smtp_session(endpoint: ReceiverEndpoint) -> Iterator[tuple[RoutedSMTP, Attempt]]:
    """Connect to the receiver under its MX name with a unique EHLO name; always close."""
    assert endpoint.host == LOOPBACK, f"lab traffic must stay on loopback, got {endpoint.host}"
    helo = f"probe-{secrets.token_hex(4)}.{CLIENT_DOMAIN}"
    smtp = RoutedSMTP((endpoint.host, endpoint.port), helo)
    try:
        code, greeting = smtp.connect(endpoint.mx_host, endpoint.port)
        assert code == 220, f"greeting {code} {greeting!r}"
        attempt = Attempt(helo, smtp.local_endpoint()[1], greeting.decode())
        yield smtp, attempt
    finally:
        smtp.close()


def probe_message(attempt: Attempt) -> bytes:
    """Return a small RFC 5322 message with a fresh Message-ID, recorded on the attempt."""
    attempt.message_id = make_msgid(domain=CLIENT_DOMAIN)
    message = EmailMessage()
    message["From"] = MAIL_FROM
    message["To"] = attempt.rcpt
    message["Subject"] = f"receiver state probe {attempt.helo}"
    message["Message-ID"] = attempt.message_id
    message.set_content("Sent by tests/test_receiver_states.py.\n")
    return message.as_bytes()


def negotiated(smtp: smtplib.SMTP) -> tuple[str, str]:
    """Return (TlsVersion value, cipher) of the session's TLS connection."""
    sock = smtp.sock
    assert isinstance(sock, ssl.SSLSocket), f"expected a TLS socket, got {type(sock).__name__}"
    version, cipher = sock.version(), sock.cipher()
    assert version is not None
    assert cipher is not None
    return TlsVersion.from_openssl(version).value, cipher[0]


def send_message(smtp: smtplib.SMTP, attempt: Attempt) -> None:
    """Run MAIL, RCPT, DATA and QUIT, asserting each reply; record the queue id."""
    code, reply = smtp.mail(MAIL_FROM)
    assert code == 250, f"MAIL FROM: {code} {reply!r}"
    code, reply = smtp.rcpt(attempt.rcpt)
    assert code == 250, f"RCPT TO:<{attempt.rcpt}>: {code} {reply!r}"
    code, reply = smtp.data(probe_message(attempt))
    assert code == 250, f"DATA: {code} {reply!r}"
    match = QUEUED_AS.search(reply.decode())
    assert match is not None, f"no queue id in {reply!r}"
    attempt.queue_id = match.group("qid")
    code, reply = smtp.quit()
    assert code == 221, f"QUIT: {code} {reply!r}"


def deliver(endpoint: ReceiverEndpoint, context: ssl.SSLContext | None) -> Attempt:
    """Deliver one message to the receiver's domain, over STARTTLS with `context` when given."""
    with smtp_session(endpoint) as (smtp, attempt):
        attempt.rcpt = f"inbox@{endpoint.domain}"
        smtp.ehlo()
        if context is not None:
            smtp.starttls(context=context)
            smtp.ehlo()
            attempt.version, attempt.cipher = negotiated(smtp)
        send_message(smtp, attempt)
    return attempt


def failed_starttls(
    endpoint: ReceiverEndpoint, context: ssl.SSLContext
) -> tuple[Attempt, ssl.SSLError]:
    """Ask for STARTTLS with `context` and return the handshake error the client raises."""
    with smtp_session(endpoint) as (smtp, attempt):
        smtp.ehlo()
        assert smtp.has_extn("starttls"), f"{endpoint.receiver} should offer STARTTLS"
        with pytest.raises(ssl.SSLError) as caught:
            smtp.starttls(context=context)
    return attempt, caught.value


# ---------------------------------------------------------------- receiver side


def eventually(probe: Callable[[], T | None], what: str, timeout: float = RECORD_TIMEOUT) -> T:
    """Return probe()'s first non-None value within `timeout` s (module default); else fail."""
    return wait_until(probe, what, timeout)


def session_record(endpoint: ReceiverEndpoint, attempt: Attempt) -> dict[str, Any]:
    """Return the receiver's record of this attempt: peer_port = the client's local port."""

    def probe() -> list[dict[str, Any]] | None:
        found = [
            record
            for record in read_sessions(endpoint.evidence_dir)
            if record.get("peer_port") == attempt.local_port and record.get("ehlo") == attempt.helo
        ]
        return found or None

    what = f"{endpoint.receiver}'s session record for peer port {attempt.local_port}"
    records = eventually(probe, what)
    assert len(records) == 1, f"{len(records)} records for one connection: {records}"
    record = records[0]
    assert record["peer_ip"] == LOOPBACK
    assert record["receiver"] == endpoint.receiver
    return record


def stored_with(endpoint: ReceiverEndpoint, message_id: str) -> list[Path]:
    """Return the receiver's stored .eml files that contain the given Message-ID."""
    needle = message_id.encode()
    return sorted(p for p in endpoint.evidence_dir.glob("*.eml") if needle in p.read_bytes())


def stored_received(endpoint: ReceiverEndpoint, attempt: Attempt, record: dict[str, Any]) -> str:
    """Check the stored .eml and the record's message entry agree; return the top Received."""
    assert [p.name for p in stored_with(endpoint, attempt.message_id)] == [
        f"{attempt.queue_id}.eml"
    ]
    data = (endpoint.evidence_dir / f"{attempt.queue_id}.eml").read_bytes()
    headers = received_headers(data)
    assert headers, f"no Received header in {attempt.queue_id}.eml"
    top = headers[0]
    [message] = record["messages"]
    assert message["queue_id"] == attempt.queue_id
    assert message["message_id"] == attempt.message_id
    assert message["mail_from"] == MAIL_FROM
    assert message["rcpt_tos"] == [attempt.rcpt]
    assert message["eml"] == f"{attempt.queue_id}.eml"
    assert message["received"] == top, "record and .eml disagree on the Received header"
    return top


def received_pattern(endpoint: ReceiverEndpoint, attempt: Attempt, using: str | None) -> str:
    """Return a regex for Postfix's exact Received format (TLS clause when `using` is given)."""
    lines = [rf"from {re.escape(attempt.helo)} \(unknown \[127\.0\.0\.1\]\)"]
    if using is None:
        protocol = "ESMTP"
    else:
        cipher = re.escape(attempt.cipher or "")
        using_clause = rf"\t\(using {re.escape(using)} with cipher {cipher} \((\d+)/\1 bits\)"
        if using == "TLSv1.3":  # Postfix 3.4+ adds the key exchange and signature for TLS 1.3
            using_clause += r"\r\n\t key-exchange \S+(?: \([^)]*\))? server-signature RSA-PSS"
            using_clause += r" \(\d+ bits\) server-digest SHA\d+"
        lines.append(using_clause + r"\)")
        lines.append(r"\t\(No client certificate requested\)")
        protocol = "ESMTPS"
    mx, qid = re.escape(endpoint.mx_host), re.escape(attempt.queue_id or "")
    lines.append(rf"\tby {mx} \(Sender TLS Lab\) with {protocol} id {qid}")
    lines.append(rf"\tfor <{re.escape(attempt.rcpt)}>; (?P<date>[^\r\n]+) \(UTC\)")
    return "\r\n".join(lines)


def assert_postfix_format(header: str, pattern: str) -> None:
    """Assert the header matches the pattern exactly and carries a parseable UTC date."""
    match = re.fullmatch(pattern, header)
    assert match is not None, f"Received header not in Postfix format:\n{header!r}\n{pattern!r}"
    date = parsedate_to_datetime(match.group("date"))
    offset = date.utcoffset()
    assert offset is not None
    assert offset.total_seconds() == 0, f"date {match.group('date')!r} is not in UTC"


def assert_tls_delivery(endpoint: ReceiverEndpoint, attempt: Attempt, version: TlsVersion) -> None:
    """Assert the client, the session record and the stored Received header all say `version`."""
    assert attempt.version == version.value, f"client negotiated {attempt.version}"
    record = session_record(endpoint, attempt)
    facts_in_record = {k: record[k] for k in ("handshake", "version", "cipher", "sni", "alert")}
    assert facts_in_record == {
        "handshake": "ok",
        "version": version.value,
        "cipher": attempt.cipher,
        "sni": endpoint.mx_host,
        "alert": None,
    }
    assert record["starttls_offered"] is True
    assert record["starttls_asked"] is True
    assert record["tls_error"] is None
    header = stored_received(endpoint, attempt, record)
    using = "TLSv1" if version is V10 else version.value
    assert_postfix_format(header, received_pattern(endpoint, attempt, using))
    if version is V10:
        assert "TLSv1.0" not in header, "Postfix writes TLS 1.0 as `TLSv1`"
    facts = parse_received(header)
    assert facts is not None, f"parse_received found no TLS in {header!r}"
    assert facts.version is version
    assert facts.cipher == record["cipher"]
    assert facts.bits == record["bits"]


def assert_failed_handshake(endpoint: ReceiverEndpoint, attempt: Attempt) -> dict[str, Any]:
    """Assert the receiver recorded a failed handshake and stored nothing; return the record."""
    record = session_record(endpoint, attempt)
    assert record["handshake"] == "failed", record
    assert record["starttls_asked"] is True
    assert (record["version"], record["cipher"], record["bits"]) == (None, None, None)
    assert record["tls_error"], "a failed handshake should say why"
    assert record["messages"] == []
    return record


# ---------------------------------------------------------------- every state


@pytest.mark.parametrize("receiver", ALL_STATES)
def test_endpoint_greets_as_its_mx_and_advertises_starttls_per_spec(
    lab: RunningLab, receiver_specs: dict[str, ReceiverSpec], receiver: str
) -> None:
    spec, endpoint = receiver_specs[receiver], lab.endpoint(receiver)
    assert (endpoint.host, endpoint.mx_host, endpoint.domain) == (
        LOOPBACK,
        spec.mx_host,
        spec.domain,
    )
    assert endpoint.evidence_dir == lab.evidence_root / receiver
    with smtp_session(endpoint) as (smtp, attempt):
        assert attempt.greeting.startswith(spec.mx_host)
        code, reply = smtp.ehlo()
        assert code == 250
        assert reply.decode().splitlines()[0] == spec.mx_host
        assert smtp.has_extn("starttls") is spec.starttls
        assert smtp.quit()[0] == 221
    assert session_record(endpoint, attempt)["starttls_offered"] is spec.starttls


@pytest.mark.parametrize("receiver", ALL_STATES)
def test_foreign_recipients_are_refused_and_nothing_is_stored(
    lab: RunningLab, receiver_specs: dict[str, ReceiverSpec], receiver: str
) -> None:
    spec, endpoint = receiver_specs[receiver], lab.endpoint(receiver)
    sibling = "tls13" if receiver == "tls12" else "tls12"
    foreign = [
        "victim@example.com",
        f"inbox@{lab.endpoint(sibling).domain}",
        f"inbox@sub.{endpoint.domain}",
        f"inbox@{endpoint.domain}.example.com",
    ]
    with smtp_session(endpoint) as (smtp, attempt):
        smtp.ehlo()
        if spec.starttls:
            smtp.starttls(context=opportunistic_context(spec))
            smtp.ehlo()
        assert smtp.mail(MAIL_FROM)[0] == 250
        for rcpt in foreign:
            code, reply = smtp.rcpt(rcpt)
            assert code == 550, f"RCPT TO:<{rcpt}> answered {code} {reply!r}, want 550"
            assert b"Relay access denied" in reply
        attempt.rcpt = foreign[0]
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.data(probe_message(attempt))
        assert refused.value.smtp_code in (503, 554)
        assert smtp.quit()[0] == 221
    record = session_record(endpoint, attempt)
    assert record["messages"] == []
    assert sum(line.startswith("S: 550") for line in record["transcript"]) == len(foreign)
    assert stored_with(endpoint, attempt.message_id) == []


# ---------------------------------------------------------------- tls10 .. tls13


@pytest.mark.parametrize("receiver", VERSION_STATES)
def test_client_pinned_to_the_receivers_version_delivers(lab: RunningLab, receiver: str) -> None:
    version = VERSION_STATES[receiver]
    endpoint = lab.endpoint(receiver)
    attempt = deliver(endpoint, client_context(version, version, lab.pki.ca_cert_path))
    assert_tls_delivery(endpoint, attempt, version)


@pytest.mark.parametrize(("receiver", "low", "high"), WRONG_VERSION_CLIENTS)
def test_client_without_the_receivers_version_fails_the_handshake(
    lab: RunningLab, receiver: str, low: TlsVersion, high: TlsVersion
) -> None:
    endpoint = lab.endpoint(receiver)
    attempt, error = failed_starttls(endpoint, client_context(low, high, None))
    assert not isinstance(error, ssl.SSLCertVerificationError), error
    record = assert_failed_handshake(endpoint, attempt)
    # The client rejects (or is rejected on) the version, not a certificate: no alert recorded.
    assert record["alert"] is None, record
    assert record["tls_error"] in ("wrong_version_number", "unsupported_protocol"), record


# ---------------------------------------------------------------- no-starttls


@pytest.mark.parametrize("receiver", ["no-starttls"])
def test_plaintext_client_delivers_without_tls(lab: RunningLab, receiver: str) -> None:
    endpoint = lab.endpoint(receiver)
    attempt = deliver(endpoint, None)
    record = session_record(endpoint, attempt)
    assert {k: record[k] for k in ("handshake", "version", "cipher", "sni", "alert")} == {
        "handshake": "none",
        "version": None,
        "cipher": None,
        "sni": None,
        "alert": None,
    }
    assert record["starttls_offered"] is False
    assert record["starttls_asked"] is False
    assert record["esmtp"] is True
    header = stored_received(endpoint, attempt, record)
    assert_postfix_format(header, received_pattern(endpoint, attempt, None))
    assert "using" not in header
    assert parse_received(header) is None


@pytest.mark.parametrize("receiver", ["no-starttls"])
def test_helo_client_is_recorded_as_smtp(lab: RunningLab, receiver: str) -> None:
    endpoint = lab.endpoint(receiver)
    with smtp_session(endpoint) as (smtp, attempt):
        attempt.rcpt = f"inbox@{endpoint.domain}"
        assert smtp.helo()[0] == 250
        send_message(smtp, attempt)
    record = session_record(endpoint, attempt)
    assert record["esmtp"] is False
    header = stored_received(endpoint, attempt, record)
    assert_postfix_format(
        header, received_pattern(endpoint, attempt, None).replace("with ESMTP", "with SMTP")
    )


@pytest.mark.parametrize("receiver", ["no-starttls"])
def test_client_requiring_tls_finds_no_starttls(lab: RunningLab, receiver: str) -> None:
    endpoint = lab.endpoint(receiver)
    with smtp_session(endpoint) as (smtp, attempt):
        smtp.ehlo()
        assert not smtp.has_extn("starttls")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            smtp.starttls(context=verifying_context(lab.pki))
        # Asked anyway (as a sender ignoring EHLO might), the receiver declines.
        code, reply = smtp.docmd("STARTTLS")
        assert code == 454, f"STARTTLS answered {code} {reply!r}"
        assert smtp.quit()[0] == 221
    record = session_record(endpoint, attempt)
    assert record["starttls_offered"] is False
    assert record["starttls_asked"] is True
    assert record["handshake"] == "none"
    assert record["messages"] == []


# ---------------------------------------------------------------- certificate defects


@pytest.mark.parametrize("receiver", CERT_DEFECTS)
def test_non_verifying_client_delivers_despite_the_defect(
    lab: RunningLab, receiver_specs: dict[str, ReceiverSpec], receiver: str
) -> None:
    spec, endpoint = receiver_specs[receiver], lab.endpoint(receiver)
    attempt = deliver(endpoint, opportunistic_context(spec))
    assert_tls_delivery(endpoint, attempt, spec.tls_max)


@pytest.mark.parametrize("receiver", CERT_DEFECTS)
def test_verifying_client_rejects_the_defect(lab: RunningLab, receiver: str) -> None:
    defect, endpoint = CERT_DEFECTS[receiver], lab.endpoint(receiver)
    attempt, error = failed_starttls(endpoint, verifying_context(lab.pki))
    assert isinstance(error, ssl.SSLCertVerificationError), repr(error)
    message = error.verify_message
    assert any(text in message for text in defect.verify_messages), (
        f"verify error {message!r}, want one of {defect.verify_messages}"
    )
    record = assert_failed_handshake(endpoint, attempt)
    assert record["alert"] == defect.alert, f"recorded alert {record['alert']!r}"
    assert record["tls_error"].endswith(f"alert_{defect.alert}"), record["tls_error"]


@pytest.mark.parametrize("receiver", ["tls12", "tls13"])
def test_verifying_client_delivers_to_a_valid_certificate(lab: RunningLab, receiver: str) -> None:
    endpoint = lab.endpoint(receiver)
    attempt = deliver(endpoint, verifying_context(lab.pki))
    assert_tls_delivery(endpoint, attempt, VERSION_STATES[receiver])
