"""The relay driver: submit each test message to an SMTP submission service, then watch the lab.

The service (any host and port; STARTTLS, implicit TLS or none; AUTH PLAIN or LOGIN) delivers to
the lab's receivers itself, so the lab cannot look inside it: an accepted submission is
`submitted` and the runner watches the receiver and the bounce mailbox (harness.observe). The
credentials come only from the environment variables the profile names; their values never enter
a report or a log. With `lab_relay: true` the service is the lab's own Postfix, started here as an
authenticated submission relay in the lab network (lab/docker/postfix/run.sh, TLSLAB_RELAY).
"""

from __future__ import annotations

import datetime as dt
import os
import smtplib
import socket
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from harness.model import RelaySecurity, RelaySenderProfile
from harness.senders.base import SendAction, SendReport, TestMessage
from harness.senders.mta import needs_docker
from harness.senders.postfix import CTL, start_postfix
from harness.senders.redaction import Redactor
from lab.backends.base import BackendError, Mount, RunningLab, SenderHost
from lab.spec import LAB_ZONE

SMTP_SECONDS = 30.0
RELAY_CERT, RELAY_KEY = "/etc/tlslab/relay.pem", "/etc/tlslab/relay.key"
LAB_PORTS = {RelaySecurity.STARTTLS: 587, RelaySecurity.IMPLICIT: 465}


def credentials(
    profile: RelaySenderProfile, environ: Mapping[str, str] | None = None
) -> tuple[str, str] | None:
    """Return (user, password) from the variables the profile names, None without AUTH."""
    env = os.environ if environ is None else environ
    if profile.username_env is None or profile.password_env is None:
        return None
    found = []
    for field, variable in (
        ("username_env", profile.username_env),
        ("password_env", profile.password_env),
    ):
        value = env.get(variable, "")
        if not value:
            raise BackendError(
                f"sender profile '{profile.id}': field '{field}': environment variable "
                f"{variable} is not set",
                f"export {variable}=... (the submission account), or name another variable in "
                f"{field}",
            )
        found.append(value)
    return found[0], found[1]


