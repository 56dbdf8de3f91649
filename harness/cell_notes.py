"""What a cell's result says besides its outcome: session summaries, receiver facts, notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.classify import Classified
from harness.dane_evidence import dane_published
from harness.model import CellExpectation, Outcome, ReceiverInfo, SessionSummary
from harness.senders import SendReport
from lab.evidence_store import read_faults
from lab.proxy_record import ProxyRecord
from lab.session_facts import EndedBy, SessionFacts
from lab.spec import ReceiverSpec, TlsVersion
from lab.sts_spec import published_sts

__all__ = [
    "blame_the_store",
    "certificate_rejection_note",
    "missing_proxy_note",
    "missing_sessions_note",
    "receiver_info",
    "summarise",
    "tls_expectation",
]


_SHARED: dict[tuple[str, ...], tuple[str, ...]] = {}
SHARED_MAX = 1024  # distinct offers kept (a run has about one per sender configuration)


def shared(values: tuple[str, ...]) -> tuple[str, ...]:
    """Return an equal tuple, the same object for every session that offered the same list.

    A run's cells keep their sessions' offers for the report: 31 cipher names per TLS session
    are about 2.5 KB when each session has its own copies, nothing more when they are shared.
    """
    found = _SHARED.get(values)
    if found is None:
        if len(_SHARED) >= SHARED_MAX:
            _SHARED.clear()
        found = _SHARED.setdefault(values, values)
    return found


def summarise(record: SessionFacts) -> SessionSummary:
    """Return the parts of a session record a report shows."""
    return SessionSummary(
        peer=record.peer,
        starttls=record.starttls_asked,
        handshake=record.handshake.value,
        version=record.version.value if record.version else None,
        cipher=record.cipher,
        alert=record.tls_failure,
        sni=record.sni,
        message_ids=tuple(m.message_id or "" for m in record.messages),
        ended_by=record.ended_by.value,
        group=record.group,
        signature_scheme=record.signature_scheme,
        resumed=record.resumed,
        alert_sent=record.alert_sent,
        offered_versions=shared(record.offered.versions) if record.offered else (),
        offered_ciphers=shared(tuple(c.iana or c.code for c in record.offered.cipher_suites))
        if record.offered
        else (),
        ja4=record.offered.ja4 if record.offered else None,
        session_id=record.session_id,
    )


def receiver_info(spec: ReceiverSpec) -> ReceiverInfo:
    """Return the facts a report shows about a receiver: certificate, TLS range, STARTTLS."""
    return ReceiverInfo(
        id=spec.id,
        description=spec.description,
        certificate=spec.certificate,
        tls_min=spec.tls_min,
        tls_max=spec.tls_max,
        starttls=spec.starttls,
        domain=spec.domain,
        proxy=spec.proxy.vector.value if spec.proxy is not None else None,
        **_published_policy(spec),
    )


def _published_policy(spec: ReceiverSpec) -> dict[str, Any]:
    """Return a receiver's policy fields: its MTA-STS, but `tlsa` first (RFC 8461 section 2)."""
    fields = {"policy": "no-policy-found", **published_sts(spec)}
    return {**fields, "policy": "tlsa"} if dane_published(spec) else fields


def tls_expectation(expected: CellExpectation) -> str | None:
    """Return the TLS part of an expectation as text: a version, `plaintext`, `any` or None."""
    tls = expected.tls
    return tls.value if isinstance(tls, TlsVersion) else tls


def certificate_rejection_note(outcome: Outcome, sessions: list[SessionFacts]) -> str:
    """Return a note when nothing was delivered and every session hung up right after TLS."""
    after_tls = [s.ended_by is EndedBy.CLOSED_AFTER_HANDSHAKE for s in sessions]
    if outcome is Outcome.DELIVERED or not after_tls or not all(after_tls):
        return ""
    return "; the sender rejected the certificate after the handshake"


def blame_the_store(
    seen: Classified, directory: Path, sessions: list[SessionFacts], since: float | None
) -> Classified:
    """Return a lab `error` when the receiver's evidence store failed this cell.

    Decided from the lab's own records only, never the sender's text: a session record naming
    the store failure; or, when the cell's sessions are not all recorded (`since` is then the
    cell's start), a fault in the store's ledger since then (written in place: a full disk
    cannot stop it).
    """
    if seen.outcome is Outcome.ERROR:
        return seen  # already the lab's, with its own reason
    failures = [r.store_error for r in sessions if r.store_error]
    if since is not None:
        failures += [
            f"{f.get('file')}: {f.get('error')}"
            for f in read_faults(directory)
            if isinstance(f.get("at"), int | float) and f["at"] >= since
        ]
    if not failures:
        return seen
    return Classified(
        Outcome.ERROR,
        None,
        f"lab failure: the receiver's evidence store failed ({failures[0]}); sender: {seen.detail}",
    )


def missing_sessions_note(opened: int, sessions: list[SessionFacts]) -> str:
    """Return a note when the receiver recorded fewer sessions than were opened to it."""
    if len(sessions) < opened:
        return f"; receiver recorded {len(sessions)} of {opened} sessions"
    return ""


def missing_proxy_note(report: SendReport, records: list[ProxyRecord]) -> str:
    """Return a note when the proxy recorded fewer connections than the sender opened."""
    if len(records) < len(report.attempts):
        return f"; proxy recorded {len(records)} of {len(report.attempts)} connections"
    return ""
