"""What every rendering of a run shows: matrix axes, counts, risk per cell, row/column sentences."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from harness.cell_index import cells_of
from harness.labels import RISK_SCALE, risk_name, risk_of
from harness.model import (
    CellResult,
    EvidenceLink,
    HeadlineResult,
    Outcome,
    ReceiverInfo,
    RunReport,
    Verdict,
    cell_id,
)
from harness.session_text import downgrade_text, session_extras
from lab.spec import TlsVersion

POLICY_NOTE = (
    "are driven by the `reference` driver: they are policy models of the named services, "
    "not the services themselves"
)


Evidence = Callable[[CellResult], tuple[EvidenceLink, ...]]


class CellFinish:
    """Sets a cell's `risk`, and the evidence found for it (kept when none is found), as written.

    One cell at a time: the writers call it per cell instead of copying the whole report first.
    Each cell's evidence is looked up once, however many writers ask for the cell.
    """

    def __init__(self, report: RunReport, evidence: Evidence | None = None) -> None:
        """Bind to the report (its receivers' facts) and an evidence finder, if any."""
        self.report, self.evidence = report, evidence
        self._found: dict[int, tuple[EvidenceLink, ...]] = {}  # by id() of the report's cells

    def __call__(self, cell: CellResult) -> CellResult:
        """Return the cell with its risk and evidence set."""
        update: dict[str, object] = {"risk": risk_of(cell, self.report.receiver(cell.receiver))}
        if self.evidence is not None:
            found = self._found.get(id(cell))
            if found is None:
                found = self._found[id(cell)] = self.evidence(cell)
            if found:
                update["evidence"] = found
        return cell.model_copy(update=update)


def assess(report: RunReport, evidence: Evidence | None = None) -> RunReport:
    """Return the report with every cell's `risk` set from its facts and its receiver's facts.

    With `evidence` (harness.evidence_links.EvidenceFinder), each cell's evidence found is set in
    the same copy (kept when none is found).
    """
    finish = CellFinish(report, evidence)
    return report.model_copy(update={"results": tuple(finish(c) for c in report.results)})


def axes(report: RunReport) -> tuple[list[str], list[str]]:
    """Return (rows, columns): the report's receivers and senders, then any others in results."""
    rows, cols = list(report.receivers), [s.id for s in report.senders]
    rows += [r for r in dict.fromkeys(c.receiver for c in report.results) if r not in rows]
    cols += [s for s in dict.fromkeys(c.sender for c in report.results) if s not in cols]
    return rows, cols


def ordered(report: RunReport) -> list[CellResult]:
    """Return the results in matrix order (row-major), then any not on the matrix axes."""
    rows, cols = axes(report)
    return sorted(report.results, key=lambda c: (rows.index(c.receiver), cols.index(c.sender)))


def totals(report: RunReport) -> dict[Verdict, int]:
    """Return how many cells have each verdict."""
    return {v: sum(c.verdict is v for c in report.results) for v in Verdict}


def policy_models(report: RunReport) -> list[str]:
    """Return the ids of the sender columns driven by the reference (policy model) driver."""
    return [s.id for s in report.senders if s.driver == "reference"]


def sessions_line(cell: CellResult) -> str:
    """Return the receiver's session records of a cell as one line."""
    parts = []
    for s in cell.sessions:
        tls = f" {s.version} {s.cipher or ''}".rstrip() if s.version else ""
        alert = f", alert {s.alert}" if s.alert else ""
        starttls = "STARTTLS" if s.starttls else "no STARTTLS"
        parts.append(
            f"{s.peer}: {starttls}, handshake {s.handshake}{tls}{alert}" + session_extras(s)
        )
    if cell.downgrade is not None:
        parts.append(downgrade_text(cell.downgrade))
    return "; ".join(parts)


def study_line(report: RunReport) -> str:
    """Return `Study cells reproduced: 14/14`, or `8 of 14 study cells run, 8 reproduced`."""
    passed, ran = report.study_reproduced
    planned = report.study_planned
    if report.complete:
        return f"Study cells reproduced: {passed}/{ran}" if ran else ""
    return f"{ran} of {planned} study cells run, {passed} reproduced" if planned else ""


def incomplete_banner(report: RunReport) -> str:
    """Return why the run is incomplete and what is missing, or '' for a complete run."""
    if report.complete:
        return ""
    planned = len(report.results) + len(report.not_run)
    why = f"interrupted by {report.stopped_by}" if report.stopped_by else "a subset of the suite"
    missing = ", ".join(cell_id(c.receiver, c.sender) for c in report.not_run[:6])
    more = f" and {len(report.not_run) - 6} more" if len(report.not_run) > 6 else ""
    listed = f" (not run: {missing}{more})" if missing else ""
    return (
        f"Incomplete run ({why}): {len(report.results)} of {planned} cells run{listed}. "
        "Its counts cover only the cells that ran."
    )


def claim_text(finding: HeadlineResult, complete: bool) -> str:
    """Return how a headline compares with the study: `as the study reported`, or what differs."""
    if finding.claim is None:
        return ""
    if finding.matches_claim:
        return "as the study reported"
    partial = " (incomplete run: only the cells that ran are counted)" if not complete else ""
    return f"differs from the study, which reported {finding.claim}{partial}"


def provenance_rows(report: RunReport) -> list[tuple[str, str]]:
    """Return the provenance of the run as (label, value) rows; none for an older results.json."""
    p = report.provenance
    if p is None:
        return []
    return [
        ("lab", f"sender-tls-lab {p.lab_version}, commit {p.lab_commit}"),
        ("Python", p.python),
        ("OpenSSL", p.openssl),
        ("aiosmtpd", p.aiosmtpd),
        ("backend", p.backend),
        ("host", p.host),
        ("suite file", p.suite_file),
        ("suite sha256", p.suite_sha256),
        ("started", p.started),
        ("finished", p.finished),
    ]


def unsafe_reason(info: ReceiverInfo) -> str | None:
    """Return why a receiver is unsafe to deliver to (no TLS >= 1.2, bad certificate), or None."""
    if not info.starttls:
        return "offers no STARTTLS"
    if info.tls_max.rank < TlsVersion.TLS12.rank:
        return f"offers at most {info.tls_max.value}"
    if not info.authenticated:
        return f"{info.certificate.value} certificate"
    return None


def receiver_facts(info: ReceiverInfo) -> str:
    """Return a receiver's facts in words: `STARTTLS, TLSv1.0 only, certificate valid`."""
    if not info.starttls:
        return "no STARTTLS (plaintext only)"
    if info.tls_min is info.tls_max:
        span = f"{info.tls_min.value} only"
    else:
        span = f"{info.tls_min.value} to {info.tls_max.value}"
    return f"STARTTLS, {span}, certificate {info.certificate.value}"


def _risk_counts(report: RunReport, cells: list[CellResult]) -> str:
    """Return `legacy TLS 1.0/1.1: 2, not delivered: 1` over the cells' risk classes."""
    counts = Counter(risk_of(c, report.receiver(c.receiver)) for c in cells)
    return ", ".join(f"{risk_name(r)}: {counts[r]}" for r in RISK_SCALE if counts[r])


def column_sentence(report: RunReport, sender: str) -> str:
    """Return one plain sentence on a sender column: `X delivered to 6 of 7 unsafe receivers`."""
    cells = cells_of(report.results, "sender", sender)
    infos = {c.receiver: report.receiver(c.receiver) for c in cells}
    unsafe = [c for c in cells if (i := infos[c.receiver]) is not None and unsafe_reason(i)]
    delivered = [c for c in unsafe if c.outcome is Outcome.DELIVERED]
    if not unsafe:
        head = f"{sender}: no unsafe receiver in this run"
    else:
        head = f"{sender} delivered to {len(delivered)} of {len(unsafe)} unsafe receivers"
    counts = _risk_counts(report, cells)
    return f"{head} ({counts})." if counts else f"{head}."


def row_sentence(report: RunReport, receiver: str) -> str:
    """Return one plain sentence on a receiver row: its facts and what the senders did."""
    cells = cells_of(report.results, "receiver", receiver)
    info = report.receiver(receiver)
    delivered = sum(c.outcome is Outcome.DELIVERED for c in cells)
    why = unsafe_reason(info) if info else None
    safety = f"unsafe ({why})" if why else ("safe" if info else "facts not recorded")
    counts = _risk_counts(report, cells)
    head = f"{receiver} is {safety}: {delivered} of {len(cells)} senders delivered"
    return f"{head} ({counts})." if counts else f"{head}."


__all__ = [
    "POLICY_NOTE",
    "CellFinish",
    "assess",
    "axes",
    "claim_text",
    "column_sentence",
    "incomplete_banner",
    "ordered",
    "policy_models",
    "provenance_rows",
    "receiver_facts",
    "row_sentence",
    "sessions_line",
    "study_line",
    "totals",
    "unsafe_reason",
]
