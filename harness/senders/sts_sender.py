"""The reference sender with RFC 8461 MTA-STS: each MX host is tried as the domain's policy says."""

from __future__ import annotations

import dataclasses
import ssl
from pathlib import Path

from harness.model import ReferenceSenderProfile, TlsMode
from harness.senders.base import SendReport, TestMessage
from harness.senders.reference import MovedOn, ReferenceSender, client_context
from harness.senders.sts_fetch import StsClient
from harness.senders.sts_policy import MxDecision, Requirement, decide
from lab.backends.base import RunningLab
from lab.spec import TlsVersion


class StsReferenceSender(ReferenceSender):
    """Delivers like ReferenceSender, but enforce-mode MTA-STS domains get authenticated TLS only.

    Enforce and a matched MX: TLS >= 1.2 with a certificate valid for the MX host (lab CA) or
    not to this MX; enforce and an unmatched MX: never to this MX; testing, none or no policy:
    the profile's own policy. When no MX host qualifies the profile's `on_policy_unmet` applies
    (the rfc-sender defers: RFC 8461 section 5 treats it as a temporary failure).
    """

    def __init__(
        self,
        profile: ReferenceSenderProfile,
        lab: RunningLab | None = None,
        outbox: Path = Path(),
        client: StsClient | None = None,
    ) -> None:
        """Drive `profile` in `lab`; look policies up with `client` (default: from the lab)."""
        super().__init__(profile, lab, outbox)
        if client is None and lab is not None:
            client = StsClient(lab.pki.ca_cert_path, lab.dns, lab.policy_host)
        self.client = client
        strict = profile.model_copy(
            update={"tls": TlsMode.REQUIRED, "verify": True, "min_version": _floor(profile)}
        )
        self.strict = ReferenceSender(strict)
        self.strict.helo = self.helo

    def _try_host(
        self,
        message: TestMessage,
        mx_host: str,
        address: tuple[str, int],
        context: ssl.SSLContext,
        attempts: list[tuple[str, int]],
        outbox: Path,
    ) -> SendReport:
        """Deliver to one MX host under the MTA-STS decision for it; say the decision."""
        decision = self.decision(message.rcpt.rpartition("@")[2], mx_host)
        if decision.requirement is Requirement.SKIP:
            raise MovedOn(decision.reason, unmet=True)
        if decision.requirement is Requirement.AUTHENTICATED:
            strict = client_context(self.strict.profile, self.ca_cert)
            try:
                report = self.strict._try_host(message, mx_host, address, strict, attempts, outbox)
            except MovedOn as moved:
                raise MovedOn(f"{decision.reason}: {moved}", unmet=True) from moved
        else:
            report = super()._try_host(message, mx_host, address, context, attempts, outbox)
        return dataclasses.replace(report, reason=f"{decision.reason}; {report.reason}")

    def decision(self, domain: str, mx_host: str) -> MxDecision:
        """Return the MTA-STS decision for one MX host of `domain`, with the policy's account."""
        assert self.client is not None, "a lab or a client is given to the constructor"
        lookup = self.client.lookup(domain)
        decided = decide(lookup, mx_host)
        seen = f"TXT {lookup.txt!r}" if lookup.txt else "no _mta-sts TXT"
        policy = " / ".join(lookup.policy_strings) or "no policy"
        account = f"[MTA-STS {domain}: {seen}; {lookup.reason}; {policy}] {decided.reason}"
        return dataclasses.replace(decided, reason=account)

    @property
    def ca_cert(self) -> Path:
        """Return the trust store policy hosts and MX hosts are checked against."""
        assert self.client is not None
        return self.client.ca_file


def _floor(profile: ReferenceSenderProfile) -> TlsVersion:
    """Return the TLS floor for authenticated delivery: TLS 1.2 or the profile's, if higher."""
    return max(profile.min_version, TlsVersion.TLS12, key=lambda version: version.rank)
