"""IANA names of TLS groups and signature schemes, and how Postfix's Received header words them."""

from __future__ import annotations

__all__ = [
    "GROUPS",
    "OPENSSL_CURVES",
    "SIGNATURE_SCHEMES",
    "postfix_key_exchange",
    "scheme_digest",
]

# IANA TLS Supported Groups -> name (RFC 8422, RFC 7919, RFC 8446)
GROUPS: dict[int, str] = {
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001D: "x25519",
    0x001E: "x448",
    0x0100: "ffdhe2048",
    0x0101: "ffdhe3072",
    0x0102: "ffdhe4096",
    0x0103: "ffdhe6144",
    0x0104: "ffdhe8192",
}
# OpenSSL's short names for the NIST curves, as Postfix prints them (`ECDHE (prime256v1)`)
OPENSSL_CURVES = {"secp256r1": "prime256v1", "secp384r1": "secp384r1", "secp521r1": "secp521r1"}

# IANA TLS SignatureScheme -> name (RFC 8446 4.2.3)
SIGNATURE_SCHEMES: dict[int, str] = {
    0x0201: "rsa_pkcs1_sha1",
    0x0203: "ecdsa_sha1",
    0x0401: "rsa_pkcs1_sha256",
    0x0403: "ecdsa_secp256r1_sha256",
    0x0501: "rsa_pkcs1_sha384",
    0x0503: "ecdsa_secp384r1_sha384",
    0x0601: "rsa_pkcs1_sha512",
    0x0603: "ecdsa_secp521r1_sha512",
    0x0804: "rsa_pss_rsae_sha256",
    0x0805: "rsa_pss_rsae_sha384",
    0x0806: "rsa_pss_rsae_sha512",
    0x0807: "ed25519",
    0x0808: "ed448",
    0x0809: "rsa_pss_pss_sha256",
    0x080A: "rsa_pss_pss_sha384",
    0x080B: "rsa_pss_pss_sha512",
}


def postfix_key_exchange(group: str) -> str:
    """Return Postfix's `key-exchange` text for a group: `X25519`, `ECDHE (prime256v1)` ..."""
    if group in OPENSSL_CURVES:
        return f"ECDHE ({OPENSSL_CURVES[group]})"
    if group.startswith("ffdhe"):
        return f"DHE ({group.removeprefix('ffdhe')} bits)"
    return group.upper()


def scheme_digest(scheme: str) -> str | None:
    """Return the digest of a signature scheme as OpenSSL names it (`SHA256`); None for EdDSA."""
    last = scheme.rsplit("_", 1)[-1]
    return last.upper() if last.startswith("sha") else None
