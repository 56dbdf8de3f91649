"""Pure functions: evidence -> Outcome, and (expectation, outcome) -> Verdict."""

from __future__ import annotations

import dataclasses

from harness.dsn import DsnAction
from harness.expectations import NOT_DELIVERED_OUTCOMES, expectation_label, tls_text
from harness.model import NOT_DELIVERED, CellExpectation, Outcome, TlsExpectation, TlsFacts, Verdict
from harness.senders.base import SendAction, SendReport
from lab.spec import TlsVersion

SENDER_ACTIONS = {
    SendAction.REFUSED: Outcome.REFUSED,
    SendAction.DEFERRED: Outcome.DEFERRED,
    SendAction.FALLBACK: Outcome.FALLBACK,
}


@dataclasses.dataclass(frozen=True)
class Arrival:
    """One stored copy of the test message: the lab's record of it and the header on disk."""

    received: str | None  # the stored .eml's top Received header as stored; None: unreadable
    recorded: str  # the Received header the receiver's record says it wrote
    tls: TlsFacts | None  # the session's TLS facts from the receiver's record; None: plaintext
    eml: str = ""
    session_id: str = ""


@dataclasses.dataclass(frozen=True)
class Bounce:
    """A message naming the test message at the lab's bounce mailbox, and its DSN action.

    `action` is what a well-formed DSN (RFC 3464) says happened to the test recipient; None when
    the message is no well-formed DSN. Only `failed` is a refusal.
    """

    receiver: str
    rcpt: str
    received: str
    summary: str
    action: DsnAction | None

    @property
    def refuses(self) -> bool:
        """Return True for a DSN saying delivery to the recipient failed."""
        return self.action is DsnAction.FAILED

    def describe(self) -> str:
        """Return where it arrived and what it says, on one line."""
        kind = f"DSN ({self.action.value})" if self.action else "message that is no valid DSN"
        return f"{kind} at {self.rcpt} (stored by {self.receiver}): {self.summary}"


@dataclasses.dataclass(frozen=True)
class Watched:
    """What the lab saw while watching for a message handed to an external sender."""

    bounces: tuple[Bounce, ...]
    timeout: float
    waited: float


@dataclasses.dataclass(frozen=True)
class Classified:
    """An observed outcome, the TLS facts of the delivery, and why."""

    outcome: Outcome
    tls: TlsFacts | None
    detail: str
    received: str | None = None  # the Received header of the copy the outcome rests on


def classify(
    report: SendReport,
    arrivals: list[Arrival],
    portal_exists: bool,
    watched: Watched | None = None,
) -> Classified:
    """Decide what happened from the receiver's evidence first, the sender's account second."""
    if arrivals:
        arrived = _classify_arrival(report, arrivals)
        return dataclasses.replace(arrived, detail=arrived.detail + _dsn_notes(watched, ()))
    if report.lab_fault:
        return Classified(Outcome.ERROR, None, f"lab failure: {report.reason}")
    if report.action is SendAction.SUBMITTED:
        return _classify_submitted(report, watched)
    if report.action is SendAction.DELIVERED:
        return Classified(
            Outcome.ERROR, None, f"sender says '{report.reason}' but the receiver stored nothing"
        )
    if report.action is SendAction.FALLBACK and not portal_exists:
        return Classified(Outcome.ERROR, None, "sender says fallback but the portal has no copy")
    if report.action in SENDER_ACTIONS:
        return Classified(SENDER_ACTIONS[report.action], None, report.reason)
    return Classified(Outcome.ERROR, None, f"sender failed: {report.reason}")


