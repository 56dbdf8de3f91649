"""The lab zones: `lab.test` signed, a subzone per DANE receiver; written to and read from disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.zone
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lab.dane_spec import DaneSpec, TlsaRecord, TlsaSubject, ZoneSigning
from lab.dns_signing import ZoneKey, corrupt_signature, ds_text, expire_signature, new_key, sign
from lab.spec import LAB_ZONE, ReceiverSpec

TTL = 60
NS_HOST = f"ns.{LAB_ZONE}"
SERVFAIL_FILE = "servfail.json"
TRUST_ANCHOR_FILE = "trust-anchor.json"
SIGNED_PARENT = (ZoneSigning.SIGNED, ZoneSigning.BOGUS_TLSA, ZoneSigning.EXPIRED_TLSA_RRSIG)
# an unrelated SubjectPublicKeyInfo digest for TlsaSubject.OTHER: matches nothing the lab presents
OTHER_SPKI = hashlib.sha256(b"sender-tls-lab: no certificate has this key").digest()


@dataclasses.dataclass(frozen=True)
class TrustAnchor:
    """The lab's DNSSEC trust anchor: the `lab.test` key as DNSKEY and as DS record data."""

    zone: str
    dnskey: str
    ds: str

    def dnskey_rdata(self) -> dns.rdtypes.ANY.DNSKEY.DNSKEY:
        """Return the anchor as a DNSKEY rdata."""
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, self.dnskey)
        assert isinstance(rdata, dns.rdtypes.ANY.DNSKEY.DNSKEY)
        return rdata

    def unbound_line(self) -> str:
        """Return the anchor as unbound's `trust-anchor:` value."""
        return f'"{self.zone}. DS {self.ds}"'


@dataclasses.dataclass(frozen=True)
class ZoneSet:
    """What the lab DNS serves: its zones, the (name, type) pairs it fails, the trust anchor."""

    zones: tuple[dns.zone.Zone, ...]
    servfail: frozenset[tuple[str, str]]
    trust_anchor: TrustAnchor

    def write(self, folder: Path) -> None:
        """Write one master file per zone, the SERVFAIL list and the trust anchor into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        for zone in self.zones:
            assert zone.origin is not None
            zone.to_file(str(folder / f"{zone.origin.to_text(omit_final_dot=True)}.zone"))
        (folder / SERVFAIL_FILE).write_text(json.dumps(sorted(self.servfail)) + "\n")
        anchor = dataclasses.asdict(self.trust_anchor)
        partial = folder / f".{TRUST_ANCHOR_FILE}.partial"  # written last, renamed: complete
        partial.write_text(json.dumps(anchor) + "\n")
        partial.replace(folder / TRUST_ANCHOR_FILE)

    @classmethod
    def read(cls, folder: Path) -> ZoneSet:
        """Read a folder written by `write`; raise ValueError naming the file that is wrong."""
        zones = []
        for path in sorted(folder.glob("*.zone")):
            try:
                zones.append(dns.zone.from_file(str(path), origin=path.stem, relativize=False))
            except Exception as error:
                raise ValueError(f"{path}: not a zone master file: {error}") from None
        try:
            servfail = json.loads((folder / SERVFAIL_FILE).read_text())
            anchor = TrustAnchor(**json.loads((folder / TRUST_ANCHOR_FILE).read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(
                f"{folder}: no readable {SERVFAIL_FILE} / {TRUST_ANCHOR_FILE}: {error}"
            ) from None
        pairs = frozenset((str(name), str(rdtype)) for name, rdtype in servfail)
        return cls(tuple(zones), pairs, anchor)


def tlsa_data(record: TlsaRecord, leaf_pem: bytes, ca_pem: bytes) -> str:
    """Return a TLSA record's presentation text, its data computed from leaf, CA or nothing."""
    if record.of is TlsaSubject.OTHER:
        data = OTHER_SPKI if record.matching else OTHER_SPKI * 2
        if record.matching == 2:
            data = hashlib.sha512(OTHER_SPKI).digest()
    else:
        cert = x509.load_pem_x509_certificate(leaf_pem if record.of is TlsaSubject.LEAF else ca_pem)
        data = tlsa_association(cert, record.selector, record.matching)
    return f"{record.usage} {record.selector} {record.matching} {data.hex()}"


def tlsa_association(cert: x509.Certificate, selector: int, matching: int) -> bytes:
    """Return the association data (RFC 6698 section 2.1) of `cert` for selector and matching."""
    if selector == 0:
        content = cert.public_bytes(serialization.Encoding.DER)
    else:
        content = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    if matching == 1:
        return hashlib.sha256(content).digest()
    if matching == 2:
        return hashlib.sha512(content).digest()
    return content


