"""The receiver's side of a cell with several sessions: which MX host, TLS, replies, messages."""

from __future__ import annotations

from collections.abc import Sequence

from lab.session_facts import Handshake, SessionFacts

REPLY_LIMIT = 80  # characters of a refusing reply quoted in a cell's detail


def session_trail(sessions: Sequence[SessionFacts], mx_hosts: int) -> str:
    """Return a note listing each session in order (host, TLS, 4xx/5xx, messages); "" for one.

    Sessions are listed when there are several of them or the receiver has several MX hosts,
    so a retry or an MX fallback is visible from the receiver's own records.
    """
    if not sessions or (len(sessions) == 1 and mx_hosts <= 1):
        return ""
    ordered = sorted(sessions, key=lambda record: record.started)
    first = ordered[0].started
    parts = [
        f"#{number} at +{record.started - first:.1f} s to {record.mx_host or record.receiver}: "
        f"{_what(record)}"
        for number, record in enumerate(ordered, 1)
    ]
    return "; receiver sessions: " + ", ".join(parts)


def _what(record: SessionFacts) -> str:
    """Return one session's TLS, its refusing replies and what it stored."""
    if record.handshake is Handshake.FAILED:
        tls = f"TLS handshake failed ({record.tls_failure})"
    else:
        tls = record.version.value if record.version else "plaintext"
    refusals = [
        line[3:][:REPLY_LIMIT]
        for line in record.transcript
        if line.startswith("S: ") and line[3:4] in ("4", "5")
    ]
    stored = len(record.messages)
    told = f", answered {' / '.join(refusals)}" if refusals else ""
    return f"{tls}{told}, {stored} message{'s' if stored != 1 else ''} stored"
