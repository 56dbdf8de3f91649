"""A scoreboard's cells from a run's results, and each column's one-line score."""

from __future__ import annotations

from collections.abc import Sequence

from harness.expectations import expectation_label, tls_text
from harness.labels import risk_of, risk_words
from harness.model import CellResult, Outcome, ReceiverInfo
from harness.report_view import sessions_line
from harness.scoreboard.model import BoardCell, BoardReceiver, Family
from harness.scoreboard.plan import Stated

LISTED = 3  # receiver ids a score names before `and N more`


def board_cell(
    result: CellResult, stated: Stated | None, info: ReceiverInfo | None, sender_log: str | None
) -> BoardCell:
    """Return the scoreboard's cell: the observation, and the judgement only when one is stated."""
    expectation = stated.expectation if stated else None
    return BoardCell(
        receiver=result.receiver,
        sender=result.sender,
        outcome=result.outcome,
        tls=result.tls,
        risk=risk_of(result, info),
        words=risk_words(result, info),
        downgraded=result.downgraded,
        expected=expectation_label(expectation.outcome, tls_text(expectation.tls))
        if expectation
        else None,
        expected_from=stated.suite if stated else None,
        verdict=result.verdict if stated else None,
        note=expectation.note if expectation else "",
        received=result.received,
        detail=result.detail,
        sender_report=result.sender_report,
        message_id=result.message_id,
        sessions=result.sessions,
        sessions_text=sessions_line(result),
        evidence=result.evidence,
        sender_log=sender_log,
        seconds=result.seconds,
    )


def _receivers(ids: Sequence[str]) -> str:
    """Return `a, b, c and 2 more` for a list of receiver ids."""
    head = ", ".join(ids[:LISTED])
    return head + (f" and {len(ids) - LISTED} more" if len(ids) > LISTED else "")


def _plural(count: int, noun: str) -> str:
    """Return `1 receiver`, `2 receivers`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def column_score(sender: str, cells: Sequence[BoardCell], rows: Sequence[BoardReceiver]) -> str:
    """Return a column's score: `delivered to 9 of 22 unsafe receivers; never plaintext after ...`.

    Lab errors are counted apart and never as the sender's; cells that did not run are not counted.
    """
    unsafe = {r.id for r in rows if r.unsafe is not None}
    mine = [c for c in cells if c.sender == sender]
    judged = [c for c in mine if c.outcome is not Outcome.ERROR]
    errors = len(mine) - len(judged)
    at_unsafe = [c for c in judged if c.receiver in unsafe]
    delivered = [c for c in at_unsafe if c.outcome is Outcome.DELIVERED]
    if at_unsafe:
        parts = [f"delivered to {len(delivered)} of {_plural(len(at_unsafe), 'unsafe receiver')}"]
    else:
        parts = ["no unsafe receiver observed"]
    downgraded = [c.receiver for c in judged if c.downgraded]
    if downgraded:
        parts.append(
            f"plaintext after a failed handshake at {_plural(len(downgraded), 'receiver')} "
            f"({_receivers(downgraded)})"
        )
    else:
        parts.append("never plaintext after a failed handshake")
    # a DANE or MTA-STS receiver's own policy can make refusing it right: not counted as missed
    own_policy = {r.id for r in rows if r.family in (Family.DANE, Family.MTA_STS)}
    safe = [c for c in judged if c.receiver not in unsafe | own_policy]
    missed = [c.receiver for c in safe if c.outcome is not Outcome.DELIVERED]
    if missed:
        parts.append(f"did not deliver to {len(missed)} of {len(safe)} safe ({_receivers(missed)})")
    if errors:
        parts.append(f"{_plural(errors, 'lab error')}, not counted against the sender")
    return "; ".join(parts)


__all__ = ["board_cell", "column_score"]
