"""The reference sender: a real SMTP client whose TLS policy comes from the sender YAML."""

from __future__ import annotations

import smtplib
import socket
import ssl
import warnings
from pathlib import Path
from typing import Any, Protocol

from harness.model import PolicyAction, ReferenceSenderProfile, TlsMode
from harness.senders.base import SendAction, SendReport, TestMessage
from lab.backends.base import RunningLab
from lab.evidence_store import write_durably
from lab.spec import TlsVersion

CONNECT_TIMEOUT = 10.0
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
# OpenSSL's own default suites at Python's level, named so that the model does not depend on how
# Python was built (python.org builds offer forward-secret suites only, Debian's OpenSSL's DEFAULT)
MODERN_CIPHERS = "DEFAULT:@SECLEVEL=2"


class Router(Protocol):
    """Finds the MX host of a domain and where that host listens."""

    def mx_for(self, domain: str) -> str | None:
        """Return the preferred MX host name of `domain`, or None."""
        ...

    def address_of(self, mx_host: str) -> tuple[str, int]:
        """Return the (address, port) to connect to for `mx_host`."""
        ...


class PolicyNotMet(Exception):
    """The receiver does not meet the sender's TLS policy (the reason is the message)."""


class GreetingRefused(Exception):
    """The lab receiver refused the session in its greeting (e.g. 421: over a session cap)."""


class RoutedSMTP(smtplib.SMTP):
    """smtplib.SMTP that connects to a fixed address while naming (SNI, verify) the MX host."""

    def __init__(self, address: tuple[str, int], local_hostname: str) -> None:
        """Remember where the MX host really lives."""
        self._address = address
        super().__init__(local_hostname=local_hostname, timeout=CONNECT_TIMEOUT)

    def connect(self, host: str = "localhost", port: int = 0, source_address: Any = None) -> Any:
        """Connect to the routed address; `host` stays the name used for SNI and verification."""
        self._host = host
        return super().connect(host, port, source_address)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        """Connect to the routed address instead of resolving `host`."""
        return socket.create_connection(self._address, timeout)

    def local_endpoint(self) -> tuple[str, int]:
        """Return this connection's local (ip, port), which the receiver records as its peer."""
        name: Any = self.sock.getsockname() if self.sock else ("", 0)
        return str(name[0]), int(name[1])


