"""A suite's headline findings, computed from the cells a run observed (never hard-coded)."""

from __future__ import annotations

from harness.expectations import NOT_DELIVERED_OUTCOMES
from harness.model import (
    NOT_DELIVERED,
    CellQuery,
    CellResult,
    HeadlineQuery,
    HeadlineResult,
    ReceiverInfo,
    RunReport,
)
from lab.spec import TlsVersion


def failure_mode(info: ReceiverInfo) -> str | None:
    """Return the receiver's failure mode: no encryption, legacy TLS, a bad certificate, or None."""
    if not info.starttls:
        return "no encryption"
    if info.tls_max.rank < TlsVersion.TLS12.rank:
        return "legacy TLS"
    if not info.authenticated:
        return f"{info.certificate.value} certificate"
    return None


def _facts_match(query: CellQuery, info: ReceiverInfo | None) -> bool:
    """Return True when the receiver's facts satisfy every fact filter the query sets."""
    wanted = (query.unsafe, query.certificate, query.tls, query.starttls)
    if all(w is None for w in wanted):
        return True
    if info is None:
        return False
    legacy = info.tls_max.rank < TlsVersion.TLS12.rank
    checks = [
        query.unsafe is None or (failure_mode(info) is not None) == query.unsafe,
        query.certificate is None or (query.certificate == "valid") == info.authenticated,
        query.tls is None or (query.tls == "legacy") == legacy,
        query.starttls is None or query.starttls == info.starttls,
    ]
    return all(checks)


def matches(query: CellQuery, cell: CellResult, info: ReceiverInfo | None) -> bool:
    """Return True when one observed cell is counted by the query."""
    if query.study is not None and cell.study != query.study:
        return False
    if query.senders and cell.sender not in query.senders:
        return False
    if query.outcome == NOT_DELIVERED:
        if cell.outcome not in NOT_DELIVERED_OUTCOMES:
            return False
    elif query.outcome is not None and cell.outcome.value != query.outcome:
        return False
    return _facts_match(query, info)


def _count(headline: HeadlineQuery, report: RunReport, cells: list[CellResult]) -> int:
    """Return how many cells, receivers or failure modes the matching cells cover."""
    if headline.count == "cells":
        return len(cells)
    receivers = {c.receiver for c in cells}
    if headline.count == "receivers":
        return len(receivers)
    modes = {failure_mode(i) for r in receivers if (i := report.receiver(r)) is not None}
    return len(modes - {None})


def _select(query: CellQuery, report: RunReport) -> list[CellResult]:
    """Return the run's cells the query counts, in report order."""
    return [c for c in report.results if matches(query, c, report.receiver(c.receiver))]


def evaluate(headlines: tuple[HeadlineQuery, ...], report: RunReport) -> tuple[HeadlineResult, ...]:
    """Return each headline with its count over the run's observed cells, and the cells counted."""
    found = []
    for headline in headlines:
        cells = _select(headline.where, report)
        count = _count(headline, report, cells)
        of = _count(headline, report, _select(headline.of, report)) if headline.of else None
        text = headline.text.replace("{count}", str(count)).replace("{of}", str(of))
        found.append(
            HeadlineResult(
                id=headline.id,
                text=text,
                count=count,
                of=of,
                claim=headline.claim,
                cells=tuple(c.id for c in cells),
            )
        )
    return tuple(found)


__all__ = ["evaluate", "failure_mode", "matches"]
