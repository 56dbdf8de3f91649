"""The rfc-sender: delivers as RFC 7672 (SMTP DANE) and RFC 8461 (MTA-STS, through a seam) require.

Per MX host (preference order): MX, A and TLSA are looked up with DNSSEC validation from the
lab trust anchor. Secure usable TLSA (2 or 3): TLS is mandatory and authenticated by TLSA, no
fallback. Secure TLSA with only unusable records: TLS mandatory, unauthenticated. Bogus or
failed lookups: the host is not used. No TLSA or an insecure zone: the MTA-STS policy the seam
supplies (enforce: an MX the patterns match, TLS >= 1.2, a certificate valid for the MX host),
else opportunistic TLS. When no host took the message: deferred.
"""

from __future__ import annotations

import dataclasses
import enum
import smtplib
import ssl
import warnings
from pathlib import Path
from typing import Protocol

from harness.model import RfcSenderProfile
from harness.senders.base import SendAction, SendReport, TestMessage
from harness.senders.dane_match import Tlsa, authenticate, pkix_problem
from harness.senders.dnssec_resolver import Lookup, Security, ValidatingResolver
from harness.senders.reference import RoutedSMTP, with_retries
from lab.backends.base import BackendError, RunningLab

LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"  # opportunistic TLS takes what the receiver offers
STS_VERSIONS = ("TLSv1.2", "TLSv1.3")  # what an MTA-STS enforce session may use


class Policy(enum.StrEnum):
    """The TLS policy applied to one MX host, and the RFC rule it comes from."""

    DANE = "dane"  # RFC 7672 section 2.2: usable TLSA, authenticated TLS, no fallback
    DANE_UNAUTHENTICATED = "dane-unusable-tlsa"  # section 3.1.3: TLS mandatory, not authenticated
    STS_ENFORCE = "sts-enforce"  # RFC 8461 sections 4 and 5: MX match, TLS >= 1.2, valid cert
    OPPORTUNISTIC = "opportunistic"  # RFC 7435 / 3207: TLS when offered, else plaintext


@dataclasses.dataclass(frozen=True)
class StsRequirement:
    """What an MTA-STS policy requires of one MX host (RFC 8461 sections 4.1 and 5)."""

    mode: str  # "enforce" | "testing" | "none"
    mx_matches: bool  # the MX host matches one of the policy's `mx:` patterns
    policy_text: str  # the policy as fetched, for the account


class StsSource(Protocol):
    """The MTA-STS seam: the policy a domain publishes for one MX host, or None (no policy)."""

    def requirement(self, domain: str, mx_host: str) -> StsRequirement | None:
        """Return the domain's MTA-STS requirement for `mx_host`, or None when it has none."""
        ...

    def account(self, domain: str, mx_host: str) -> str:
        """Return which policy applied to `mx_host` and why (TXT, fetch, policy, decision)."""
        ...


class HostSkipped(Exception):
    """An MX host cannot be used under its policy; the next is tried (the reason is the text)."""


@dataclasses.dataclass(frozen=True)
class HostPlan:
    """The policy for one MX host and the lookups it was decided from."""

    host: str
    policy: Policy
    tlsa: tuple[Tlsa, ...]
    why: str


