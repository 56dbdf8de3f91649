"""What a client offered in its ClientHello, parsed with tlslite-ng, and its JA4 fingerprint.

The bytes are the ClientHello exactly as OpenSSL read it (see lab.tls_observe), so this is
what the client sent, whether the handshake then succeeded or failed. Versions: the
`supported_versions` extension when present (TLS 1.3 clients), else the one `legacy_version`
(a client without the extension names only its highest version, so nothing lower is claimed).
GREASE values (RFC 8701) are dropped everywhere. JA4 follows FoxIO's JA4 TLS client spec.

An offer does not depend on the bytes a client draws afresh for every hello (its random, its
session id's value, its key shares' public keys), so hellos are parsed once per sender: those
bytes are zeroed (their lengths kept) and the offer of the zeroed hello is cached.
"""

from __future__ import annotations

import functools
import hashlib
import ssl

from lab.client_offer import ClientOffer, OfferedCipher
from lab.tls_names import SIGNATURE_SCHEMES
from lab.tlslite_parts import register_bare_package

register_bare_package()  # the parser's modules only, not tlslite's integrations (asyncore, xmlrpc)
from tlslite.constants import CipherSuite, ExtensionType, GroupName  # noqa: E402
from tlslite.extensions import (  # noqa: E402
    ALPNExtension,
    SessionTicketExtension,
    SignatureAlgorithmsExtension,
    SNIExtension,
    SupportedGroupsExtension,
    SupportedVersionsExtension,
)
from tlslite.messages import ClientHello  # noqa: E402
from tlslite.utils.codec import Parser  # noqa: E402

__all__ = ["ClientOffer", "OfferedCipher", "parse_client_hello"]