def _classify_submitted(report: SendReport, watched: Watched | None) -> Classified:
    """Classify a message an external sender accepted: a failed DSN proves refusal; else unseen."""
    if watched is None:
        return Classified(Outcome.ERROR, None, "sender submitted the message but nobody watched")
    failed = next((b for b in watched.bounces if b.refuses), None)
    if failed is not None:
        detail = (
            f"bounce for this message arrived at {failed.rcpt} (stored by {failed.receiver}): "
            f"{failed.summary}; sender: {report.reason}"
        )
        return Classified(Outcome.REFUSED, None, detail + _dsn_notes(watched, (failed,)))
    detail = (
        f"neither the message nor a bounce (a DSN with Action: failed) arrived within "
        f"{watched.timeout:g} s; sender: {report.reason}"
    )
    return Classified(Outcome.NOT_OBSERVED, None, detail + _dsn_notes(watched, ()))


def _dsn_notes(watched: Watched | None, shown: tuple[Bounce, ...]) -> str:
    """Return a note listing the DSNs (delays, successes, malformed) that decided nothing."""
    others = [b for b in (watched.bounces if watched else ()) if b not in shown]
    if not others:
        return ""
    return "; also seen: " + "; ".join(b.describe() for b in others)


def _classify_arrival(report: SendReport, arrivals: list[Arrival]) -> Classified:
    """Classify a delivery from the receiver's records, each copy's stored header checked.

    A stored header that is not exactly the one the receiver recorded means the evidence was
    changed on disk: a lab error. Copies whose TLS facts differ (one message delivered twice)
    are all listed and the cell is judged on the weakest, so a sender never looks safer than
    its weakest delivery: plaintext, then the oldest version, then the fewest key bits.
    """
    for copy in arrivals:
        if copy.received != copy.recorded:
            return Classified(
                Outcome.ERROR,
                copy.tls,
                f"evidence changed on disk: the top Received header of {copy.eml or 'a copy'} "
                f"is not the one the receiver recorded (stored: {copy.received!r}; "
                f"recorded: {copy.recorded!r})",
                copy.received,
            )
    weakest = min(arrivals, key=_strength)
    detail = f"arrived {_describe(weakest.tls)}; sender: {report.reason}"
    if len(arrivals) > 1:
        detail += f"; stored {len(arrivals)} times"
        seen = list(dict.fromkeys(_describe(copy.tls) for copy in arrivals))
        if len(seen) > 1:
            detail += f" with different TLS ({', '.join(seen)}): judged on the weakest copy"
    return Classified(Outcome.DELIVERED, weakest.tls, detail, weakest.received)


def _strength(copy: Arrival) -> tuple[int, int]:
    """Order copies by TLS strength: plaintext first, then version, then key bits."""
    if copy.tls is None:
        return (-1, 0)
    return (copy.tls.version.rank, copy.tls.bits or 0)


def _describe(facts: TlsFacts | None) -> str:
    """Return 'over TLSv1.2 (cipher)' or 'in plaintext'."""
    return f"over {facts.version.value} ({facts.cipher})" if facts else "in plaintext"


def judge(expected: CellExpectation, outcome: Outcome, tls: TlsFacts | None) -> Verdict:
    """Compare an observed outcome (and TLS version of a delivery) with the expectation."""
    if outcome is Outcome.ERROR:
        return Verdict.ERROR
    if expected.outcome == NOT_DELIVERED:
        return Verdict.PASS if outcome in NOT_DELIVERED_OUTCOMES else Verdict.FAIL
    if outcome is not expected.outcome:
        return Verdict.FAIL
    if outcome is Outcome.DELIVERED and expected.tls is not None:
        return Verdict.PASS if _tls_matches(expected.tls, tls) else Verdict.FAIL
    return Verdict.PASS


def _tls_matches(expected: TlsExpectation, tls: TlsFacts | None) -> bool:
    """Return True when a delivery's TLS facts meet a version, `>=` version, plaintext or any."""
    if expected == "plaintext":
        return tls is None
    if tls is None:
        return False
    if expected == "any":
        return True
    if expected.startswith(">="):
        return tls.version.rank >= TlsVersion(expected.removeprefix(">=")).rank
    return tls.version == expected


def describe_expectation(expected: CellExpectation) -> str:
    """Return an expectation as text: 'delivered TLSv1.0', 'delivered TLS>=1.2', 'not delivered'."""
    return expectation_label(expected.outcome, tls_text(expected.tls))