class RfcSender:
    """Delivers per RFC 7672 through the lab's signed DNS; the account says which policy applied."""

    def __init__(
        self,
        profile: RfcSenderProfile,
        lab: RunningLab,
        outbox: Path,
        sts: StsSource | None = None,
    ) -> None:
        """Validate against the lab DNS and its trust anchor; `sts` is the MTA-STS seam."""
        if lab.dns is None:
            raise BackendError(
                "rfc-sender needs the lab DNS, which runs only with `dane:` or `sts:` receivers",
                "add a DANE or MTA-STS receiver state to the suite, or use a reference profile",
            )
        self.profile, self.id, self.sts, self.lab = profile, profile.id, sts, lab
        self.resolver = ValidatingResolver((lab.dns.host, lab.dns.port), lab.dns.trust_anchor)
        self.helo = f"sender-{profile.id}.lab.test"

    def close(self) -> None:
        """Nothing to release: every session and query is closed when it ends."""

    def send(self, message: TestMessage) -> SendReport:
        """Deliver `message`; retry a deferral on the reference schedule (RFC 5321 4.5.4.1)."""
        return with_retries(lambda: self._send_once(message))

    def _send_once(self, message: TestMessage) -> SendReport:
        """Deliver `message` under RFC 7672; defer when no MX host may take it; never raises."""
        lab = self.lab
        domain = message.rcpt.rpartition("@")[2]
        mx = self.resolver.lookup(domain, "MX")
        account = [f"MX {mx.as_text()}"]
        if mx.security in (Security.BOGUS, Security.FAILED):
            return _deferred(account, "the MX lookup is not usable: defer (RFC 7672 section 2.2.1)")
        hosts = [r.split()[1].rstrip(".") for r in sorted(mx.records, key=_preference)]
        if not hosts:
            return SendReport(SendAction.FAILED, "; ".join(account) + "; no MX", lab_fault=True)
        attempts: list[tuple[str, int]] = []
        for host in hosts:
            try:
                plan = self._plan(domain, host, mx, account)
                address = self._address(host, lab, account)
                version = self._deliver(message, plan, address, attempts, lab, account)
            except HostSkipped as skipped:
                account.append(f"{host}: not used: {skipped}")
                continue
            except (smtplib.SMTPResponseException, smtplib.SMTPRecipientsRefused) as error:
                code, text = _reply(error)
                if 400 <= code < 500:
                    account.append(f"{host} answered {code} {text}")
                    continue
                account.append(f"{host} answered {code} {text}")
                return SendReport(SendAction.REFUSED, "; ".join(account), tuple(attempts))
            except (OSError, smtplib.SMTPException) as error:
                account.append(f"{host}: could not talk to it: {error}")
                continue
            how = f"over {version}" if version else "in plaintext"
            account.append(f"delivered {how} to {host} under policy {plan.policy.value}")
            return SendReport(SendAction.DELIVERED, "; ".join(account), tuple(attempts), version)
        return _deferred(account, "no MX host could be used", tuple(attempts))

    def _plan(self, domain: str, host: str, mx: Lookup, account: list[str]) -> HostPlan:
        """Decide the policy for one MX host from its A and TLSA lookups (RFC 7672 section 2.2)."""
        address = self.resolver.lookup(host, "A")
        account.append(f"A {address.as_text()}")
        if address.security in (Security.BOGUS, Security.FAILED):
            raise HostSkipped("its address lookup is not usable (RFC 7672 section 2.2.2)")
        if mx.security is Security.SECURE and address.security is Security.SECURE:
            tlsa = self.resolver.lookup(f"_25._tcp.{host}", "TLSA")
            account.append(f"TLSA {tlsa.as_text()}")
            if tlsa.security in (Security.BOGUS, Security.FAILED):
                raise HostSkipped(
                    f"the TLSA lookup {_failed(tlsa)}: MUST NOT deliver (RFC 7672 section 2.2)"
                )
            if tlsa.security is Security.SECURE and tlsa.records:
                records = tuple(Tlsa.parse(r) for r in tlsa.records)
                if any(r.usable for r in records):
                    return HostPlan(host, Policy.DANE, records, "secure usable TLSA")
                return HostPlan(
                    host, Policy.DANE_UNAUTHENTICATED, records,
                    "secure TLSA, none usable (only 0/1): TLS without authentication",
                )  # fmt: skip
            why = "secure denial of TLSA: no DANE"
        else:
            why = "MX or A not secure: DANE does not apply (RFC 7672 section 2.2.1)"
        return self._sts_plan(domain, host, why, account)

    def _sts_plan(self, domain: str, host: str, why: str, account: list[str]) -> HostPlan:
        """Without usable TLSA: the MTA-STS seam (RFC 8461: DANE goes first), else opportunistic."""
        if self.sts is None:
            account.append(f"{host}: {why}; MTA-STS not consulted (no policy source wired in)")
            return HostPlan(host, Policy.OPPORTUNISTIC, (), why)
        requirement = self.sts.requirement(domain, host)
        account.append(f"{host}: {why}; {self.sts.account(domain, host)}")
        if requirement is None or requirement.mode != "enforce":
            return HostPlan(host, Policy.OPPORTUNISTIC, (), why)
        if not requirement.mx_matches:
            raise HostSkipped("not matched by the enforce policy's mx patterns (RFC 8461 4.1)")
        return HostPlan(host, Policy.STS_ENFORCE, (), f"MTA-STS enforce: {requirement.policy_text}")

    def _address(self, host: str, lab: RunningLab, account: list[str]) -> tuple[str, int]:
        """Return where to connect: the validated A record and the port the lab routes it to."""
        found = self.resolver.lookup(host, "A")
        if not found.records:
            raise HostSkipped("it has no address")
        try:
            port = lab.address_of(host)[1]
        except KeyError:
            raise HostSkipped("the lab has no route to it") from None
        return found.records[0], port

    def _deliver(
        self,
        message: TestMessage,
        plan: HostPlan,
        address: tuple[str, int],
        attempts: list[tuple[str, int]],
        lab: RunningLab,
        account: list[str],
    ) -> str | None:
        """Run one session under the plan; raise HostSkipped when the policy forbids it."""
        mandatory = plan.policy is not Policy.OPPORTUNISTIC
        with RoutedSMTP(address, self.helo) as smtp:
            code, text = smtp.connect(plan.host, address[1])
            attempts.append(smtp.local_endpoint())
            if code != 220:
                raise smtplib.SMTPConnectError(code, text)
            smtp.ehlo()
            if not smtp.has_extn("starttls"):
                if mandatory:
                    raise HostSkipped(f"no STARTTLS offered under policy {plan.policy.value}")
                smtp.sendmail(message.mail_from, [message.rcpt], message.data)
                return None
            try:
                smtp.starttls(context=_context())
            except (ssl.SSLError, smtplib.SMTPResponseException) as error:
                if mandatory:
                    raise HostSkipped(
                        f"STARTTLS failed under {plan.policy.value}: {error}"
                    ) from None
                self._plaintext_retry(message, plan, address, attempts, account, error)
                return None
            version = smtp.sock.version() if isinstance(smtp.sock, ssl.SSLSocket) else None
            version = "TLSv1.0" if version == "TLSv1" else version
            self._check(plan, _chain(smtp), version, lab, account)
            smtp.ehlo()
            smtp.sendmail(message.mail_from, [message.rcpt], message.data)
            return version

    def _check(
        self,
        plan: HostPlan,
        chain: list[bytes],
        version: str | None,
        lab: RunningLab,
        account: list[str],
    ) -> None:
        """Authenticate the server as the plan requires; raise HostSkipped when it fails."""
        if plan.policy is Policy.DANE:
            result = authenticate(chain, plan.host, list(plan.tlsa))
            account.append(
                f"{plan.host}: DANE {'verified' if result.ok else 'failed'}: {result.reason}"
            )
            if not result.ok:
                raise HostSkipped("DANE authentication failed: no fallback (RFC 7672 section 2.2)")
        elif plan.policy is Policy.STS_ENFORCE:
            if version not in STS_VERSIONS:
                raise HostSkipped(f"MTA-STS enforce needs TLS 1.2 or later, not {version}")
            problem = pkix_problem(chain, lab.pki.ca_cert_path.read_bytes(), plan.host)
            if problem is not None:
                raise HostSkipped(f"MTA-STS enforce needs a valid certificate: {problem}")
            account.append(f"{plan.host}: MTA-STS certificate verified")
        elif plan.policy is Policy.DANE_UNAUTHENTICATED:
            account.append(f"{plan.host}: TLS without authentication (only unusable TLSA)")

    def _plaintext_retry(
        self,
        message: TestMessage,
        plan: HostPlan,
        address: tuple[str, int],
        attempts: list[tuple[str, int]],
        account: list[str],
        error: Exception,
    ) -> None:
        """Opportunistic TLS after a failed handshake: deliver in plaintext in a new session."""
        account.append(f"{plan.host}: TLS failed ({error}); opportunistic: retried in plaintext")
        with RoutedSMTP(address, self.helo) as smtp:
            smtp.connect(plan.host, address[1])
            attempts.append(smtp.local_endpoint())
            smtp.ehlo()
            smtp.sendmail(message.mail_from, [message.rcpt], message.data)


