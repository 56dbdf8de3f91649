"""Stored copies of a test message, from the lab's per-message records: the one path to Arrivals.

A copy's TLS facts come from the receiver's own record (messages.jsonl, durable before the
sender got 250), never from a header a client could influence; the stored `.eml`'s top
Received header is read only to check it is exactly the header the record says the lab wrote.
"""

from __future__ import annotations

import os
import re
from email.parser import BytesHeaderParser
from pathlib import Path

from harness.classify import Arrival
from harness.evidence import UNKNOWN_CIPHER, received_headers
from harness.model import TlsFacts
from lab.message_record import MessageKey, MessageRecord, message_records_where
from lab.spec import BOUNCE_LOCAL_PART

__all__ = ["TOKEN_HEADER", "find_arrivals", "is_bounce_mailbox"]

TOKEN_HEADER = "X-TLSLab-Message-ID"
# the first empty line: a line ending right after one (atomic: CRLF is one ending, not two)
HEADERS_END = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")
HEAD_BYTES = 64 * 1024  # of each .eml: the lab's header and the sender's first headers


def is_bounce_mailbox(address: str, zone: str) -> bool:
    """Return True for `bounce` or `bounce+<tag>` at the zone apex."""
    local, _, domain = address.rpartition("@")
    return domain.lower() == zone and local.lower().partition("+")[0] == BOUNCE_LOCAL_PART


def record_facts(record: MessageRecord) -> TlsFacts | None:
    """Return the TLS facts the receiver recorded for a message's session; None for plaintext."""
    if record.version is None:
        return None
    return TlsFacts(
        version=record.version, cipher=record.cipher or UNKNOWN_CIPHER, bits=record.bits
    )


def _head(directory: Path, record: MessageRecord) -> bytes | None:
    """Return the first HEAD_BYTES of a stored message, or None when its `.eml` cannot be read."""
    try:
        with (directory / record.eml).open("rb") as stored:
            return stored.read(HEAD_BYTES)
    except OSError:
        return None


def arrival_of(record: MessageRecord, data: bytes | None) -> Arrival:
    """Return the Arrival of one stored message (`data`: its start): record facts, stored header."""
    headers = received_headers(data) if data is not None else []
    return Arrival(
        received=headers[0] if headers else None,
        recorded=record.received,
        tls=record_facts(record),
        eml=record.eml,
        session_id=record.session_id,
    )


def _token(data: bytes | None) -> str | None:
    """Return the lab's token header of raw message bytes (senders that rewrite Message-ID)."""
    if data is None:
        return None
    end = HEADERS_END.search(data)  # the parser stops at the same blank line: skip the body
    value = BytesHeaderParser().parsebytes(data[: end.end()] if end else data).get(TOKEN_HEADER)
    return str(value).strip() if value is not None else None


def stored_token(path: Path | str) -> str | None:
    """Return the token header of a stored `.eml` (None: none, or unreadable), parsed once.

    Remembered by the file's identity, size and modification time: a changed file is read again.
    """
    name = os.fspath(path)
    try:
        stat = os.stat(name)
    except OSError:
        return None
    key = (name, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key in _TOKENS:
        return _TOKENS[key]
    try:
        with open(name, "rb") as stored:
            token = _token(stored.read(HEAD_BYTES))
    except OSError:
        return None
    if len(_TOKENS) >= MAX_TOKENS:
        _TOKENS.clear()
    _TOKENS[key] = token
    return token


_TOKENS: dict[tuple[str, int, int, int], str | None] = {}
MAX_TOKENS = 65536  # remembered `.eml` tokens per process; all forgotten when full


def find_arrivals(directory: Path, message_id: str, zone: str) -> list[Arrival]:
    """Return every stored copy of a message, by Message-ID or the lab's token header.

    Copies addressed to the zone's bounce mailbox are bounces quoting the message, not copies.
    messages.jsonl is read incrementally, and each `.eml`'s token header parsed once.
    """
    folder = os.path.join(directory, "")  # each `.eml`'s path is joined as text: once per record

    def copy(key: MessageKey) -> bool:
        if any(is_bounce_mailbox(rcpt, zone) for rcpt in key.rcpt_tos):
            return False
        return key.message_id == message_id or stored_token(folder + key.eml) == message_id

    found = message_records_where(directory, copy)
    return [arrival_of(record, _head(directory, record)) for record in found]
