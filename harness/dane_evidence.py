"""What a sender could have known of a DANE receiver: MX, A and TLSA as the lab validated them."""

from __future__ import annotations

from harness.model import DaneEvidence
from lab.backends.base import RunningLab
from lab.endpoints import ReceiverEndpoint
from lab.spec import ReceiverSpec


def dane_evidence(lab: RunningLab, endpoint: ReceiverEndpoint) -> DaneEvidence | None:
    """Return the validated MX/A/TLSA of a receiver's domain (and unbound's view on docker)."""
    if lab.dns is None:
        return None
    from harness.senders.dnssec_resolver import Security, ValidatingResolver  # with the lab DNS

    validator = ValidatingResolver((lab.dns.host, lab.dns.port), lab.dns.trust_anchor)
    tlsa_name = f"_25._tcp.{endpoint.mx_host}"
    lookups = [
        validator.lookup(endpoint.domain, "MX"),
        validator.lookup(endpoint.mx_host, "A"),
        validator.lookup(tlsa_name, "TLSA"),
    ]
    tlsa = lookups[-1]
    resolver = ""
    if lab.dns.resolver is not None:
        resolver = f"unbound at {lab.dns.resolver}: {_resolver_view(lab.dns.resolver, tlsa_name)}"
    return DaneEvidence(
        lookups=tuple(found.as_text() for found in lookups),
        tlsa=tlsa.records if tlsa.security is Security.SECURE else (),
        tlsa_security=tlsa.security.value,
        resolver=resolver,
    )


def _resolver_view(address: str, name: str) -> str:
    """Return how the validating resolver answers the TLSA query: rcode, AD bit, records."""
    import dns.exception
    import dns.flags
    import dns.message
    import dns.query
    import dns.rcode

    query = dns.message.make_query(name, "TLSA", want_dnssec=True)
    query.flags |= dns.flags.AD
    try:
        reply = dns.query.udp(query, address, timeout=5)
    except (dns.exception.DNSException, OSError) as error:
        return f"TLSA {name}: no answer ({error})"
    ad = "AD" if reply.flags & dns.flags.AD else "no AD"
    count = sum(len(r) for r in reply.answer if r.rdtype == 52)
    return f"TLSA {name}: {dns.rcode.to_text(reply.rcode())}, {ad}, {count} TLSA records"


def dane_published(spec: ReceiverSpec) -> bool:
    """Return True for a receiver whose TLSA is published in a zone with a DS (a DANE policy)."""
    if spec.dane is None:
        return False
    from lab.dns_zones import SIGNED_PARENT  # dnspython: only for a receiver with DANE

    return spec.dane.signing in SIGNED_PARENT
