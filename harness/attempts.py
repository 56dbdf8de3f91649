"""The receiver's side of a cell with several sessions: which MX host, TLS, replies, messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

REPLY_LIMIT = 80  # characters of a refusing reply quoted in a cell's detail


def session_trail(sessions: Sequence[dict[str, Any]], mx_hosts: int) -> str:
    """Return a note listing each session in order (host, TLS, 4xx/5xx, messages); "" for one.

    Sessions are listed when there are several of them or the receiver has several MX hosts,
    so a retry or an MX fallback is visible from the receiver's own records.
    """
    if not sessions or (len(sessions) == 1 and mx_hosts <= 1):
        return ""
    parts = []
    ordered = sorted(sessions, key=lambda r: float(r.get("started") or 0))
    first = float(ordered[0].get("started") or 0)
    for number, record in enumerate(ordered, 1):
        at = float(record.get("started") or 0) - first
        host = record.get("mx_host") or record.get("receiver") or "?"
        parts.append(f"#{number} at +{at:.1f} s to {host}: {_what(record)}")
    return "; receiver sessions: " + ", ".join(parts)


def _what(record: dict[str, Any]) -> str:
    """Return one session's TLS, its refusing replies and what it stored."""
    if record.get("handshake") == "failed":
        tls = f"TLS handshake failed ({record.get('alert') or record.get('tls_error')})"
    else:
        tls = str(record.get("version") or "plaintext")
    refusals = [
        line[3:][:REPLY_LIMIT]
        for line in record.get("transcript") or []
        if isinstance(line, str) and line[3:4] in ("4", "5")
        and line.startswith("S: ")
    ]  # fmt: skip
    stored = len(record.get("messages") or [])
    told = f", answered {' / '.join(refusals)}" if refusals else ""
    return f"{tls}{told}, {stored} message{'s' if stored != 1 else ''} stored"
