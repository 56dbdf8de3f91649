"""Downgrades: the message arrived in plaintext after a TLS attempt of the same cell failed."""

from __future__ import annotations

from harness.classify import Arrival
from harness.model import Downgrade
from lab.session_facts import EndedBy, Handshake, SessionFacts

__all__ = ["DOWNGRADE_NOTE", "find_downgrade"]

DOWNGRADE_NOTE = "; delivered plaintext after a failed TLS attempt"


def failed_tls(session: SessionFacts) -> str | None:
    """Return how a session's TLS attempt failed, or None when it did not try or succeeded."""
    if session.handshake is Handshake.FAILED:
        return session.tls_failure
    if session.ended_by is EndedBy.CLOSED_AFTER_HANDSHAKE:
        return EndedBy.CLOSED_AFTER_HANDSHAKE.value  # the sender gave up on TLS after it
    return None


def find_downgrade(sessions: list[SessionFacts], arrivals: list[Arrival]) -> Downgrade | None:
    """Return the link between a failed TLS attempt and a later plaintext copy, if both exist.

    A plaintext copy is an arrival without TLS facts; its session (when already recorded)
    bounds which attempts came before it. The latest failed attempt before it is linked.
    """
    plain = [a.session_id for a in arrivals if a.tls is None]
    if not plain:
        return None
    started = {s.session_id: s.started for s in sessions}
    delivered_at = min((started.get(sid, float("inf")) for sid in plain), default=float("inf"))
    tried = [
        s
        for s in sorted(sessions, key=lambda s: s.started)
        if s.session_id not in plain and s.started <= delivered_at and failed_tls(s)
    ]
    if not tried:
        return None
    attempt = tried[-1]
    return Downgrade(
        failed_session=attempt.session_id,
        failure=failed_tls(attempt) or "",
        plaintext_session=plain[0],
    )
