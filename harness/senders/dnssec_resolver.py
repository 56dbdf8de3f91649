"""A validating stub resolver (dnspython): DNSSEC from the lab trust anchor down, per RFC 4035."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import time

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from lab.dns_zones import TrustAnchor

TIMEOUT = 3.0
MAX_CNAMES = 8


class Security(enum.StrEnum):
    """What validation concluded about an answer (RFC 4035 section 4.3), or that it failed."""

    SECURE = "secure"
    INSECURE = "insecure"
    BOGUS = "bogus"
    FAILED = "failed"  # no usable answer: SERVFAIL, REFUSED, timeout


@dataclasses.dataclass(frozen=True)
class Lookup:
    """One validated lookup: status, rcode, records (presentation form) and why."""

    name: str
    rdtype: str
    security: Security
    rcode: str
    records: tuple[str, ...]
    reason: str

    def as_text(self) -> str:
        """Return the lookup on one line, as the sender's account shows it."""
        found = ", ".join(self.records) if self.records else "no records"
        state = f"{self.security.value} ({self.rcode}; {found}; {self.reason})"
        return f"{self.name} {self.rdtype}: {state}"


class _Fail(Exception):
    """A lookup cannot go on; the security and reason are the arguments."""

    def __init__(self, security: Security, reason: str) -> None:
        """Keep the verdict and why."""
        super().__init__(reason)
        self.security, self.reason = security, reason


Keys = dict[dns.name.Name, dns.rrset.RRset]


