"""Recipient-side TLS evidence: parse Received headers into TlsFacts, never raising on junk.

The guarded parsers never raise; a crash inside one is logged and counted (`parser_crashes()`),
never silently read as plaintext. The `*_unguarded` variants raise, for property tests.

Supported clause formats (first match wins, in this order):

- Postfix / Stalwart / the lab receiver: `(using TLSv1.2 with cipher C (256/256 bits))`
- key=value (Gmail, Microsoft 365, Sendmail, Mimecast, Stalwart, IronPort):
  `(version=TLS1_3 cipher=C bits=256/256)`, `(version=TLS1_2, cipher=C)`
- Exim 4.92+: `with esmtps (TLS1.3) tls C`
- colon form (older Exim with OpenSSL or GnuTLS, OpenSMTPD): `(TLSv1.2:C:256)`, `(TLSv1.3:C:256:NO)`
- word form (Stalwart): `tls TLSv1_3 cipher C`
- Cisco IronPort cipher only: `with ESMTP/TLS/C` (version inferred from the cipher family)
- bare TLS markers: `(TLS)`, `with ESMTPS`/`ESMTPSA`/`LMTPS`, `with STARTTLS`, `ESMTP/TLS`

Security note: the `from` clause echoes text the sending client chose (HELO name), so a hostile
sender could plant a fake clause there in another MTA's header. The lab's receiver neutralises
client text in its own header (lab/header_text.py), and a cell's TLS facts come from the
receiver's record, never from parsing a header (harness/arrivals.py).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from harness.model import TlsFacts
from lab.spec import TlsVersion

__all__ = [
    "MAX_HEADER_CHARS",
    "UNKNOWN_CIPHER",
    "Hop",
    "TlsFacts",
    "by_host",
    "hops",
    "infer_version",
    "message_hops",
    "normalise_version",
    "parse_received",
    "parse_received_unguarded",
    "parser_crashes",
    "received_headers",
    "received_headers_unguarded",
]

MAX_HEADER_CHARS = 16 * 1024
UNKNOWN_CIPHER = "unknown"

_LOG = logging.getLogger(__name__)
_CRASH_LOCK = threading.Lock()
_CRASHES: Counter[str] = Counter()

# Every quantifier below is bounded or sits next to a literal it cannot overlap with, so each
# search is linear in the (capped) input; there are no nested or adjacent unbounded repeats.
_VER = r"(?P<ver>(?:TLS|SSL)[A-Za-z0-9._]{0,8})"
_CIPHER = r"(?P<cipher>[^\s(),;]{1,128})(?![^\s(),;])"
_BITS = r"(?P<bits>\d{1,6})"
_FLAGS = re.IGNORECASE | re.ASCII

_POSTFIX = re.compile(
    rf"\(using {_VER} with cipher {_CIPHER}(?: \({_BITS}/\d{{1,6}} bits\))?", _FLAGS
)
_KV_VERSION = re.compile(rf"\bversion={_VER}", _FLAGS)
_KV_CIPHER = re.compile(rf"\bcipher={_CIPHER}", _FLAGS)
_KV_BITS = re.compile(rf"\bbits={_BITS}", _FLAGS)
_EXIM = re.compile(rf"\({_VER}\) tls {_CIPHER}", _FLAGS)
_COLON = re.compile(
    rf"\({_VER}:(?P<cipher>[^\s():;,]{{1,128}})(?![^\s():;,])"
    rf"(?::{_BITS})?(?::[^\s()]{{0,32}})?\)",
    _FLAGS,
)
_WORD = re.compile(rf"\btls {_VER} cipher {_CIPHER}", _FLAGS)
_IRONPORT = re.compile(rf"\bESMTPS?A?/TLS/{_CIPHER}", _FLAGS)
_BARE_TLS = re.compile(
    r"\(TLS\)|\bwith (?:ESMTPSA?|LMTPSA?|UTF8SMTPSA?|UTF8LMTPSA?|STARTTLS)\b|\bESMTPS?A?/TLS\b",
    _FLAGS,
)

_VERSION_NAME = re.compile(r"TLSV?1(?:[._](?P<minor>[0-3]))?", _FLAGS)
_LEADING_NAME = re.compile(r"\s{0,64}Received\s{0,8}:", _FLAGS)
_WHITESPACE = re.compile(r"\s+")

_TLS13_CIPHER = re.compile(r"^(?:TLS_AES_|TLS_CHACHA20_|TLS13_)", _FLAGS)
_TLS12_CIPHER = re.compile(r"GCM|CCM|CHACHA20[-_]POLY1305|[-_]SHA(?:256|384)$", _FLAGS)

_MINOR_VERSIONS = {
    None: TlsVersion.TLS10,
    "0": TlsVersion.TLS10,
    "1": TlsVersion.TLS11,
    "2": TlsVersion.TLS12,
    "3": TlsVersion.TLS13,
}


class _UnknownVersion(Exception):
    """Raised internally when a TLS clause names a version outside TLSv1.0..TLSv1.3."""


def normalise_version(name: str) -> TlsVersion | None:
    """Map `TLSv1`, `TLSv1.2`, `TLS1.3`, `TLS1_2`, `TLSv1_3` (any case) to a TlsVersion or None."""
    match = _VERSION_NAME.fullmatch(name)
    if match is None:
        return None
    return _MINOR_VERSIONS[match.group("minor")]


def infer_version(cipher: str) -> TlsVersion:
    """Return the lowest version a cipher name allows: 1.3 suites, 1.2-only AEAD/SHA-2, else 1.0."""
    if _TLS13_CIPHER.search(cipher):
        return TlsVersion.TLS13
    if _TLS12_CIPHER.search(cipher):
        return TlsVersion.TLS12
    return TlsVersion.TLS10


def _bits(text: str | None) -> int | None:
    """Return the key bits as an int, or None when absent."""
    return int(text) if text else None


def _facts(version: str, cipher: str, bits: str | None) -> TlsFacts:
    """Build TlsFacts from raw clause parts; raise _UnknownVersion for versions we do not know."""
    normalised = normalise_version(version)
    if normalised is None:
        raise _UnknownVersion(version)
    return TlsFacts(version=normalised, cipher=cipher, bits=_bits(bits))


def _from_match(pattern: re.Pattern[str]) -> Callable[[str], TlsFacts | None]:
    """Return a parser for a regex with `ver`, `cipher` and optional `bits` groups."""

    def parse(text: str) -> TlsFacts | None:
        """Return the facts of the first match of the pattern, or None without a match."""
        match = pattern.search(text)
        if match is None:
            return None
        groups = match.groupdict()
        return _facts(match.group("ver"), match.group("cipher"), groups.get("bits"))

    return parse


def _key_value(text: str) -> TlsFacts | None:
    """Parse `version=V cipher=C bits=N/M` (any order after version, up to the closing paren)."""
    match = _KV_VERSION.search(text)
    if match is None:
        return None
    window = text[match.end() : match.end() + 512].split(")", 1)[0]
    cipher = _KV_CIPHER.search(window)
    bits = _KV_BITS.search(window)
    return _facts(
        match.group("ver"),
        cipher.group("cipher") if cipher else UNKNOWN_CIPHER,
        bits.group("bits") if bits else None,
    )


def _ironport(text: str) -> TlsFacts | None:
    """Parse IronPort's `ESMTP/TLS/<cipher>`, reporting the lowest version the cipher allows."""
    match = _IRONPORT.search(text)
    if match is None:
        return None
    cipher = match.group("cipher")
    return TlsFacts(version=infer_version(cipher), cipher=cipher)


