"""The rfc-sender's MTA-STS source: RFC 8461 discovery and fetch from the lab, per MX host."""

from __future__ import annotations

import threading

from harness.senders.rfc import StsRequirement
from harness.senders.sts_fetch import StsClient
from harness.senders.sts_policy import StsLookup, decide, mx_matches
from lab.backends.base import RunningLab


class LabStsSource:
    """Looks policies up with an StsClient (cache by id); says what was seen, for the account."""

    def __init__(self, client: StsClient) -> None:
        """Look policies up with `client`."""
        self.client = client
        self._seen: dict[str, StsLookup] = {}  # the last lookup per domain, for the account
        self._lock = threading.Lock()

    @classmethod
    def of_lab(cls, lab: RunningLab) -> LabStsSource:
        """Return the source for a lab: its DNS, its policy host and the lab CA as trust store."""
        assert lab.dns is not None, "the registry opens the rfc-sender only with the lab DNS"
        dns_server = (lab.dns.host, lab.dns.port)
        return cls(StsClient(lab.pki.ca_cert_path, dns_server, lab.policy_host))

    def requirement(self, domain: str, mx_host: str) -> StsRequirement | None:
        """Return what the domain's policy requires of `mx_host`; None when it has no policy."""
        lookup = self.client.lookup(domain)
        with self._lock:
            self._seen[lookup.domain] = lookup
        if lookup.policy is None:
            return None
        policy = lookup.policy
        matched = any(mx_matches(pattern, mx_host) for pattern in policy.mx)
        return StsRequirement(policy.mode.value, matched, "\n".join(policy.lines))

    def account(self, domain: str, mx_host: str) -> str:
        """Return which policy applied to `mx_host` and why: TXT seen, fetch, policy, decision."""
        key = domain.lower().rstrip(".")
        with self._lock:
            lookup = self._seen.get(key)
        if lookup is None:
            lookup = self.client.lookup(domain)
        seen = f"TXT {lookup.txt!r}" if lookup.txt else "no _mta-sts TXT"
        policy = " / ".join(lookup.policy_strings) or "no policy"
        return (
            f"[MTA-STS {key}: {seen}; {lookup.reason}; {policy}] {decide(lookup, mx_host).reason}"
        )
