"""The reference sender: a real SMTP client whose TLS policy comes from the sender YAML."""

from __future__ import annotations

import dataclasses
import os
import smtplib
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from harness.job_slots import modelled_wait
from harness.model import PolicyAction, ReferenceSenderProfile, TlsMode
from harness.senders.base import SendAction, SendReport, TestMessage
from lab.backends.base import RunningLab
from lab.evidence_store import write_durably
from lab.spec import TlsVersion

CONNECT_TIMEOUT = 10.0
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
RETRIES = 1  # a deferred message is retried once ...
RETRY_DELAY = 1.0  # ... this many seconds later (Postfix's minimal_backoff_time, compressed)
# OpenSSL's own default suites at Python's level, named so that the model does not depend on how
# Python was built (python.org builds offer forward-secret suites only, Debian's OpenSSL's DEFAULT)
MODERN_CIPHERS = "DEFAULT:@SECLEVEL=2"


class Router(Protocol):
    """Finds the MX hosts of a domain and where each host listens."""

    def mx_hosts(self, domain: str) -> list[str]:
        """Return the MX host names of `domain`, most preferred first ([] when none)."""
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
    """Return the client TLS context for a profile: version floor, and verification or not.

    Made once per (version floor, verification, CA file as it is now) and then shared: a
    context only configures the connections made with it, which never resume a session.
    """
    ca_state: tuple[int, int, int] | None = None
    if profile.verify:
        try:
            stat = os.stat(ca_cert)
            ca_state = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            return _new_client_context(profile, ca_cert)  # raises as it always did
    key = (profile.min_version, profile.verify, str(ca_cert), ca_state)
    with _CONTEXTS_LOCK:
        context = _CONTEXTS.get(key)
    if context is None:
        context = _new_client_context(profile, ca_cert)
        with _CONTEXTS_LOCK:
            context = _CONTEXTS.setdefault(key, context)
            while len(_CONTEXTS) > MAX_CONTEXTS:
                del _CONTEXTS[next(iter(_CONTEXTS))]
    return context


ContextKey = tuple[TlsVersion, bool, str, tuple[int, int, int] | None]
_CONTEXTS: dict[ContextKey, ssl.SSLContext] = {}
_CONTEXTS_LOCK = threading.Lock()
MAX_CONTEXTS = 64  # client contexts kept per process, oldest dropped first