def _bare_tls(text: str) -> TlsFacts | None:
    """Report a TLS marker without version or cipher as TLSv1.0 with an unknown cipher."""
    if _BARE_TLS.search(text) is None:
        return None
    return TlsFacts(version=TlsVersion.TLS10, cipher=UNKNOWN_CIPHER)


_PARSERS: tuple[Callable[[str], TlsFacts | None], ...] = (
    _from_match(_POSTFIX),
    _key_value,
    _from_match(_EXIM),
    _from_match(_COLON),
    _from_match(_WORD),
    _ironport,
    _bare_tls,
)


def _prepare(header: str) -> str:
    """Cap, strip the `Received:` name, unfold and collapse whitespace to single spaces."""
    text = header[:MAX_HEADER_CHARS]
    name = _LEADING_NAME.match(text)
    if name is not None:
        text = text[name.end() :]
    return _WHITESPACE.sub(" ", text).strip()


def parse_received(header: str) -> TlsFacts | None:
    """Return the TLS facts of one Received header value, or None for plaintext, unknown or junk.

    Only the first 16 KiB are read. A clause naming a version outside TLSv1.0..TLSv1.3 (`TLSv9.9`,
    `SSLv3`) yields None. Evidence of TLS without a stated version never overstates security: a
    cipher-only header reports the lowest version its cipher allows (TLS 1.3 suites -> TLSv1.3,
    GCM/CCM/ChaCha20-Poly1305/SHA-256/SHA-384 suites -> TLSv1.2, anything else -> TLSv1.0), and a
    bare marker (`(TLS)`, `with ESMTPS`) reports TLSv1.0 with cipher `unknown`. A crash of the
    parser itself also yields None, but is logged and counted (`parser_crashes()`).
    """
    if not isinstance(header, str):
        return None
    try:
        return parse_received_unguarded(header)
    except Exception:
        _crashed("parse_received", header)
        return None


