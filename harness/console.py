"""Plain-text output for the terminal: progress lines, the matrix, totals, endpoints."""

from __future__ import annotations

from harness.labels import TEXT_MARKS, expected_label, outcome_label
from harness.model import CellResult, RunReport, Verdict
from harness.report_view import incomplete_banner, study_line
from lab.endpoints import ReceiverEndpoint

MARKS = TEXT_MARKS


def progress(index: int, total: int, result: CellResult) -> None:
    """Print one progress line for a finished cell."""
    width = len(str(total))
    line = (
        f"[{index:>{width}}/{total}] {result.id:<32} {outcome_label(result):<20} "
        f"{MARKS[result.verdict]:<5} ({result.seconds:.2f} s)"
    )
    if result.verdict is not Verdict.PASS:
        line += f"\n      expected {expected_label(result)}; {result.detail}"
    print(line, flush=True)


def matrix(report: RunReport) -> str:
    """Return the receiver x sender matrix as an aligned text table."""
    senders = [s.id for s in report.senders]
    rows = [["receiver", *senders]]
    for receiver in report.receivers:
        row = [receiver]
        for sender in senders:
            cell = report.cell(receiver, sender)
            row.append("-" if cell is None else _matrix_cell(cell))
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _matrix_cell(cell: CellResult) -> str:
    """Return one matrix cell with a marker for non-pass verdicts."""
    text = outcome_label(cell)
    if cell.verdict is Verdict.PASS:
        return text
    return f"{text} [{MARKS[cell.verdict]}]"


def totals(report: RunReport) -> str:
    """Return the pass/fail/error counts and the study score."""
    counts = {v: sum(r.verdict is v for r in report.results) for v in Verdict}
    line = (
        f"{len(report.results)} cells: {counts[Verdict.PASS]} pass, "
        f"{counts[Verdict.FAIL]} fail, {counts[Verdict.ERROR]} error"
    )
    if study := study_line(report):
        line += f"\n{study}"
    if banner := incomplete_banner(report):
        line += f"\n{banner}"
    return line


def all_passed(report: RunReport) -> bool:
    """Return True when every cell that ran passed."""
    return all(r.verdict is Verdict.PASS for r in report.results)


def print_endpoints(endpoints: list[ReceiverEndpoint]) -> None:
    """Print where each receiver listens, for a person at a terminal."""
    for e in endpoints:
        print(f"{e.receiver:<14} {e.host}:{e.port:<6} MX {e.mx_host:<28} evidence {e.evidence_dir}")
    print("receivers ready; press Ctrl-C to stop", flush=True)
