"""The receiver against real TLS clients: it closes, alerts and answers as a Postfix MX does.

`gnutls-cli` (Debian gnutls-bin: GnuTLS, the stack Exim uses) sends a QUIT together with its
close_notify and FIN; `openssl s_client` offers a version the receiver refuses; smtplib asks
for AUTH. Each client runs against the shipped receiver states on the local backend (loopback)
and each case has a control driven the same way. Every wait is bounded.
"""

from __future__ import annotations

import secrets
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from test_hostile import Receiver, _start
from waiting import eventually

from lab.evidence_store import read_sessions
from lab.pki import LabPki
from lab.spec import ReceiverSpec

pytestmark = pytest.mark.integration

WAIT = 15.0
GNUTLS_CLI = shutil.which("gnutls-cli")
OPENSSL = shutil.which("openssl")
needs_gnutls = pytest.mark.skipif(GNUTLS_CLI is None, reason="gnutls-cli (gnutls-bin) missing")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl missing")
PROTOCOL_VERSION_ALERT = "alert protocol version"  # OpenSSL's text for alert 70
AUTH_NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"


@pytest.fixture(scope="module")
def tls13(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Receiver]:
    """Run the shipped tls13 state for this module."""
    with _start(receiver_specs["tls13"], lab_pki, tmp_path_factory.mktemp("tls13")) as running:
        yield running


def client_name() -> str:
    """Return an EHLO name no other session of the module uses."""
    return f"c{secrets.token_hex(4)}.client.test"


def record_named(receiver: Receiver, ehlo: str) -> dict[str, Any]:
    """Return the one session record whose (last) EHLO name is `ehlo`, waiting for it."""

    def probe() -> list[dict[str, Any]] | None:
        found = [r for r in read_sessions(receiver.endpoint.evidence_dir) if r["ehlo"] == ehlo]
        return found or None

    [record] = eventually(probe, f"the session record of {ehlo}", WAIT)
    return record


def gnutls_session(receiver: Receiver, script: str) -> str:
    """Run gnutls-cli with STARTTLS, feed it `script` then end of input; return its output."""
    assert GNUTLS_CLI is not None
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
    assert record["transcript"][-1] == "C: QUIT", record["transcript"]
    assert record["ended_by"] == "quit"
    assert [m["message_id"] for m in record["messages"]] == [f"<{name}>"]


@needs_gnutls
def test_close_notify_without_quit_is_recorded_as_such_and_not_answered_221(
    tls13: Receiver,
) -> None:
    name = client_name()
    output = gnutls_session(tls13, transaction(tls13, name))
    assert "250 2.0.0 Ok: queued" in output, output
    assert "221 " not in output, output
    record = record_named(tls13, name)
    assert "C: QUIT" not in record["transcript"]
    assert record["ended_by"] == "close_notify"


def s_client(receiver: Receiver, ehlo: str, *options: str) -> str:
    """Run `openssl s_client -starttls smtp` with `options`; return its output."""
    assert OPENSSL is not None
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
    assert (record["handshake"], record["ended_by"]) == ("failed", "handshake-failed")


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