class ValidatingResolver:
    """Asks one authoritative server (the lab DNS) and validates from the trust anchor down."""

    def __init__(self, server: tuple[str, int], anchor: TrustAnchor) -> None:
        """Query `server` (address, port); trust only `anchor`."""
        self.server, self.anchor = server, anchor
        self.anchor_zone = dns.name.from_text(anchor.zone)

    def lookup(self, name: str, rdtype: str) -> Lookup:
        """Return the validated answer for (name, rdtype); never raises for DNS failures."""
        qname, qtype = dns.name.from_text(name), dns.rdatatype.from_text(rdtype)
        try:
            return self._lookup(qname, qtype, MAX_CNAMES)
        except _Fail as fail:
            return Lookup(name.rstrip("."), rdtype, fail.security, "-", (), fail.reason)

    def _lookup(self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType, hops: int) -> Lookup:
        """Find the zone of qname with its validated keys (or an insecure cut), then ask."""
        if not qname.is_subdomain(self.anchor_zone):
            raise _Fail(Security.INSECURE, f"outside the trust anchor {self.anchor.zone}")
        zone, keys = self.anchor_zone, self._anchor_keys()
        insecure_at: dns.name.Name | None = None
        for depth in range(len(zone) + 1, len(qname) + 1):
            below = qname.split(depth)[1]
            step = self._step(zone, keys, below)
            if step is None:
                continue
            if isinstance(step, dns.name.Name):
                insecure_at = step
                break
            zone, keys = below, step
        response = self._ask(qname, qtype)
        text_name, text_type = qname.to_text(omit_final_dot=True), dns.rdatatype.to_text(qtype)
        rcode = dns.rcode.to_text(response.rcode())
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise _Fail(Security.FAILED, f"the server answered {rcode}")
        answer = _section_rrset(response.answer, qname, qtype)
        cname = _section_rrset(response.answer, qname, dns.rdatatype.CNAME)
        found = answer or cname
        if insecure_at is not None:
            security, why = Security.INSECURE, f"unsigned delegation at {insecure_at}"
        elif found is not None:
            self._validate(response.answer, found, zone, keys)
            security, why = Security.SECURE, f"signed by {zone}"
        else:
            self._validate_denial(response, qname, qtype, zone, keys)
            security, why = Security.SECURE, f"denial of existence signed by {zone}"
        if answer is None and cname is not None and hops > 0:
            target = dns.name.from_text(cname[0].to_text())
            chased = self._lookup(target, qtype, hops - 1)
            worst = security if chased.security is Security.SECURE else chased.security
            return dataclasses.replace(chased, security=worst, reason=f"via CNAME: {chased.reason}")
        records = tuple(r.to_text() for r in answer) if answer is not None else ()
        return Lookup(text_name, text_type, security, rcode, records, why)

    def _anchor_keys(self) -> Keys:
        """Return the anchor zone's DNSKEY RRset, validated against the trust anchor."""
        anchor = self.anchor.dnskey_rdata()
        ds = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DS, self.anchor.ds)
        return self._zone_keys(self.anchor_zone, [anchor], [ds])

    def _zone_keys(
        self, zone: dns.name.Name, trusted: list[dns.rdata.Rdata], ds: list[dns.rdata.Rdata]
    ) -> Keys:
        """Fetch zone's DNSKEYs; accept them when a key matching a DS (or trusted) signed them."""
        response = self._ask(zone, dns.rdatatype.DNSKEY)
        if response.rcode() != dns.rcode.NOERROR:
            raise _Fail(Security.FAILED, f"DNSKEY {zone}: {dns.rcode.to_text(response.rcode())}")
        dnskeys = _section_rrset(response.answer, zone, dns.rdatatype.DNSKEY)
        if dnskeys is None:
            raise _Fail(Security.BOGUS, f"{zone} has a DS but serves no DNSKEY")
        matching = [
            key for key in dnskeys
            if key in trusted or any(_ds_matches(zone, key, d) for d in ds)
        ]  # fmt: skip
        if not matching:
            raise _Fail(Security.BOGUS, f"no DNSKEY of {zone} matches its DS")
        entry = dns.rrset.from_rdata_list(zone, dnskeys.ttl, matching)
        self._validate(response.answer, dnskeys, zone, {zone: entry})
        return {zone: dnskeys}

    def _step(
        self, zone: dns.name.Name, keys: Keys, name: dns.name.Name
    ) -> Keys | dns.name.Name | None:
        """Check for a zone cut at `name`: its keys (secure), `name` (insecure) or None (no cut)."""
        response = self._ask(name, dns.rdatatype.DS)
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise _Fail(Security.FAILED, f"DS {name}: {dns.rcode.to_text(response.rcode())}")
        ds = _section_rrset(response.answer, name, dns.rdatatype.DS)
        if ds is not None:
            self._validate(response.answer, ds, zone, keys)
            return self._zone_keys(name, [], list(ds))
        for nsec in self._signed_nsecs(response, zone, keys):
            if nsec.name == name:
                types = _nsec_types(nsec)
                if "DS" in types:
                    raise _Fail(Security.BOGUS, f"NSEC at {name} lists DS, but none was sent")
                return name if "NS" in types and "SOA" not in types else None
            if _covers(nsec, name):
                return None
        raise _Fail(Security.BOGUS, f"no signed proof that {name} has no DS (in {zone})")

    def _validate_denial(
        self,
        response: dns.message.Message,
        qname: dns.name.Name,
        qtype: dns.rdatatype.RdataType,
        zone: dns.name.Name,
        keys: Keys,
    ) -> None:
        """Accept a NODATA / NXDOMAIN only with signed NSEC records that prove it."""
        nsecs = self._signed_nsecs(response, zone, keys)
        wanted = dns.rdatatype.to_text(qtype)
        if response.rcode() == dns.rcode.NOERROR:
            if any(n.name == qname and {wanted, "CNAME"}.isdisjoint(_nsec_types(n)) for n in nsecs):
                return
            if any(_covers(n, qname) for n in nsecs):  # an empty non-terminal
                return
            raise _Fail(Security.BOGUS, f"no signed NSEC proves {qname} has no {wanted}")
        covering = [n for n in nsecs if _covers(n, qname)]
        if not covering:
            raise _Fail(Security.BOGUS, f"no signed NSEC proves {qname} does not exist")
        encloser = _closest_encloser(covering[0], qname)
        wildcard = dns.name.from_text("*", encloser)
        if not any(_covers(n, wildcard) for n in nsecs):
            raise _Fail(Security.BOGUS, f"no signed NSEC denies the wildcard {wildcard}")

    def _signed_nsecs(
        self, response: dns.message.Message, zone: dns.name.Name, keys: Keys
    ) -> list[dns.rrset.RRset]:
        """Return the NSEC RRsets of the authority section whose signatures validate."""
        valid = []
        for rrset in response.authority:
            if rrset.rdtype != dns.rdatatype.NSEC:
                continue
            try:
                self._validate(response.authority, rrset, zone, keys)
            except _Fail:
                continue
            valid.append(rrset)
        return valid

    def _validate(
        self,
        section: list[dns.rrset.RRset],
        rrset: dns.rrset.RRset,
        zone: dns.name.Name,
        keys: Keys,
    ) -> None:
        """Raise _Fail(BOGUS) unless an RRSIG in `section` made by `zone`'s keys validates rrset."""
        sigs = [
            s for s in section
            if s.rdtype == dns.rdatatype.RRSIG and s.covers == rrset.rdtype and s.name == rrset.name
        ]  # fmt: skip
        if not sigs:
            raise _Fail(
                Security.BOGUS,
                f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} has no RRSIG in signed {zone}",
            )
        try:
            dns.dnssec.validate(rrset, sigs[0], dict(keys))
        except dns.exception.ValidationFailure as failure:
            kind = dns.rdatatype.to_text(rrset.rdtype)
            raise _Fail(
                Security.BOGUS, f"{rrset.name} {kind}: {_explain(sigs[0], failure)}"
            ) from None

    def _ask(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        """Send one DO query (UDP, TCP when truncated); raise _Fail(FAILED) on no answer."""
        query = dns.message.make_query(name, rdtype, want_dnssec=True, payload=1232)
        query.flags &= ~dns.flags.RD
        host, port = self.server
        try:
            response, _ = dns.query.udp_with_fallback(query, host, timeout=TIMEOUT, port=port)
        except (dns.exception.DNSException, OSError) as error:
            raise _Fail(
                Security.FAILED, f"no answer from {host}:{port} for {name}: {error}"
            ) from None
        return response


def _section_rrset(
    section: list[dns.rrset.RRset], name: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> dns.rrset.RRset | None:
    """Return the RRset (name, rdtype) of a message section, or None."""
    for rrset in section:
        if rrset.name == name and rrset.rdtype == rdtype:
            return rrset
    return None


def _ds_matches(zone: dns.name.Name, key: dns.rdata.Rdata, ds: dns.rdata.Rdata) -> bool:
    """Return True when the DS record is a digest of this DNSKEY."""
    digest = getattr(ds, "digest_type", 2)
    try:
        return bool(dns.dnssec.make_ds(zone, key, digest) == ds)  # type: ignore[arg-type]
    except (dns.exception.DNSException, ValueError):
        return False


def _nsec_types(nsec: dns.rrset.RRset) -> set[str]:
    """Return the type names in an NSEC record's bitmap."""
    return set(nsec[0].to_text().split()[1:])


def _next_name(nsec: dns.rrset.RRset) -> dns.name.Name:
    """Return the NSEC record's next owner name."""
    return dns.name.from_text(nsec[0].to_text().split()[0])


def _covers(nsec: dns.rrset.RRset, name: dns.name.Name) -> bool:
    """Return True when `name` lies strictly between the NSEC owner and its next name."""
    owner, following = nsec.name, _next_name(nsec)
    if owner < following:
        return bool(owner < name < following)
    return bool(name > owner or name < following)  # the last NSEC wraps around to the apex


def _closest_encloser(nsec: dns.rrset.RRset, qname: dns.name.Name) -> dns.name.Name:
    """Return the closest encloser of a non-existent qname from the NSEC that covers it."""
    best = dns.name.root
    for other in (nsec.name, _next_name(nsec)):
        common = qname.fullcompare(other)[2]
        if common > len(best):
            best = qname.split(common)[1]
    return best


def _explain(rrsig: dns.rrset.RRset, failure: Exception) -> str:
    """Return why validation failed: an expired or not yet valid RRSIG, else a bad signature."""
    sig, now = rrsig[0], time.time()
    expiration, inception = getattr(sig, "expiration", now), getattr(sig, "inception", now)
    if expiration < now:
        return f"its RRSIG expired at {_utc(expiration)} ({failure})"
    if inception > now:
        return f"its RRSIG is valid only from {_utc(inception)} ({failure})"
    return f"its RRSIG does not verify with the zone's DNSKEY ({failure})"


def _utc(stamp: float) -> str:
    """Return a POSIX time as ISO 8601 UTC."""
    return datetime.datetime.fromtimestamp(stamp, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
