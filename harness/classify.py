"""Pure functions: evidence -> Outcome, and (expectation, outcome) -> Verdict."""

from __future__ import annotations

import dataclasses

from harness.model import CellExpectation, Outcome, TlsFacts, Verdict
from harness.senders.base import SendAction, SendReport
from lab.spec import TlsVersion

SENDER_ACTIONS = {
    SendAction.REFUSED: Outcome.REFUSED,
    SendAction.DEFERRED: Outcome.DEFERRED,
    SendAction.FALLBACK: Outcome.FALLBACK,
}


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One copy of the test message as the receiver stored it."""

    received: str
    header_tls: TlsFacts | None
    session_version: str | None
    session_cipher: str | None


@dataclasses.dataclass(frozen=True)
class Classified:
    """An observed outcome, the TLS facts of the delivery, and why."""

    outcome: Outcome
    tls: TlsFacts | None
    detail: str


def classify(report: SendReport, arrivals: list[Arrival], portal_exists: bool) -> Classified:
    """Decide what happened from the receiver's evidence first, the sender's account second."""
    if arrivals:
        return _classify_arrival(report, arrivals)
    if report.lab_fault:
        return Classified(Outcome.ERROR, None, f"lab failure: {report.reason}")
    if report.action is SendAction.DELIVERED:
        return Classified(
            Outcome.ERROR, None, f"sender says '{report.reason}' but the receiver stored nothing"
        )
    if report.action is SendAction.FALLBACK and not portal_exists:
        return Classified(Outcome.ERROR, None, "sender says fallback but the portal has no copy")
    if report.action in SENDER_ACTIONS:
        return Classified(SENDER_ACTIONS[report.action], None, report.reason)
    return Classified(Outcome.ERROR, None, f"sender failed: {report.reason}")


def _classify_arrival(report: SendReport, arrivals: list[Arrival]) -> Classified:
    """Classify a message that arrived, checking the header against the session record."""
    first = arrivals[0]
    facts = first.header_tls
    recorded = first.session_version
    if (facts.version.value if facts else None) != recorded or (
        facts is not None and facts.cipher != first.session_cipher
    ):
        return Classified(
            Outcome.ERROR,
            facts,
            f"evidence disagrees: Received header says {_describe(facts)}, "
            f"session record says {recorded or 'plaintext'} {first.session_cipher or ''}".rstrip(),
        )
    detail = f"arrived {_describe(facts)}; sender: {report.reason}"
    if len(arrivals) > 1:
        detail += f"; stored {len(arrivals)} times"
    return Classified(Outcome.DELIVERED, facts, detail)


def _describe(facts: TlsFacts | None) -> str:
    """Return 'over TLSv1.2 (cipher)' or 'in plaintext'."""
    return f"over {facts.version.value} ({facts.cipher})" if facts else "in plaintext"


def judge(expected: CellExpectation, outcome: Outcome, tls: TlsFacts | None) -> Verdict:
    """Compare an observed outcome (and TLS version of a delivery) with the expectation."""
    if outcome is Outcome.ERROR:
        return Verdict.ERROR
    if outcome is not expected.outcome:
        return Verdict.FAIL
    if outcome is Outcome.DELIVERED and expected.tls is not None:
        if expected.tls == "plaintext":
            return Verdict.PASS if tls is None else Verdict.FAIL
        if expected.tls == "any":
            return Verdict.PASS if tls is not None else Verdict.FAIL
        return Verdict.PASS if tls is not None and tls.version == expected.tls else Verdict.FAIL
    return Verdict.PASS


def describe_expectation(expected: CellExpectation) -> str:
    """Return an expectation as text: 'delivered TLSv1.0', 'delivered plaintext', 'refused'."""
    if expected.outcome is Outcome.DELIVERED and expected.tls is not None:
        tls = expected.tls.value if isinstance(expected.tls, TlsVersion) else expected.tls
        return f"delivered {'over any TLS' if tls == 'any' else tls}"
    return expected.outcome.value