def self_signed(name: str, folder: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate (its own trust anchor) for `name`; return (cert, key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "relay.pem", folder / "relay.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


class _Plain(smtplib.SMTP):
    """SMTP to `address` while TLS checks the server name given as the host."""

    def __init__(self, address: str, name: str, port: int, timeout: float) -> None:
        """Connect to `address` and read the banner; TLS will check `name`."""
        self._address = address
        super().__init__(name, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        """Connect to the address, not to the name."""
        return socket.create_connection((self._address, port), timeout)


class _Implicit(smtplib.SMTP_SSL):
    """Implicit TLS (SMTPS) to `address`, checking the server name given as the host."""

    def __init__(
        self, address: str, name: str, port: int, timeout: float, context: ssl.SSLContext
    ) -> None:
        """Connect to `address`, do the TLS handshake for `name` and read the banner."""
        self._address = address
        super().__init__(name, port, timeout=timeout, context=context)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        """Connect to the address and wrap it in TLS for the server name."""
        raw = socket.create_connection((self._address, port), timeout)
        return self.context.wrap_socket(raw, server_hostname=host)


class RelaySender:
    """Submits each test message to an SMTP submission service that delivers it to the lab."""

    def __init__(
        self,
        profile: RelaySenderProfile,
        lab: RunningLab,
        outbox: Path,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """Read the credentials (fail early, naming the variable); start the lab relay if asked."""
        self.profile, self.id = profile, profile.id
        self.observe_seconds = profile.observe_timeout_seconds
        self._login = credentials(profile, environ)
        secrets = [self._login[1]] if self._login else []
        self._redact = Redactor.of(secrets, self._login)
        self.address = self.server_name = profile.host
        self.port = profile.port
        self.ca_file = profile.relay_ca_file
        self.host: SenderHost | None = None
        self._keys: tempfile.TemporaryDirectory[str] | None = None
        if profile.lab_relay:
            self._start_lab_relay(lab, outbox)

    def close(self) -> None:
        """Remove the lab relay's throwaway key; called once the lab (and the relay) stopped."""
        if self._keys is not None:
            self._keys.cleanup()

    def _start_lab_relay(self, lab: RunningLab, outbox: Path) -> None:
        """Start the lab's Postfix as an authenticated submission relay; add the user."""
        needs_docker(lab, "relay driver's lab_relay")
        if self.profile.security is RelaySecurity.NONE:
            raise BackendError(
                f"sender profile '{self.id}': the lab relay requires TLS (security: none)",
                "use security: starttls (port 587) or implicit (port 465)",
            )
        name = f"relay-{self.id}"
        self.server_name = f"{name}.sender.{LAB_ZONE}"
        # a throwaway key, kept out of the report folder and removed with the driver
        self._keys = tempfile.TemporaryDirectory(prefix="tlslab-relay-")
        cert, key = self_signed(self.server_name, Path(self._keys.name))
        self.ca_file = self.ca_file or str(cert)
        settings = {
            "TLSLAB_SECURITY_LEVEL": self.profile.relay_security_level.value,
            "TLSLAB_RELAY": "yes",
            "TLSLAB_RELAY_CERT": RELAY_CERT,
            "TLSLAB_RELAY_KEY": RELAY_KEY,
        }
        mounts = (Mount(cert, RELAY_CERT), Mount(key, RELAY_KEY))
        try:
            relay = start_postfix(lab, name, settings, mounts, outbox / "relay" / self.id)
        except BaseException:
            self.close()  # the run never gets this driver, so it cannot close it
            raise
        relay.close()  # its command server answered `ready`; the relay needs no more of it
        self.host = relay.host
        self.address = self.host.address
        if self.port not in LAB_PORTS.values():
            self.port = LAB_PORTS[self.profile.security]
        if self._login:
            user, password = self._login
            env = {"TLSLAB_PASSWORD": password}
            status, output = self.host.exec([CTL, "relay-user", user], env)
            if status != 0:
                raise BackendError(f"cannot add the relay user: {self._clean(output)[-300:]}")

    def _context(self) -> ssl.SSLContext:
        """Return the TLS context: verifying the relay (system or named CA) unless told not to."""
        if not self.profile.verify_relay_certificate:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            return context
        return ssl.create_default_context(cafile=self.ca_file)

    def send(self, message: TestMessage) -> SendReport:
        """Submit the message and return what happened, every form of the password redacted."""
        return self._redact.report(self._submit(message))

    def _submit(self, message: TestMessage) -> SendReport:
        """Submit the message; accepted is `submitted`, a 5xx `refused`, a 4xx `deferred`."""
        where = f"{self.server_name}:{self.port} ({self.profile.security.value})"
        try:
            with self._session() as smtp:
                smtp.sendmail(message.mail_from, [message.rcpt], message.data)
        except smtplib.SMTPRecipientsRefused as error:
            code, reply = next(iter(error.recipients.values()))
            return self._refused(code, reply, where)
        except smtplib.SMTPConnectError as error:
            reason = self._clean(f"{where} did not greet: {error.smtp_code} {error.smtp_error!r}")
            return SendReport(SendAction.FAILED, reason, lab_fault=True)
        except smtplib.SMTPResponseException as error:
            return self._refused(error.smtp_code, error.smtp_error, where)
        except (smtplib.SMTPException, OSError, ValueError) as error:
            reason = self._clean(f"cannot submit to {where}: {type(error).__name__}: {error}")
            return SendReport(SendAction.FAILED, reason, lab_fault=True)
        auth = f" after AUTH {self.profile.auth_mechanism.upper()}" if self._login else ""
        return SendReport(
            SendAction.SUBMITTED,
            f"{where} accepted it{auth}; the lab watches for up to {self.observe_seconds:g} s",
        )

    def _session(self) -> smtplib.SMTP:
        """Return a connected, TLS-protected (per profile) and authenticated SMTP session."""
        smtp: smtplib.SMTP
        if self.profile.security is RelaySecurity.IMPLICIT:
            smtp = _Implicit(
                self.address, self.server_name, self.port, SMTP_SECONDS, self._context()
            )
        else:
            smtp = _Plain(self.address, self.server_name, self.port, SMTP_SECONDS)
        try:
            smtp.ehlo(f"relay-driver.sender.{LAB_ZONE}")
            if self.profile.security is RelaySecurity.STARTTLS:
                smtp.starttls(context=self._context())
                smtp.ehlo(f"relay-driver.sender.{LAB_ZONE}")
            if self._login:
                smtp.user, smtp.password = self._login
                if self.profile.auth_mechanism == "login":
                    smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
                else:
                    smtp.auth("PLAIN", smtp.auth_plain)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _refused(self, code: int, reply: bytes | str, where: str) -> SendReport:
        """Map an SMTP reply to the submission: 5xx refused, 4xx deferred."""
        text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
        reason = self._clean(f"submission rejected by {where}: {code} {text}")
        if 400 <= code < 500:
            return SendReport(SendAction.DEFERRED, reason)
        return SendReport(SendAction.REFUSED, reason)

    def _clean(self, text: str) -> str:
        """Return one line of text with every form of the password redacted."""
        return self._redact.line(text)