VERSIONS = {0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
JA4_VERSIONS = {0x0300: "s3", 0x0301: "10", 0x0302: "11", 0x0303: "12", 0x0304: "13"}
PRE_SHARED_KEY = 41
HANDSHAKE_HEADER = 4
KEY_SHARE = 51
OFFERS_CACHED = 256  # distinct senders' hellos (each at most a few KiB) kept


def is_grease(value: int) -> bool:
    """Return True for an RFC 8701 GREASE value (0x0a0a, 0x1a1a, ... 0xfafa)."""
    return value & 0x0F0F == 0x0A0A and value >> 8 == value & 0xFF


def parse_client_hello(message: bytes) -> ClientOffer | None:
    """Return the offer of a ClientHello handshake message (header included), None if garbled."""
    fresh = _fresh_ranges(message)
    if fresh is None:
        return parse_uncached(message)  # framing this walk cannot follow: tlslite decides
    zeroed = bytearray(message)
    for start, end in fresh:
        zeroed[start:end] = bytes(end - start)
    return _parse_zeroed(bytes(zeroed))


def _fresh_ranges(message: bytes) -> list[tuple[int, int]] | None:
    """Return where a well-framed hello holds per-hello bytes (random, session id, keys), or None.

    None unless every length field fits exactly: the message's, the cipher and compression
    lists', the extension block's and each extension's, and each key share's in key_share.
    """
    size = len(message)
    if size < 39 or message[0] != 1 or int.from_bytes(message[1:4], "big") != size - 4:
        return None
    ranges = [(6, 38)]
    at = 39 + message[38]  # after the session id
    ranges.append((39, at))
    for width in (2, 1):  # cipher suites, compression methods
        if at + width > size:
            return None
        at += width + int.from_bytes(message[at : at + width], "big")
    if at == size:
        return ranges  # no extension block at all
    if at + 2 > size or at + 2 + int.from_bytes(message[at : at + 2], "big") != size:
        return None
    at += 2
    while at < size:
        if at + 4 > size:
            return None
        kind, length = (
            int.from_bytes(message[at : at + 2], "big"),
            int.from_bytes(message[at + 2 : at + 4], "big"),
        )
        body, at = at + 4, at + 4 + length
        if at > size:
            return None
        if kind == KEY_SHARE:
            keys = _key_ranges(message, body, at)
            if keys is None:
                return None
            ranges += keys
    return ranges


def _key_ranges(message: bytes, start: int, end: int) -> list[tuple[int, int]] | None:
    """Return where each key share's public key lies in a key_share body, or None if ill-framed."""
    if start == end:
        return []
    if start + 2 + int.from_bytes(message[start : start + 2], "big") != end:
        return None
    ranges, at = [], start + 2
    while at < end:
        if at + 4 > end:
            return None
        key = at + 4
        at = key + int.from_bytes(message[at + 2 : at + 4], "big")
        if at > end:
            return None
        ranges.append((key, at))
    return ranges


@functools.lru_cache(maxsize=OFFERS_CACHED)
def _parse_zeroed(message: bytes) -> ClientOffer | None:
    """Return the offer of a hello whose per-hello bytes are zeroed (offers are frozen models)."""
    return parse_uncached(message)


def parse_uncached(message: bytes) -> ClientOffer | None:
    """Return the offer of a ClientHello message parsed by tlslite, None if garbled."""
    hello = ClientHello()
    try:
        hello.parse(Parser(bytearray(message[1:])))  # tlslite reads from the 3-byte length
    except Exception:  # tlslite raises several types on malformed input
        return None
    legacy = _code(hello.client_version)
    extensions = [int(e.extType) for e in hello.extensions or [] if not is_grease(e.extType)]
    supported = _supported_versions(hello)
    ciphers = [c for c in hello.cipher_suites if not is_grease(c)]
    sigalgs = _sigalg_codes(hello)
    sni = _sni(hello)
    alpn = _alpn(hello)
    return ClientOffer(
        legacy_version=_version_name(legacy),
        supported_versions=tuple(_version_name(v) for v in supported),
        versions=tuple(_version_name(v) for v in supported) or (_version_name(legacy),),
        cipher_suites=tuple(_cipher(c) for c in ciphers),
        groups=tuple(_group_name(g) for g in _groups(hello)),
        signature_algorithms=tuple(SIGNATURE_SCHEMES.get(s, f"0x{s:04x}") for s in sigalgs),
        sni=sni,
        alpn=alpn,
        resumption=_resumption(hello, supported),
        ja4=ja4(max(supported, default=legacy), ciphers, extensions, sigalgs, sni, alpn),
    )


def ja4(
    version: int,
    ciphers: list[int],
    types: list[int],
    sigalgs: list[int],
    sni: str | None,
    alpn: tuple[str, ...],
) -> str:
    """Return the JA4 fingerprint (TCP) from the GREASE-free parts of a ClientHello."""
    part_a = (
        f"t{JA4_VERSIONS.get(version, '00')}{'d' if sni else 'i'}"
        f"{min(len(ciphers), 99):02d}{min(len(types), 99):02d}{_alpn_mark(alpn)}"
    )
    part_b = _hash12(",".join(f"{c:04x}" for c in sorted(ciphers)))
    counted = sorted(t for t in types if t not in (ExtensionType.server_name, ExtensionType.alpn))
    extension_text = ",".join(f"{t:04x}" for t in counted)
    if sigalgs:
        extension_text += "_" + ",".join(f"{s:04x}" for s in sigalgs)
    part_c = _hash12(extension_text) if counted or sigalgs else "000000000000"
    return f"{part_a}_{part_b if ciphers else '000000000000'}_{part_c}"


def _alpn_mark(alpn: tuple[str, ...]) -> str:
    """Return JA4's ALPN part: first and last character of the first value, or of its hex."""
    if not alpn or not alpn[0]:
        return "00"
    first = alpn[0]
    if all(c.isascii() and c.isalnum() for c in (first[0], first[-1])):
        return f"{first[0]}{first[-1]}"
    text = first.encode("utf-8", "replace").hex()
    return f"{text[0]}{text[-1]}"


def _hash12(text: str) -> str:
    """Return the first 12 hex digits of the SHA-256 of `text`."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _code(pair: tuple[int, int]) -> int:
    """Return a (major, minor) version pair as one number: (3, 3) -> 0x0303."""
    return (pair[0] << 8) | pair[1]


def _version_name(code: int) -> str:
    """Return `TLSv1.2` etc., `SSLv3`, or the code in hex."""
    if code == 0x0300:
        return "SSLv3"
    return VERSIONS.get(code, f"0x{code:04x}")


def _supported_versions(hello: ClientHello) -> list[int]:
    """Return the supported_versions the client listed, GREASE dropped (empty when absent)."""
    ext = hello.getExtension(ExtensionType.supported_versions)
    if not isinstance(ext, SupportedVersionsExtension) or not ext.versions:
        return []
    return [v for v in (_code(pair) for pair in ext.versions) if not is_grease(v)]


def _groups(hello: ClientHello) -> list[int]:
    """Return the supported_groups the client listed, GREASE dropped."""
    ext = hello.getExtension(ExtensionType.supported_groups)
    if not isinstance(ext, SupportedGroupsExtension) or not ext.groups:
        return []
    return [g for g in ext.groups if not is_grease(g)]


@functools.lru_cache(maxsize=512)
def _group_name(code: int) -> str:
    """Return a group's IANA name (`x25519`) or its code in hex."""
    name = GroupName.toRepr(code)
    return str(name) if name else f"0x{code:04x}"


def _sigalg_codes(hello: ClientHello) -> list[int]:
    """Return the signature_algorithms the client listed, in its order, GREASE dropped."""
    ext = hello.getExtension(ExtensionType.signature_algorithms)
    if not isinstance(ext, SignatureAlgorithmsExtension) or not ext.sigalgs:
        return []
    return [c for c in ((h << 8) | s for h, s in ext.sigalgs) if not is_grease(c)]


def _sni(hello: ClientHello) -> str | None:
    """Return the host name the client sent in server_name, if any."""
    ext = hello.getExtension(ExtensionType.server_name)
    if not isinstance(ext, SNIExtension) or not ext.hostNames:
        return None
    return bytes(ext.hostNames[0]).decode("ascii", "replace")


def _alpn(hello: ClientHello) -> tuple[str, ...]:
    """Return the ALPN protocol names the client offered."""
    ext = hello.getExtension(ExtensionType.alpn)
    if not isinstance(ext, ALPNExtension) or not ext.protocol_names:
        return ()
    return tuple(bytes(name).decode("ascii", "replace") for name in ext.protocol_names)


def _resumption(hello: ClientHello, supported: list[int]) -> str | None:
    """Return how the client tried to resume a session: psk, ticket, session-id, or None."""
    if hello.getExtension(PRE_SHARED_KEY) is not None:
        return "psk"
    ticket = hello.getExtension(ExtensionType.session_ticket)
    if isinstance(ticket, SessionTicketExtension) and ticket.ticket:
        return "ticket"
    if hello.session_id and 0x0304 not in supported:
        return "session-id"  # TLS 1.3 clients send a random one for middleboxes
    return None


@functools.lru_cache(maxsize=1024)
def _cipher(code: int) -> OfferedCipher:
    """Return a cipher suite with its IANA and OpenSSL names (a frozen model, shared)."""
    iana = CipherSuite.ietfNames.get(code)
    return OfferedCipher(code=f"0x{code:04x}", iana=iana, openssl=_openssl_names().get(code))


@functools.cache
def _openssl_names() -> dict[int, str]:
    """Return the local OpenSSL's name of every cipher suite it knows, by code point."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    return {int(c["id"]) & 0xFFFF: str(c["name"]) for c in context.get_ciphers()}