def _context() -> ssl.SSLContext:
    """Return the client context: no PKIX checks (DANE or the plan authenticates afterwards)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers(LEGACY_CIPHERS)
    return context


def _chain(smtp: smtplib.SMTP) -> list[bytes]:
    """Return the certificate chain the server sent, leaf first, as DER."""
    sock = smtp.sock
    if not isinstance(sock, ssl.SSLSocket):
        return []
    sslobj = getattr(sock, "_sslobj", None)
    unverified = getattr(sslobj, "get_unverified_chain", None)
    if unverified is not None:  # public from Python 3.13; present since 3.10
        return [bytes(c.public_bytes(ssl._ssl.ENCODING_DER)) for c in unverified() or []]  # type: ignore[attr-defined]
    leaf = sock.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _failed(lookup: Lookup) -> str:
    """Return how a lookup failed, for the account."""
    return "is bogus" if lookup.security is Security.BOGUS else "failed"


def _preference(record: str) -> int:
    """Return the preference of an MX record in presentation form."""
    return int(record.split()[0])


def _reply(error: smtplib.SMTPResponseException | smtplib.SMTPRecipientsRefused) -> tuple[int, str]:
    """Return the SMTP code and text of a refused command or recipients."""
    raw: bytes | str
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, raw = next(iter(error.recipients.values()), (0, b"no reply"))
    else:
        code, raw = error.smtp_code, error.smtp_error
    return code, raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def _deferred(
    account: list[str], why: str, attempts: tuple[tuple[str, int], ...] = ()
) -> SendReport:
    """Return a deferral with the whole account."""
    return SendReport(SendAction.DEFERRED, "; ".join([*account, why]), attempts)