def client_context(profile: ReferenceSenderProfile, ca_cert: Path) -> ssl.SSLContext:
    """Return the client TLS context for a profile: version floor, and verification or not."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = profile.min_version.ssl_version
        context.maximum_version = TlsVersion.TLS13.ssl_version
    context.set_ciphers(LEGACY_CIPHERS if profile.min_version.is_legacy else MODERN_CIPHERS)
    if profile.verify:
        context.load_verify_locations(cafile=str(ca_cert))
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class ReferenceSender:
    """Delivers like an MTA: EHLO, STARTTLS per policy, and the policy's action when unmet."""

    def __init__(self, profile: ReferenceSenderProfile) -> None:
        """Drive the given policy profile."""
        self.profile = profile
        self.id = profile.id
        self.helo = f"sender-{profile.id}.lab.test"

    def send(self, message: TestMessage, lab: RunningLab, outbox: Path) -> SendReport:
        """Deliver `message` to its recipient's MX in the lab, honouring the TLS policy."""
        return self.deliver(message, lab, lab.pki.ca_cert_path, outbox)

    def deliver(
        self, message: TestMessage, router: Router, ca_cert: Path, outbox: Path
    ) -> SendReport:
        """Resolve the recipient's MX with `router` and deliver per policy; never raises."""
        domain = message.rcpt.rpartition("@")[2]
        try:
            mx_host = router.mx_for(domain)
            address = router.address_of(mx_host) if mx_host else None
        except OSError as error:
            return SendReport(
                SendAction.FAILED, f"cannot resolve {domain}: {error}", lab_fault=True
            )
        if mx_host is None or address is None:
            return SendReport(SendAction.FAILED, f"no MX for {domain} in the lab", lab_fault=True)
        context = client_context(self.profile, ca_cert)
        attempts: list[tuple[str, int]] = []
        try:
            try:
                version = self._deliver(message, mx_host, address, context, attempts)
            except PolicyNotMet as unmet:
                return self._policy_unmet(message, mx_host, address, attempts, outbox, unmet)
        except GreetingRefused as refused:
            # Nothing about the sender was observed: the lab failed to serve the session.
            return SendReport(
                SendAction.FAILED,
                f"{mx_host} refused the session before EHLO: {refused}; the lab receiver is over "
                "its max_sessions or max_sessions_per_client (lower --jobs or raise the limit)",
                tuple(attempts),
                lab_fault=True,
            )
        except smtplib.SMTPResponseException as error:
            action = SendAction.DEFERRED if 400 <= error.smtp_code < 500 else SendAction.REFUSED
            text = error.smtp_error
            text = text.decode(errors="replace") if isinstance(text, bytes) else text
            reply = f"{error.smtp_code} {text}"
            return SendReport(action, f"receiver answered {reply}", tuple(attempts))
        except (OSError, smtplib.SMTPException) as error:
            return SendReport(
                SendAction.FAILED,
                f"could not talk to {mx_host} at {address[0]}:{address[1]}: {error}",
                tuple(attempts),
                lab_fault=True,
            )
        how = f"over {version}" if version else "in plaintext"
        return SendReport(SendAction.DELIVERED, f"delivered {how}", tuple(attempts), version)

    def _deliver(
        self,
        message: TestMessage,
        mx_host: str,
        address: tuple[str, int],
        context: ssl.SSLContext | None,
        attempts: list[tuple[str, int]],
    ) -> str | None:
        """Run one SMTP session (plaintext when `context` is None); return the TLS version."""
        with RoutedSMTP(address, self.helo) as smtp:
            code, text = smtp.connect(mx_host, address[1])
            attempts.append(smtp.local_endpoint())
            if code != 220:  # smtplib's connect() returns a refusing greeting instead of raising
                raise GreetingRefused(f"{code} {text.decode(errors='replace')}")
            smtp.ehlo()
            version = None
            if context is not None:
                version = self._start_tls(smtp, context)
            smtp.sendmail(message.mail_from, [message.rcpt], message.data)
            return version

    def _start_tls(self, smtp: RoutedSMTP, context: ssl.SSLContext) -> str | None:
        """Upgrade with STARTTLS per policy; return the version, or None when staying plaintext."""
        required = self.profile.tls is TlsMode.REQUIRED
        if not smtp.has_extn("starttls"):
            if required:
                raise PolicyNotMet("receiver does not offer STARTTLS")
            return None
        try:
            smtp.starttls(context=context)
        except ssl.SSLError as error:
            raise PolicyNotMet(f"TLS handshake failed: {error.reason or error}") from error
        smtp.ehlo()
        version = smtp.sock.version() if isinstance(smtp.sock, ssl.SSLSocket) else None
        return TlsVersion.from_openssl(version).value if version else None

    def _policy_unmet(
        self,
        message: TestMessage,
        mx_host: str,
        address: tuple[str, int],
        attempts: list[tuple[str, int]],
        outbox: Path,
        unmet: PolicyNotMet,
    ) -> SendReport:
        """Apply the profile's action for an unmet policy: plaintext, refuse, defer or fallback."""
        action = self.profile.on_policy_unmet
        reason = str(unmet)
        if action is PolicyAction.PLAINTEXT:
            self._deliver(message, mx_host, address, None, attempts)
            return SendReport(
                SendAction.DELIVERED, f"{reason}; retried in plaintext", tuple(attempts)
            )
        if action is PolicyAction.REFUSE:
            return SendReport(SendAction.REFUSED, f"{reason}; message dropped", tuple(attempts))
        if action is PolicyAction.DEFER:
            return SendReport(
                SendAction.DEFERRED, f"{reason}; message kept queued", tuple(attempts)
            )
        portal = outbox / "portal" / self.id / f"{_safe_name(message.message_id)}.eml"
        portal.parent.mkdir(parents=True, exist_ok=True)
        write_durably(portal, message.data)
        return SendReport(
            SendAction.FALLBACK,
            f"{reason}; routed to the secure portal outbox",
            tuple(attempts),
            portal_path=portal,
        )


def _safe_name(message_id: str) -> str:
    """Return a message id usable as a file name."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in message_id.strip("<>"))