def parse_received_unguarded(header: str) -> TlsFacts | None:
    """Do parse_received()'s work without its guard: a bug in a parser raises here."""
    text = _prepare(header)
    for parser in _PARSERS:
        try:
            facts = parser(text)
        except _UnknownVersion:
            return None  # the first clause names a version we do not know: not evidence of TLS
        if facts is not None:
            return facts
    return None


def parser_crashes() -> dict[str, int]:
    """Return how often each guarded parser has crashed in this process (each crash is logged)."""
    with _CRASH_LOCK:
        return dict(_CRASHES)


def _crashed(parser: str, sample: object) -> None:
    """Count a crash of `parser` and log it with its traceback and the start of the input."""
    with _CRASH_LOCK:
        _CRASHES[parser] += 1
    _LOG.exception("%s crashed; its input (first 200 chars): %.200r", parser, sample)


def _as_bytes(message_bytes: object) -> bytes:
    """Return the input as bytes (str is UTF-8 encoded); anything else becomes empty."""
    if isinstance(message_bytes, bytes | bytearray | memoryview):
        return bytes(message_bytes)
    if isinstance(message_bytes, str):
        return message_bytes.encode("utf-8", "replace")
    return b""


def _header_lines(data: bytes) -> list[bytes]:
    """Return the lines of the header section, each with its line ending, mbox `From ` dropped."""
    lines = data.splitlines(keepends=True)
    if lines and lines[0].startswith(b"From "):
        lines = lines[1:]
    section: list[bytes] = []
    for line in lines:
        if line.rstrip(b"\r\n") == b"":
            break
        section.append(line)
    return section


def received_headers(message_bytes: bytes) -> list[str]:
    """Return every Received value of a message, top (newest) first, folds kept as written.

    Like `email.policy.compat32`: the value starts after the colon with leading whitespace
    removed, continuation lines keep their line endings and indentation, and the final line
    ending is dropped. Undecodable bytes become U+FFFD. A crash of the reader itself yields what
    was read so far, and is logged and counted (`parser_crashes()`).
    """
    values: list[str] = []
    try:
        _read_received(message_bytes, values)
    except Exception:
        _crashed("received_headers", message_bytes)
    return values


def received_headers_unguarded(message_bytes: bytes) -> list[str]:
    """Do received_headers()'s work without its guard: a bug in the reader raises here."""
    values: list[str] = []
    _read_received(message_bytes, values)
    return values


def _read_received(message_bytes: bytes, values: list[str]) -> None:
    """Append every Received value of the message to `values`, top first, as it is read."""
    current: list[bytes] | None = None
    for line in _header_lines(_as_bytes(message_bytes)):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            values.append(_decode_value(current))
            current = None
        name, colon, rest = line.partition(b":")
        if not colon:
            break
        if name.strip().lower() == b"received":
            current = [rest.lstrip(b" \t")]
    if current is not None:
        values.append(_decode_value(current))


def _decode_value(parts: list[bytes]) -> str:
    """Join a field's raw lines into its value: UTF-8 with replacement, trailing newline dropped."""
    return b"".join(parts).decode("utf-8", "replace").rstrip("\r\n")


def hops(message_bytes: bytes) -> list[tuple[str, TlsFacts | None]]:
    """Return (Received value, facts) for every hop of a message, top (newest) first."""
    return [(value, parse_received(value)) for value in received_headers(message_bytes)]


_COMMENT = re.compile(r"\([^()]*\)")
_BY = re.compile(r"\bby\s+([^\s;()]{1,255})", re.IGNORECASE)


def by_host(received: str) -> str | None:
    """Return the `by` host of a Received header (comments skipped), or None when it has none."""
    text = received[:MAX_HEADER_CHARS]
    for _ in range(4):  # nested comments, innermost first
        text = _COMMENT.sub(" ", text)
    match = _BY.search(text)
    return match.group(1) if match else None


@dataclasses.dataclass(frozen=True)
class Hop:
    """One Received hop of a message: its number (1 = newest), `by` host and TLS facts."""

    file: str
    number: int
    by: str | None
    facts: TlsFacts | None
    received: str

    def as_json(self) -> dict[str, Any]:
        """Return the hop as a JSON-ready object."""
        tls = None if self.facts is None else self.facts.model_dump(mode="json")
        return {
            "file": self.file,
            "hop": self.number,
            "by": self.by,
            "tls": tls,
            "received": self.received,
        }


def message_hops(name: str, data: bytes) -> list[Hop]:
    """Return every Received hop of a message, newest (top) first."""
    return [
        Hop(name, number, by_host(received), facts, received)
        for number, (received, facts) in enumerate(hops(data), 1)
    ]
