"""DNSSEC for the lab zones: one ECDSA P-256 key per zone, dnspython's signer, and the defects."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import dns.dnssec
import dns.dnssectypes
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.RRSIG
import dns.rrset
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM = dns.dnssectypes.Algorithm.ECDSAP256SHA256
KEY_FLAGS = 257  # ZONE + SEP: one combined signing key per zone
SIGNATURE_LIFETIME = 14 * 86_400  # seconds a signature made now stays valid
INCEPTION_SKEW = 3_600  # signatures start an hour early, so clock skew does not make them bogus
EXPIRED_WINDOW = (10 * 86_400, 86_400)  # an expired signature: made 10 days ago, ended 1 day ago


@dataclasses.dataclass(frozen=True)
class ZoneKey:
    """A zone's signing key and its DNSKEY record."""

    private: ec.EllipticCurvePrivateKey
    dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY


def new_key() -> ZoneKey:
    """Return a fresh ECDSA P-256 signing key (flags 257)."""
    private = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(private.public_key(), ALGORITHM, flags=KEY_FLAGS)
    return ZoneKey(private, dnskey)


def ds_text(origin: dns.name.Name, key: ZoneKey) -> str:
    """Return the DS record data (SHA-256 digest) for a zone's key."""
    return dns.dnssec.make_ds(origin, key.dnskey, "SHA256").to_text()


def sign(zone: dns.zone.Zone, key: ZoneKey, now: float | None = None) -> None:
    """Sign `zone` in place: DNSKEY, RRSIG on every authoritative RRset, the NSEC chain."""
    when = int(time.time() if now is None else now)
    dns.dnssec.sign_zone(
        zone,
        keys=[(key.private, key.dnskey)],
        inception=when - INCEPTION_SKEW,
        expiration=when + SIGNATURE_LIFETIME,
    )


def corrupt_signature(
    zone: dns.zone.Zone, owner: dns.name.Name, rdtype: dns.rdatatype.RdataType
) -> None:
    """Flip one bit in the signature of the RRSIG covering (owner, rdtype): a bogus RRset."""

    def flip(rrsig: dns.rdtypes.ANY.RRSIG.RRSIG) -> dns.rdtypes.ANY.RRSIG.RRSIG:
        signature = bytearray(rrsig.signature)
        signature[len(signature) // 2] ^= 0x01
        changed = rrsig.replace(signature=bytes(signature))
        assert isinstance(changed, dns.rdtypes.ANY.RRSIG.RRSIG)
        return changed

    _replace_rrsig(zone, owner, rdtype, flip)


def expire_signature(
    zone: dns.zone.Zone,
    owner: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    key: ZoneKey,
    now: float | None = None,
) -> None:
    """Re-sign (owner, rdtype) with a signature whose validity ended a day ago."""
    when = int(time.time() if now is None else now)
    rdataset = zone.find_rdataset(owner, rdtype)
    rrset = dns.rrset.from_rdata_list(owner, rdataset.ttl, list(rdataset))
    assert zone.origin is not None
    began, ended = EXPIRED_WINDOW
    expired = dns.dnssec.sign(
        rrset, key.private, zone.origin, key.dnskey,
        inception=when - began, expiration=when - ended, origin=zone.origin,
    )  # fmt: skip
    _replace_rrsig(zone, owner, rdtype, lambda _old: expired)


def _replace_rrsig(
    zone: dns.zone.Zone,
    owner: dns.name.Name,
    rdtype: dns.rdatatype.RdataType,
    change: Callable[[dns.rdtypes.ANY.RRSIG.RRSIG], dns.rdtypes.ANY.RRSIG.RRSIG],
) -> None:
    """Replace the RRSIGs covering (owner, rdtype) by `change(old)`; raise if there is none."""
    node = zone.find_node(owner)
    rrsigs = node.find_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, rdtype)
    replaced = [change(rrsig) for rrsig in rrsigs]
    ttl = rrsigs.ttl
    node.delete_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, rdtype)
    fresh = node.find_rdataset(dns.rdataclass.IN, dns.rdatatype.RRSIG, rdtype, create=True)
    for rrsig in replaced:
        fresh.add(rrsig, ttl)