def _new_client_context(profile: ReferenceSenderProfile, ca_cert: Path) -> ssl.SSLContext:
    """Make the client TLS context of a profile (client_context's work, without its cache)."""
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

    def __init__(
        self, profile: ReferenceSenderProfile, lab: RunningLab | None = None, outbox: Path = Path()
    ) -> None:
        """Drive the given policy profile; `send` delivers to `lab`, fallback copies to `outbox`."""
        self.profile = profile
        self.id = profile.id
        self.helo = f"sender-{profile.id}.lab.test"
        self.lab, self.outbox = lab, outbox

    def send(self, message: TestMessage) -> SendReport:
        """Deliver `message` to its recipient's MX in the lab, honouring the TLS policy."""
        if self.lab is None:
            raise ValueError("this ReferenceSender has no lab; use deliver() with a router")
        return self.deliver(message, self.lab, self.lab.pki.ca_cert_path, self.outbox)

    def close(self) -> None:
        """Nothing to release: every connection closes with its delivery."""

    def deliver(
        self, message: TestMessage, router: Router, ca_cert: Path, outbox: Path
    ) -> SendReport:
        """Deliver per policy over the recipient's MX hosts; retry a deferral; never raises.

        A deferred message is retried RETRIES times, RETRY_DELAY seconds apart (a retry
        schedule compressed for the lab); the report then lists every attempt and its time.
        """
        return with_retries(lambda: self._deliver_once(message, router, ca_cert, outbox))

    def _deliver_once(
        self, message: TestMessage, router: Router, ca_cert: Path, outbox: Path
    ) -> SendReport:
        """Make one delivery attempt: each MX host in preference order, the policy per host."""
        domain = message.rcpt.rpartition("@")[2]
        try:
            routes = [(host, router.address_of(host)) for host in router.mx_hosts(domain)]
        except (OSError, KeyError) as error:
            return SendReport(
                SendAction.FAILED, f"cannot resolve {domain}: {error}", lab_fault=True
            )
        if not routes:
            return SendReport(SendAction.FAILED, f"no MX for {domain} in the lab", lab_fault=True)
        context = client_context(self.profile, ca_cert)
        attempts: list[tuple[str, int]] = []
        moved_on: list[MovedOn] = []
        for mx_host, address in routes:
            try:
                report = self._try_host(message, mx_host, address, context, attempts, outbox)
            except MovedOn as reason:
                moved_on.append(reason)
                continue
            if moved_on:  # say which hosts were passed over before this one
                passed = "; ".join(str(m) for m in moved_on)
                report = dataclasses.replace(report, reason=f"{passed}; then {report.reason}")
            return report
        return self._all_hosts_failed(message, moved_on, attempts, outbox)

    def _try_host(
        self,
        message: TestMessage,
        mx_host: str,
        address: tuple[str, int],
        context: ssl.SSLContext,
        attempts: list[tuple[str, int]],
        outbox: Path,
    ) -> SendReport:
        """Deliver to one MX host; raise MovedOn when the next MX host should be tried."""
        try:
            try:
                version = self._deliver(message, mx_host, address, context, attempts)
            except PolicyNotMet as unmet:
                if self.profile.on_policy_unmet is not PolicyAction.PLAINTEXT:
                    raise MovedOn(f"{mx_host}: {unmet}", unmet=True) from unmet
                self._deliver(message, mx_host, address, None, attempts)
                return SendReport(
                    SendAction.DELIVERED,
                    f"{mx_host}: {unmet}; retried in plaintext",
                    tuple(attempts),
                )
        except GreetingRefused as refused:
            # Nothing about the sender was observed: the lab failed to serve the session.
            return SendReport(
                SendAction.FAILED,
                f"{mx_host} refused the session before EHLO: {refused}; the lab receiver is over "
                "its max_sessions or max_sessions_per_client (lower --jobs or raise the limit)",
                tuple(attempts),
                lab_fault=True,
            )
        except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as error:
            code, reply = _reply_of(error)
            if 400 <= code < 500:  # RFC 5321 section 5.1: a temporary failure, try the next MX
                raise MovedOn(f"{mx_host} answered {reply}", temporary=True) from error
            return SendReport(SendAction.REFUSED, f"{mx_host} answered {reply}", tuple(attempts))
        except (OSError, smtplib.SMTPException) as error:
            raise MovedOn(
                f"could not talk to {mx_host} at {address[0]}:{address[1]}: {error}"
            ) from error
        how = f"over {version}" if version else "in plaintext"
        return SendReport(
            SendAction.DELIVERED, f"delivered {how} to {mx_host}", tuple(attempts), version
        )

    def _all_hosts_failed(
        self,
        message: TestMessage,
        moved_on: list[MovedOn],
        attempts: list[tuple[str, int]],
        outbox: Path,
    ) -> SendReport:
        """Decide after every MX host failed: defer (4xx), the policy's action, or a lab error."""
        reason = "; ".join(str(m) for m in moved_on)
        if any(m.temporary for m in moved_on):
            return SendReport(SendAction.DEFERRED, reason, tuple(attempts))
        if any(m.unmet for m in moved_on):
            return self._policy_unmet(message, reason, attempts, outbox)
        return SendReport(SendAction.FAILED, reason, tuple(attempts), lab_fault=True)

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
        except smtplib.SMTPResponseException as refused:  # any reply but 220: TLS not available
            text = refused.smtp_error
            text = text.decode(errors="replace") if isinstance(text, bytes) else text
            raise PolicyNotMet(
                f"receiver answered STARTTLS with {refused.smtp_code} {text}"
            ) from None
        except ssl.SSLError as error:
            raise PolicyNotMet(f"TLS handshake failed: {error.reason or error}") from error
        smtp.ehlo()
        version = smtp.sock.version() if isinstance(smtp.sock, ssl.SSLSocket) else None
        return TlsVersion.from_openssl(version).value if version else None

    def _policy_unmet(
        self, message: TestMessage, reason: str, attempts: list[tuple[str, int]], outbox: Path
    ) -> SendReport:
        """Apply the profile's action when no MX host met the policy: refuse, defer or fallback."""
        action = self.profile.on_policy_unmet
        if action is PolicyAction.REFUSE:
            return SendReport(SendAction.REFUSED, f"{reason}; message dropped", tuple(attempts))
        if action is PolicyAction.DEFER:
            return SendReport(
                SendAction.DEFERRED, f"{reason}; message kept queued", tuple(attempts)
            )
        portal = outbox / "portal" / self.id / f"{_safe_name(message.message_id)}.eml"
        try:
            portal.parent.mkdir(parents=True, exist_ok=True)
            write_durably(portal, message.data)
        except OSError as error:  # the lab's outbox, not the receiver: say so
            why = error.strerror or error
            return SendReport(
                SendAction.FAILED, f"{reason}; cannot write the portal copy {portal}: {why}",
                tuple(attempts), lab_fault=True,
            )  # fmt: skip
        return SendReport(
            SendAction.FALLBACK,
            f"{reason}; routed to the secure portal outbox",
            tuple(attempts),
            portal_path=portal,
        )


class MovedOn(Exception):
    """One MX host did not take the message and the next one is tried (the reason is the text)."""

    def __init__(self, reason: str, *, temporary: bool = False, unmet: bool = False) -> None:
        """Keep the reason and whether it was a 4xx reply or an unmet TLS policy."""
        super().__init__(reason)
        self.temporary, self.unmet = temporary, unmet


def _reply_of(
    error: smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused,
) -> tuple[int, str]:
    """Return the SMTP code and `code text` of a refused command or of refused recipients."""
    raw: bytes | str
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, raw = next(iter(error.recipients.values()), (0, b"no reply"))
    else:
        code, raw = error.smtp_code, error.smtp_error
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    return code, f"{code} {text}"


def with_retries(attempt: Callable[[], SendReport]) -> SendReport:
    """Run `attempt`, again RETRIES times RETRY_DELAY apart while it defers; report every try."""
    began = time.monotonic()
    reports = [attempt()]
    while reports[-1].action is SendAction.DEFERRED and len(reports) <= RETRIES:
        modelled_wait(RETRY_DELAY)  # the retry schedule itself: its job slot runs another cell
        retried = attempt()
        reports.append(dataclasses.replace(retried, reason=retried.reason + _after(began)))
    return _combined(reports)


def _after(began: float) -> str:
    """Return when a retry ran, relative to the first attempt."""
    return f" (retry {time.monotonic() - began:.1f} s after the first attempt)"


def _combined(reports: list[SendReport]) -> SendReport:
    """Return the last attempt's report with every attempt's connections and reasons."""
    if len(reports) == 1:
        return reports[0]
    last = reports[-1]
    told = "; ".join(f"attempt {n}: {r.action.value}: {r.reason}" for n, r in enumerate(reports, 1))
    connections = tuple(c for r in reports for c in r.attempts)
    return dataclasses.replace(last, reason=told, attempts=connections)


def _safe_name(message_id: str) -> str:
    """Return a message id usable as a file name."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in message_id.strip("<>"))
