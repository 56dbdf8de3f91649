"""The receiver against real TLS clients: it closes, alerts and answers as a Postfix MX does.

`gnutls-cli` (Debian gnutls-bin: GnuTLS, the stack Exim uses) sends a QUIT together with its
close_notify and FIN; `openssl s_client` offers a version the receiver refuses; smtplib asks
for AUTH. Each client runs against the shipped receiver states on the local backend (loopback)
and each case has a control driven the same way. Every wait is bounded.
"""

from __future__ import annotations

import secrets
import smtplib
import ssl
import subprocess
import time
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.x509 import DNSName
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from test_hostile import Receiver, _start
from tools import require_tool
from waiting import eventually

from harness.model import Outcome
from harness.runner import certificate_rejection_note
from lab.pki import LabPki
from lab.session_facts import EndedBy, Handshake, SessionFacts, read_session_facts
from lab.spec import ReceiverSpec

pytestmark = pytest.mark.integration

WAIT = 15.0
GNUTLS_CLI = "gnutls-cli"
OPENSSL = "openssl"
needs_gnutls = pytest.mark.usefixtures("gnutls_cli_installed")
needs_openssl = pytest.mark.usefixtures("openssl_installed")


@pytest.fixture
def gnutls_cli_installed() -> None:
    """Require gnutls-cli (a missing one fails under the tool switch)."""
    require_tool("gnutls-cli", "gnutls-bin")


@pytest.fixture
def openssl_installed() -> None:
    """Require the openssl command (a missing one fails under the tool switch)."""
    require_tool("openssl", "openssl")


PROTOCOL_VERSION_ALERT = "alert protocol version"  # OpenSSL's text for alert 70
AUTH_NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"
CLIENT = "client.lab.test"


@pytest.fixture(scope="module")
def tls13(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Receiver]:
    """Run the shipped tls13 state for this module."""
    with _start(receiver_specs["tls13"], lab_pki, tmp_path_factory.mktemp("tls13")) as running:
        yield running


@pytest.fixture(scope="module")
def self_signed(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Receiver]:
    """Run the shipped self-signed state for this module."""
    spec = receiver_specs["self-signed"]
    with _start(spec, lab_pki, tmp_path_factory.mktemp("self-signed")) as running:
        yield running


def client_name() -> str:
    """Return an EHLO name no other session of the module uses."""
    return f"c{secrets.token_hex(4)}.client.test"


def record_named(receiver: Receiver, ehlo: str) -> SessionFacts:
    """Return the one session record whose (last) EHLO name is `ehlo`, waiting for it."""

    def probe() -> list[SessionFacts] | None:
        directory = receiver.endpoint.evidence_dir
        found = [r for r in read_session_facts(directory) if r.ehlo == ehlo]
        return found or None

    [record] = eventually(probe, f"the session record of {ehlo}", WAIT)
    return record


