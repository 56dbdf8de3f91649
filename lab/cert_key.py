"""Name a certificate's public key as Postfix's Received header does, read from its DER.

The receivers name their key in every TLS 1.3 Received header (`server-signature RSA-PSS (2048
bits)`). Reading the SubjectPublicKeyInfo's algorithm, RSA modulus or named curve takes a few
DER headers; loading `cryptography` for it cost each receiver process about 35 ms of its start.
Any key or encoding this reader does not know is named by `cryptography`, as before.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import NamedTuple

from lab.tls_names import OPENSSL_CURVES

SEQUENCE, BIT_STRING, INTEGER, OID, CONTEXT_0 = 0x30, 0x03, 0x02, 0x06, 0xA0
RSA_ENCRYPTION = "1.2.840.113549.1.1.1"
EC_PUBLIC_KEY = "1.2.840.10045.2.1"
EDWARDS = {"1.3.101.112": "ED25519", "1.3.101.113": "ED448"}
CURVES = {"1.2.840.10045.3.1.7": "secp256r1", "1.3.132.0.34": "secp384r1",
          "1.3.132.0.35": "secp521r1"}  # fmt: skip


class UnknownKey(ValueError):
    """The DER is not one this reader knows how to name."""


def postfix_server_key(cert_path: Path) -> str | None:
    """Return how Postfix names the key of a certificate file's first certificate."""
    pem = cert_path.read_bytes()
    try:
        return name_key(_first_der(pem))
    except UnknownKey:
        return _named_by_cryptography(pem)


def name_key(der: bytes) -> str | None:
    """Name the public key of one DER certificate: `RSA-PSS (2048 bits)`, `ECDSA (...)` ..."""
    certificate = _inside(der, 0, SEQUENCE)
    tbs = _inside(der, certificate.start, SEQUENCE)
    field = tbs.start
    if der[field] == CONTEXT_0:  # the explicit version
        field = _skip(der, field)
    for _ in ("serial", "signature", "issuer", "validity", "subject"):
        field = _skip(der, field)
    public_key_info = _inside(der, field, SEQUENCE)
    algorithm = _inside(der, public_key_info.start, SEQUENCE)
    oid = _oid(der, algorithm.start)
    if oid == RSA_ENCRYPTION:
        bits = _inside(der, algorithm.end, BIT_STRING)
        if der[bits.start] != 0:
            raise UnknownKey("RSA key with unused bits")
        rsa_key = _inside(der, bits.start + 1, SEQUENCE)
        modulus = _inside(der, rsa_key.start, INTEGER)
        return f"RSA-PSS ({int.from_bytes(der[modulus.start : modulus.end]).bit_length()} bits)"
    if oid == EC_PUBLIC_KEY and _skip(der, algorithm.start) < algorithm.end:
        curve = _oid(der, _skip(der, algorithm.start))
        if curve in CURVES:
            return f"ECDSA ({OPENSSL_CURVES[CURVES[curve]]})"
    if oid in EDWARDS:
        return EDWARDS[oid]
    raise UnknownKey(f"key algorithm {oid}")


class _Span(NamedTuple):
    """The content bytes [start, end) of one DER element."""

    start: int
    end: int


def _header(der: bytes, at: int) -> tuple[int, _Span]:
    """Return the tag at `at` and its content's span (definite lengths only)."""
    if at + 2 > len(der):
        raise UnknownKey("truncated DER")
    tag, first = der[at], der[at + 1]
    start = at + 2
    length = first
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4 or start + count > len(der):
            raise UnknownKey("unsupported DER length")
        length = int.from_bytes(der[start : start + count])
        start += count
    if start + length > len(der):
        raise UnknownKey("truncated DER")
    return tag, _Span(start, start + length)


def _inside(der: bytes, at: int, tag: int) -> _Span:
    """Return the content span of the element at `at`, which must carry `tag`."""
    found, span = _header(der, at)
    if found != tag:
        raise UnknownKey(f"expected DER tag {tag:#x}, found {found:#x}")
    return span


def _skip(der: bytes, at: int) -> int:
    """Return the offset just after the element at `at`."""
    return _header(der, at)[1].end


def _oid(der: bytes, at: int) -> str:
    """Decode the OBJECT IDENTIFIER at `at` to dotted text."""
    span = _inside(der, at, OID)
    arcs: list[int] = []
    value = 0
    for byte in der[span.start : span.end]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    if not arcs:
        raise UnknownKey("empty OID")
    first = min(arcs[0] // 40, 2)
    return ".".join(str(arc) for arc in (first, arcs[0] - 40 * first, *arcs[1:]))


def _first_der(pem: bytes) -> bytes:
    """Return the DER of the first PEM certificate in `pem`."""
    text = pem.decode("ascii", "replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise UnknownKey("no PEM certificate")
    try:
        return ssl.PEM_cert_to_DER_cert(text[start : stop + len(end)])
    except ValueError as error:
        raise UnknownKey(str(error)) from None


def _named_by_cryptography(pem: bytes) -> str | None:
    """Name the key with `cryptography` (any key type and curve it knows)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    key = x509.load_pem_x509_certificate(pem).public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA-PSS ({key.key_size} bits)"  # TLS 1.3 signs with PSS (tls_misc.c)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA ({OPENSSL_CURVES.get(key.curve.name, key.curve.name)})"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ED25519"
    if isinstance(key, ed448.Ed448PublicKey):
        return "ED448"
    return None
