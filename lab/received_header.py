"""The Received header a receiver writes: Postfix 3.7's format, client text neutralised."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from email.utils import format_datetime

from lab.header_text import helo_text, recipient_text
from lab.session_record import SessionRecord
from lab.tls_names import postfix_key_exchange, scheme_digest

__all__ = ["SERVER_SOFTWARE", "postfix_date", "received_header"]

SERVER_SOFTWARE = "Sender TLS Lab"


def received_header(
    record: SessionRecord, mx_host: str, queue_id: str, rcpt: str, when: float
) -> str:
    """Return a Received header in Postfix's format; client text in it is neutralised."""
    helo = helo_text(record.ehlo) if record.ehlo else "unknown"
    lines = [f"Received: from {helo} (unknown [{record.peer_ip}])"]
    if record.version is not None:
        openssl_name = "TLSv1" if record.version == "TLSv1.0" else record.version
        bits = record.bits or 0
        using = f"\t(using {openssl_name} with cipher {record.cipher} ({bits}/{bits} bits)"
        details = _tls13_details(record)
        lines += [using, f"\t {details})"] if details else [using + ")"]
        lines.append("\t(No client certificate requested)")
        protocol = "ESMTPS"
    else:
        protocol = "ESMTP" if record.esmtp else "SMTP"
    lines.append(f"\tby {mx_host} ({SERVER_SOFTWARE}) with {protocol} id {queue_id}")
    lines.append(f"\tfor <{recipient_text(rcpt)}>; {postfix_date(when)}")
    return "\r\n".join(lines) + "\r\n"


def postfix_date(when: float) -> str:
    """Return a date as Postfix's mail_date() writes it in UTC: `Thu,  2 Jul 2026 ... (UTC)`."""
    return _postfix_second(int(when // 1))  # whole seconds: concurrent sessions share the text


@functools.lru_cache(maxsize=4)
def _postfix_second(second: int) -> str:
    """Return postfix_date's text for one whole second since the epoch."""
    stamp = format_datetime(datetime.fromtimestamp(second, UTC))  # `Thu, 02 Jul 2026 ...`
    day = stamp[5:7]
    return f"{stamp[:5]}{day.lstrip('0').rjust(2)}{stamp[7:]} (UTC)"


def _tls13_details(record: SessionRecord) -> str:
    """Return Postfix's TLS 1.3 key-exchange and server-signature clause, or "" before 1.3."""
    if record.version != "TLSv1.3":
        return ""  # Postfix's tls_get_signature_params() reports TLS 1.3 only
    parts = []
    if record.group:
        parts.append(f"key-exchange {postfix_key_exchange(record.group)}")
    if record.server_key:
        parts.append(f"server-signature {record.server_key}")
        digest = scheme_digest(record.signature_scheme) if record.signature_scheme else None
        if digest:
            parts.append(f"server-digest {digest}")
    return " ".join(parts)
