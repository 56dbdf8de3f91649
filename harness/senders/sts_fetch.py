"""MTA-STS discovery and fetch (RFC 8461 3.1, 3.3, 5.1): TXT via dnspython, HTTPS, a cache by id.

The fetch is a real HTTPS GET of `https://mta-sts.<domain>/.well-known/mta-sts.txt`: the
certificate must chain to the trust store and name the policy host; only 200 counts (a redirect
is not followed), the media type must be text/plain, the body at most MAX_POLICY_BYTES, the
whole exchange within FETCH_TIMEOUT seconds.
"""

from __future__ import annotations

import dataclasses
import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from harness.senders.sts_policy import (
    StsLookup,
    StsPolicy,
    StsPolicyError,
    parse_policy,
    parse_txt,
)
from lab.sts_spec import POLICY_PATH, policy_host

FETCH_TIMEOUT = 10.0  # RFC 8461 3.3 suggests a minute; the lab answers in milliseconds
MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 3.3: senders may limit the policy to 64 KiB
DNS_TIMEOUT = 5.0
HTTPS_PORT = 443


class StsFetchError(Exception):
    """The policy could not be fetched (the reason is the message)."""


@dataclasses.dataclass(frozen=True)
class _Cached:
    """A policy in the cache: the TXT id it came with and when it expires."""

    policy_id: str
    policy: StsPolicy
    expires: float


class StsClient:
    """Looks up a domain's MTA-STS policy through a DNS server and the domain's policy host.

    `dns_server` None uses the system resolver; `https_route` None connects to the policy host's
    A record on port 443 (otherwise every policy host is reached at that address and port).
    """

    def __init__(
        self,
        ca_file: Path,
        dns_server: tuple[str, int] | None = None,
        https_route: tuple[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Trust `ca_file` for policy hosts; query `dns_server`; connect via `https_route`."""
        self.ca_file, self.dns_server, self.https_route = ca_file, dns_server, https_route
        self.clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def lookup(self, domain: str) -> StsLookup:
        """Return the policy the sender applies to `domain` (RFC 8461 3 and 5.1); never raises."""
        domain = domain.lower().rstrip(".")
        try:
            records = self.txt(f"_mta-sts.{domain}")
        except StsFetchError as error:
            return self._from_cache(domain, None, None, f"TXT lookup failed: {error}")
        record, policy_id = parse_txt(records)
        if record is None:
            return self._from_cache(domain, None, None, "no single v=STSv1 TXT record")
        if policy_id is None:
            return self._from_cache(domain, record, None, "the TXT record has no valid id")
        with self._lock:
            cached = self._cache.get(domain)
        if cached and cached.policy_id == policy_id and cached.expires > self.clock():
            return StsLookup(domain, record, policy_id, cached.policy, "cached policy", True)
        try:
            policy = parse_policy(self.fetch(domain))
        except (StsFetchError, StsPolicyError) as error:
            return self._from_cache(domain, record, policy_id, f"policy not usable: {error}")
        with self._lock:
            self._cache[domain] = _Cached(policy_id, policy, self.clock() + policy.max_age)
        return StsLookup(domain, record, policy_id, policy, f"fetched from {policy_host(domain)}")

    def _from_cache(
        self, domain: str, record: str | None, policy_id: str | None, why: str
    ) -> StsLookup:
        """Return a still valid cached policy (RFC 8461 5.1), else no policy, saying why."""
        with self._lock:
            cached = self._cache.get(domain)
        if cached is not None and cached.expires > self.clock():
            return StsLookup(
                domain, record, policy_id, cached.policy, f"{why}; cached policy", True
            )
        return StsLookup(domain, record, policy_id, None, why)

    def txt(self, owner: str) -> list[str]:
        """Return the TXT strings at `owner` ([] for NXDOMAIN or no TXT); StsFetchError else."""
        try:
            if self.dns_server is None:
                answer = dns.resolver.resolve(owner, "TXT", lifetime=DNS_TIMEOUT)
                return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
            address, port = self.dns_server
            query = dns.message.make_query(owner, dns.rdatatype.TXT)
            response = dns.query.udp(query, address, port=port, timeout=DNS_TIMEOUT)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as error:
            raise StsFetchError(f"{owner}: {error}") from None
        if response.rcode() == dns.rcode.NXDOMAIN:
            return []
        if response.rcode() != dns.rcode.NOERROR:
            raise StsFetchError(f"{owner}: {dns.rcode.to_text(response.rcode())}")
        return [
            b"".join(r.strings).decode("utf-8", "replace")
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.TXT
            for r in rrset
        ]

    def _address(self, host: str) -> tuple[str, int]:
        """Return where to connect for `host`: the route, or its A record and port 443."""
        if self.https_route is not None:
            return self.https_route
        if self.dns_server is None:
            return socket.gethostbyname(host), HTTPS_PORT
        query = dns.message.make_query(host, dns.rdatatype.A)
        address, port = self.dns_server
        response = dns.query.udp(query, address, port=port, timeout=DNS_TIMEOUT)
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.A:
                return str(rrset[0].address), HTTPS_PORT
        raise StsFetchError(f"{host} has no A record")

    def fetch(self, domain: str) -> str:
        """GET the domain's policy over HTTPS; return its text or raise StsFetchError."""
        host = policy_host(domain)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        deadline = time.monotonic() + FETCH_TIMEOUT
        try:
            address = self._address(host)
            with (
                socket.create_connection(address, timeout=FETCH_TIMEOUT) as raw,
                context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                request = f"GET {POLICY_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                tls.sendall(request.encode("ascii"))
                response = http.client.HTTPResponse(tls)
                try:
                    response.begin()
                    return _policy_body(response, deadline)
                finally:
                    response.close()
        except ssl.SSLCertVerificationError as error:
            raise StsFetchError(f"{host}: certificate not valid: {error.verify_message}") from None
        except (OSError, http.client.HTTPException, dns.exception.DNSException) as error:
            raise StsFetchError(f"{host}: {error or type(error).__name__}") from None


def _policy_body(response: http.client.HTTPResponse, deadline: float) -> str:
    """Return the body of a 200 text/plain response within the limits; raise StsFetchError."""
    if response.status != 200:
        where = response.getheader("Location")
        moved = f" to {where} (redirects are not followed)" if where else ""
        raise StsFetchError(f"HTTP {response.status}{moved}")
    media = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
    if media != "text/plain":
        raise StsFetchError(f"Content-Type {media or 'missing'!r}, not text/plain")
    body = response.read(MAX_POLICY_BYTES + 1)
    if len(body) > MAX_POLICY_BYTES:
        raise StsFetchError(f"policy larger than {MAX_POLICY_BYTES} bytes")
    if time.monotonic() > deadline:
        raise StsFetchError(f"fetch took longer than {FETCH_TIMEOUT:.0f} s")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise StsFetchError("policy is not UTF-8") from None