def gnutls_session(receiver: Receiver, script: str) -> str:
    """Run gnutls-cli with STARTTLS, feed it `script` then end of input; return its output."""
    host, port = receiver.address
    done = subprocess.run(
        [GNUTLS_CLI, "--starttls-proto=smtp", f"--port={port}", "--insecure", host],
        input=script.encode(),
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    return (done.stdout + done.stderr).decode("utf-8", "replace")


def transaction(receiver: Receiver, ehlo: str) -> str:
    """Return the commands of one delivery, CRLF-terminated, as a client would pipeline them."""
    lines = [
        f"EHLO {ehlo}",
        f"MAIL FROM:<probe@{ehlo}>",
        f"RCPT TO:<{receiver.rcpt}>",
        "DATA",
        f"Message-ID: <{ehlo}>",
        "",
        "closing test",
        ".",
    ]
    return "".join(line + "\r\n" for line in lines)


@needs_gnutls
def test_quit_sent_with_close_notify_and_fin_is_recorded_and_answered(tls13: Receiver) -> None:
    name = client_name()
    output = gnutls_session(tls13, transaction(tls13, name) + "QUIT\r\n")
    assert "221 " in output, output
    record = record_named(tls13, name)
    assert record.transcript[-1] == "C: QUIT", record.transcript
    assert record.ended_by is EndedBy.QUIT
    assert [m.message_id for m in record.messages] == [f"<{name}>"]


@needs_gnutls
def test_close_notify_without_quit_is_recorded_as_such_and_not_answered_221(
    tls13: Receiver,
) -> None:
    name = client_name()
    output = gnutls_session(tls13, transaction(tls13, name))
    assert "250 2.0.0 Ok: queued" in output, output
    assert "221 " not in output, output
    record = record_named(tls13, name)
    assert "C: QUIT" not in record.transcript
    assert record.ended_by is EndedBy.CLOSE_NOTIFY


def s_client(receiver: Receiver, ehlo: str, *options: str) -> str:
    """Run `openssl s_client -starttls smtp` with `options`; return its output."""
    host, port = receiver.address
    command = [OPENSSL, "s_client", "-starttls", "smtp", "-name", ehlo]
    done = subprocess.run(
        [*command, "-connect", f"{host}:{port}", *options],
        input=b"",
        capture_output=True,
        timeout=WAIT,
        check=False,
    )
    return (done.stdout + done.stderr).decode("utf-8", "replace")


@needs_openssl
@pytest.mark.parametrize("version", ["-tls1", "-tls1_2"])
def test_a_refused_version_gets_openssls_protocol_version_alert(
    tls13: Receiver, version: str
) -> None:
    name = client_name()
    output = s_client(tls13, name, version, "-cipher", "DEFAULT:@SECLEVEL=0")
    assert PROTOCOL_VERSION_ALERT in output, output
    assert "SSL alert number 70" in output, output
    record = record_named(tls13, name)
    assert (record.handshake, record.ended_by) == (Handshake.FAILED, EndedBy.HANDSHAKE_FAILED)
    assert record.alert_sent == "protocol_version"


@needs_openssl
def test_an_offered_version_gets_no_alert(tls13: Receiver) -> None:
    name = client_name()
    output = s_client(tls13, name, "-tls1_3")
    assert "alert" not in output.lower(), output
    assert "TLSv1.3" in output, output


def test_auth_is_refused_as_by_a_postfix_mx_without_sasl(tls13: Receiver) -> None:
    with smtplib.SMTP(*tls13.address, timeout=WAIT) as smtp:
        smtp.ehlo(client_name())
        assert not smtp.has_extn("auth")
        before_tls = smtp.docmd("AUTH", "PLAIN AGxhYgBsYWI=")
        smtp.starttls()
        smtp.ehlo(client_name())
        assert not smtp.has_extn("auth")
        after_tls = smtp.docmd("AUTH", "LOGIN")
        assert smtp.noop()[0] == 250  # the session goes on, as Postfix's does
    for code, text in (before_tls, after_tls):
        assert f"{code} {text.decode()}" == AUTH_NOT_ENABLED


def verify_after_handshake(receiver: Receiver) -> tuple[bool, int, float]:
    """Deliver as Exim does: handshake without checks, then verify; hang up if that fails.

    The check after the handshake is cryptography's X.509 server verifier, against the lab CA
    and the receiver's MX name. Returns (verified, local port, time before connecting).
    """
    since = time.time()
    ca = x509.load_pem_x509_certificate(receiver.pki.ca_cert_path.read_bytes())
    verifier = (
        PolicyBuilder().store(Store([ca])).build_server_verifier(DNSName(receiver.endpoint.mx_host))
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    smtp = smtplib.SMTP(*receiver.address, timeout=WAIT)
    assert smtp.sock is not None
    port = smtp.sock.getsockname()[1]
    smtp.ehlo(client_name())
    smtp.starttls(context=context)
    assert isinstance(smtp.sock, ssl.SSLSocket)
    leaf = x509.load_der_x509_certificate(smtp.sock.getpeercert(binary_form=True) or b"")
    try:
        verifier.verify(leaf, [])
    except VerificationError:
        smtp.close()  # no EHLO: the certificate is not good enough for this sender
        return False, port, since
    smtp.ehlo(client_name())
    smtp.sendmail(f"probe@{CLIENT}", [receiver.rcpt], b"Subject: checked\r\n\r\nhello\r\n")
    smtp.quit()
    return True, port, since


def record_of_port(receiver: Receiver, port: int, since: float) -> SessionFacts:
    """Return the one session record of local `port` that started at or after `since`."""

    def probe() -> list[SessionFacts] | None:
        directory = receiver.endpoint.evidence_dir
        found = [r for r in read_session_facts(directory) if r.peer_port == port]
        return [r for r in found if r.started >= since] or None

    [record] = eventually(probe, f"the session record of port {port}", WAIT)
    return record


def test_a_client_that_rejects_the_certificate_after_the_handshake_is_recorded_so(
    self_signed: Receiver,
) -> None:
    verified, port, since = verify_after_handshake(self_signed)
    assert not verified
    record = record_of_port(self_signed, port, since)
    assert record.handshake is Handshake.OK
    assert record.ended_by is EndedBy.CLOSED_AFTER_HANDSHAKE
    note = certificate_rejection_note(Outcome.REFUSED, [record])
    assert note == "; the sender rejected the certificate after the handshake"


def test_a_client_that_accepts_the_certificate_is_not_said_to_reject_it(tls13: Receiver) -> None:
    verified, port, since = verify_after_handshake(tls13)
    assert verified
    record = record_of_port(tls13, port, since)
    assert (record.ended_by, len(record.messages)) == (EndedBy.QUIT, 1)
    assert certificate_rejection_note(Outcome.DELIVERED, [record]) == ""
    assert certificate_rejection_note(Outcome.REFUSED, [record]) == ""
