"""A session's offer, negotiation and end, and a downgrade, as report text."""

from __future__ import annotations

from harness.model import Downgrade, SessionSummary

__all__ = ["downgrade_text", "session_extras"]


def session_extras(s: SessionSummary) -> str:
    """Return what the client offered, what else was negotiated, and how the session ended."""
    extras = []
    if s.offered_versions:
        suites = len(s.offered_ciphers)
        extras.append(f"offered {'/'.join(s.offered_versions)} with {suites} cipher suites")
    if s.group:
        extras.append(f"group {s.group}")
    if s.signature_scheme:
        extras.append(f"signature {s.signature_scheme}")
    if s.resumed:
        extras.append("resumed")
    if s.ja4:
        extras.append(f"JA4 {s.ja4}")
    if s.ended_by:
        extras.append(f"ended by {s.ended_by}")
    return "".join(f", {extra}" for extra in extras)


def downgrade_text(d: Downgrade) -> str:
    """Return the two linked sessions of a downgrade."""
    return (
        f"downgraded: session {d.failed_session} failed TLS ({d.failure}), "
        f"then session {d.plaintext_session} delivered in plaintext"
    )