class _Builder:
    """Collects records per zone origin, then signs each zone as its spec says."""

    def __init__(self) -> None:
        """Start with the empty lab zone."""
        self.records: dict[str, list[tuple[str, str, str]]] = {LAB_ZONE: []}

    def add(self, zone: str, owner: str, rdtype: str, text: str) -> None:
        """Add one record to a zone."""
        self.records.setdefault(zone, []).append((owner, rdtype, text))

    def zone(self, origin: str) -> dns.zone.Zone:
        """Return the unsigned zone with SOA, NS and the collected records."""
        zone = dns.zone.Zone(dns.name.from_text(origin), relativize=False)
        apex = f"{origin}."
        lines = [
            (apex, "SOA", f"{NS_HOST}. hostmaster.{LAB_ZONE}. 1 3600 600 86400 {TTL}"),
            (apex, "NS", f"{NS_HOST}."),
            *((f"{owner}.", rdtype, text) for owner, rdtype, text in self.records[origin]),
        ]
        with zone.writer() as txn:
            for owner, rdtype, text in lines:
                rdata = dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)
                txn.add(dns.name.from_text(owner), TTL, rdata)
        return zone


def build_zones(
    specs: Sequence[ReceiverSpec],
    addresses: Mapping[str, str],
    ns_address: str,
    certs: Mapping[str, bytes],
    ca_pem: bytes,
    now: float | None = None,
) -> ZoneSet:
    """Return the lab zones for these receivers.

    `addresses` maps every MX host to its IPv4 address, `certs` each DANE receiver id to its leaf
    PEM. Receivers without `dane` live in `lab.test`; each DANE receiver gets its own delegated
    subzone `<id>.lab.test`, signed (or not, or broken) as its `dane.signing` says.
    """
    builder = _Builder()
    builder.add(LAB_ZONE, NS_HOST, "A", ns_address)
    servfail: set[tuple[str, str]] = set()
    dane: dict[str, DaneSpec] = {}
    for spec in specs:
        origin = spec.domain if spec.dane is not None else LAB_ZONE
        for route in spec.mx_routes:
            builder.add(origin, spec.domain, "MX", f"{route.preference} {route.host}.")
            builder.add(origin, route.host, "A", addresses[route.host])
        if spec.dane is None:
            continue
        dane[spec.domain] = spec.dane
        builder.add(LAB_ZONE, spec.domain, "NS", f"{NS_HOST}.")
        owner = f"_25._tcp.{spec.mx_host}"
        for record in spec.dane.tlsa:
            builder.add(origin, owner, "TLSA", tlsa_data(record, certs[spec.id], ca_pem))
        if spec.dane.tlsa_servfail:
            servfail.add((f"{owner}.", "TLSA"))
    children = []
    for origin, state in dane.items():
        zone = builder.zone(origin)
        if state.signing is not ZoneSigning.UNSIGNED:
            key = new_key()
            sign(zone, key, now)
            _break(zone, state, key, now)
            if state.signing in SIGNED_PARENT:
                builder.add(LAB_ZONE, origin, "DS", ds_text(dns.name.from_text(origin), key))
        children.append(zone)
    parent, parent_key = builder.zone(LAB_ZONE), new_key()
    sign(parent, parent_key, now)
    anchor = TrustAnchor(
        LAB_ZONE, parent_key.dnskey.to_text(), ds_text(dns.name.from_text(LAB_ZONE), parent_key)
    )
    return ZoneSet((parent, *children), frozenset(servfail), anchor)


def _break(zone: dns.zone.Zone, state: DaneSpec, key: ZoneKey, now: float | None) -> None:
    """Apply a signing defect to the zone's TLSA RRsets."""
    for name, node in zone.nodes.items():
        if node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.TLSA) is None:
            continue
        if state.signing is ZoneSigning.BOGUS_TLSA:
            corrupt_signature(zone, name, dns.rdatatype.TLSA)
        elif state.signing is ZoneSigning.EXPIRED_TLSA_RRSIG:
            expire_signature(zone, name, dns.rdatatype.TLSA, key, now)


@dataclasses.dataclass(frozen=True)
class LabDns:
    """A running lab DNS: where it answers, the trust anchor, and the folder of its zones."""

    host: str
    port: int
    trust_anchor: TrustAnchor
    zones_dir: Path
    resolver: str | None = None  # the validating resolver's address (docker), port 53
