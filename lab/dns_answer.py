"""Authoritative answers from several (signed) zones: delegations, DS at the parent, NSEC proofs."""

from __future__ import annotations

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.zone

from lab.dns_zones import ZoneSet

IN = dns.rdataclass.IN
UDP_DEFAULT = 512  # the largest UDP answer to a query without EDNS (RFC 1035)


class ZoneServer:
    """Answers queries from a ZoneSet like an authoritative server hosting every zone in it."""

    def __init__(self, zones: ZoneSet) -> None:
        """Serve these zones; SERVFAIL to the (name, type) pairs the set lists."""
        self.zones = sorted(zones.zones, key=lambda z: len(origin_of(z)), reverse=True)
        self.servfail = {
            (dns.name.from_text(n), dns.rdatatype.from_text(t)) for n, t in zones.servfail
        }

    def answer(self, wire: bytes, max_size: int = 65_535) -> bytes | None:
        """Return the wire-format answer to a query, or None for undecodable input.

        `max_size` is the transport's limit (UDP: the query's EDNS size or 512); a larger answer
        is sent empty with TC set, so the client asks again over TCP.
        """
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        response = dns.message.make_response(query)
        response.flags &= ~dns.flags.RA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        self._fill(response, question.name, question.rdtype, bool(query.ednsflags & dns.flags.DO))
        limit = min(max_size, query.payload if query.edns >= 0 else UDP_DEFAULT)
        try:
            return response.to_wire(max_size=max(limit, UDP_DEFAULT))
        except dns.exception.TooBig:
            truncated = dns.message.make_response(query)
            truncated.flags |= dns.flags.TC
            truncated.flags &= ~dns.flags.RA
            return truncated.to_wire()

    def _zone_for(
        self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
    ) -> dns.zone.Zone | None:
        """Return the most specific zone for the question (DS: the parent of a zone apex)."""
        for zone in self.zones:
            if not name.is_subdomain(origin_of(zone)):
                continue
            if rdtype == dns.rdatatype.DS and name == origin_of(zone) and self._has_parent(zone):
                continue
            return zone
        return None

    def _has_parent(self, child: dns.zone.Zone) -> bool:
        """Return True when another served zone contains this zone's apex."""
        return any(
            z is not child and origin_of(child).is_subdomain(origin_of(z)) for z in self.zones
        )

    def _fill(
        self,
        response: dns.message.Message,
        name: dns.name.Name,
        rdtype: dns.rdatatype.RdataType,
        dnssec: bool,
    ) -> None:
        """Put the answer, authority and rcode for one question into `response`."""
        zone = self._zone_for(name, rdtype)
        if zone is None:
            response.set_rcode(dns.rcode.REFUSED)
            return
        if (name, rdtype) in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return
        cut = _delegation(zone, name, rdtype)
        if cut is not None:  # a referral: NS of the child, and its DS or the NSEC proving none
            response.authority.append(_rrset(zone, cut, dns.rdatatype.NS))
            if dnssec:
                proof = (
                    dns.rdatatype.DS if _find(zone, cut, dns.rdatatype.DS) else dns.rdatatype.NSEC
                )
                _add_signed(response.authority, zone, cut, proof)
            return
        response.flags |= dns.flags.AA
        node = zone.get_node(name)
        if node is not None:
            for wanted in (rdtype, dns.rdatatype.CNAME):
                if _find(zone, name, wanted) is not None:
                    _add_signed(response.answer, zone, name, wanted, dnssec)
                    return
        _add_signed(response.authority, zone, origin_of(zone), dns.rdatatype.SOA, dnssec)
        exists = node is not None or _has_descendant(zone, name)
        if not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        if not dnssec or _find(zone, origin_of(zone), dns.rdatatype.NSEC) is None:
            return
        if node is not None:
            _add_signed(response.authority, zone, name, dns.rdatatype.NSEC)
            return
        proofs = [_covering(zone, name)]
        if not exists:
            proofs.append(_covering(zone, dns.name.from_text("*", _closest_encloser(zone, name))))
        for owner in dict.fromkeys(proofs):
            _add_signed(response.authority, zone, owner, dns.rdatatype.NSEC)


def origin_of(zone: dns.zone.Zone) -> dns.name.Name:
    """Return a zone's origin (every served zone has one)."""
    assert zone.origin is not None
    return zone.origin


def _find(
    zone: dns.zone.Zone, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rdataset.Rdataset | None:
    """Return the rdataset (name, rdtype) of the zone, or None."""
    return zone.get_rdataset(name, rdtype)


def _rrset(
    zone: dns.zone.Zone,
    name: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    covers: dns.rdatatype.RdataType = dns.rdatatype.NONE,
) -> dns.rrset.RRset:
    """Return (name, rdtype) of the zone as an RRset."""
    rdataset = zone.find_rdataset(name, rdtype, covers)
    return dns.rrset.from_rdata_list(name, rdataset.ttl, list(rdataset))


def _add_signed(
    section: list[dns.rrset.RRset],
    zone: dns.zone.Zone,
    name: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    dnssec: bool = True,
) -> None:
    """Append (name, rdtype) and, when asked for DNSSEC, the RRSIGs covering it."""
    section.append(_rrset(zone, name, rdtype))
    if dnssec and zone.get_rdataset(name, dns.rdatatype.RRSIG, rdtype) is not None:
        section.append(_rrset(zone, name, dns.rdatatype.RRSIG, rdtype))


def _delegation(
    zone: dns.zone.Zone, name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.name.Name | None:
    """Return the zone cut at or above `name` below the apex (DS at the cut is the parent's)."""
    candidate = name
    while candidate != origin_of(zone) and candidate.is_subdomain(origin_of(zone)):
        if _find(zone, candidate, dns.rdatatype.NS) is not None:
            if candidate == name and rdtype == dns.rdatatype.DS:
                return None
            return candidate
        candidate = candidate.parent()
    return None


def _has_descendant(zone: dns.zone.Zone, name: dns.name.Name) -> bool:
    """Return True when `name` is an empty non-terminal: some owner lies below it."""
    return any(owner != name and owner.is_subdomain(name) for owner in zone.nodes)


def _closest_encloser(zone: dns.zone.Zone, name: dns.name.Name) -> dns.name.Name:
    """Return the longest existing ancestor of `name` in the zone."""
    candidate = name.parent()
    while candidate != origin_of(zone):
        if zone.get_node(candidate) is not None or _has_descendant(zone, candidate):
            return candidate
        candidate = candidate.parent()
    return origin_of(zone)


def _covering(zone: dns.zone.Zone, name: dns.name.Name) -> dns.name.Name:
    """Return the owner of the NSEC record whose span covers `name` (canonical order)."""
    owners = sorted(n for n in zone.nodes if zone.get_rdataset(n, dns.rdatatype.NSEC) is not None)
    best = owners[-1]  # the last NSEC wraps around to the apex
    for owner in owners:
        if owner < name:
            best = owner
    return best
