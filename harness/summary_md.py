"""summary.md: the matrix on the risk scale with match marks, then senders, receivers, cells."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from harness.labels import (
    MARKS,
    MATCH,
    MATCH_LEGEND,
    NOT_RUN,
    RISK_SCALE,
    expected_label,
    match_text,
    outcome_label,
    risk_of,
    risk_swatch,
    risk_words,
)
from harness.model import CellResult, RunReport, Verdict
from harness.report_view import (
    POLICY_NOTE,
    axes,
    claim_text,
    column_sentence,
    incomplete_banner,
    ordered,
    policy_models,
    provenance_rows,
    receiver_facts,
    row_sentence,
    sessions_line,
    study_line,
    totals,
)


def _md(text: str) -> str:
    """Return text safe inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def cell_text(report: RunReport, cell: CellResult | None) -> str:
    """Return a matrix cell: risk swatch and words, match mark with the expectation, note."""
    if cell is None:
        return NOT_RUN
    info = report.receiver(cell.receiver)
    text = f"{risk_swatch(risk_of(cell, info))} {risk_words(cell, info)} · {match_text(cell)}"
    text += " ★" if cell.study else ""
    return f"{text} · _{cell.note}_" if cell.note else text


def _legend() -> list[str]:
    """Return the risk scale and the match marks as Markdown list items."""
    out = ["Risk (what the delivery means for the message):", ""]
    out += [f"- {swatch} **{name}**: {meaning}" for name, swatch, meaning in RISK_SCALE.values()]
    out += ["", "Match (observed against the suite's expectation; never a safety mark):", ""]
    out += [f"- {MARKS[v]} **{MATCH[v]}**: {MATCH_LEGEND[v]}" for v in Verdict]
    return [*out, "- ★ study cell: a cell of the published study this suite reproduces", ""]


def _headline(report: RunReport) -> list[str]:
    """Return the headline findings with the cells each counts and how it compares."""
    if not report.headline:
        return []
    out = ["## Headline findings", ""]
    for finding in report.headline:
        claim = claim_text(finding, report.complete)
        mark = {True: "✅ ", False: "❌ ", None: ""}[finding.matches_claim]
        counted = ", ".join(f"`{c}`" for c in finding.cells) or "none"
        out.append(f"- {mark}**{_md(finding.text)}**" + (f" ({claim})" if claim else ""))
        out.append(f"  cells counted: {counted}")
    return [*out, ""]


def _evidence(report: RunReport, c: CellResult) -> list[str]:
    """Return the evidence section of one cell."""
    info = report.receiver(c.receiver)
    risk = risk_of(c, info)
    cipher = f" ({c.tls.cipher})" if c.tls else ""
    out = [f"### `{c.id}` {risk_swatch(risk)} {RISK_SCALE[risk][0]} · {MARKS[c.verdict]}", ""]
    out += [f"Outcome: {outcome_label(c)}{cipher}; expected: {expected_label(c)}.", ""]
    out += [f"Match: {MATCH[c.verdict]}. Risk: {risk_words(c, info)}.", ""]
    if c.note:
        out += [f"Note: {c.note}", ""]
    if c.received is None:
        out += ["Received header: no message arrived.", ""]
    else:
        fence = "`" * max(3, 1 + max((len(m) for m in re.findall("`+", c.received)), default=0))
        out += ["Received header:", "", f"{fence}text", f"Received: {c.received}", fence, ""]
    if c.sessions:
        out += [f"Receiver sessions: {sessions_line(c)}", ""]
    if c.evidence:
        files = ", ".join(f"[{link.kind}](<{link.path}>)" for link in c.evidence)
        out += [f"Evidence files: {files}", ""]
    said = c.sender_report.partition(": ")[2]
    if c.sender_report and (not said or said not in c.detail):
        out += [f"Sender report: {' '.join(c.sender_report.split())}", ""]
    return [*out, f"Detail: {c.detail or '(none)'}", ""]


def summary_lines(
    report: RunReport, finish: Callable[[CellResult], CellResult] | None = None
) -> Iterator[str]:
    """Yield summary.md's lines (without line ends), the cells' evidence one cell at a time.

    `finish` (report_view.CellFinish) completes each cell just before its evidence is shown.
    """
    rows, cols = axes(report)
    out = [f"# Sender TLS Lab: `{report.suite}` on `{report.backend}`", ""]
    if report.title:
        out += [report.title, ""]
    out += [f"Run `{report.run_id}`, started {report.started}, finished {report.finished}.", ""]
    if banner := incomplete_banner(report):
        out += [f"> **{banner}**", ""]
    out += _headline(report)
    out += _legend()
    out += ["| receiver \\ sender | " + " | ".join(f"`{_md(s)}`" for s in cols) + " |"]
    out += ["|---" * (len(cols) + 1) + "|"]
    for r in rows:
        cells = [_md(cell_text(report, report.cell(r, s))) for s in cols]
        out.append(f"| `{_md(r)}` | " + " | ".join(cells) + " |")
    out.append("")
    if line := study_line(report):
        out += [line, ""]
    count = totals(report)
    out += [
        f"Totals: {count[Verdict.PASS]} as expected, {count[Verdict.FAIL]} differ, "
        f"{count[Verdict.ERROR]} lab error ({len(report.results)} cells).",
        "",
    ]
    if models := policy_models(report):
        out += [
            f"> Note: the sender columns {', '.join(f'`{m}`' for m in models)} {POLICY_NOTE}.",
            "",
        ]
    out += ["## Senders", ""]
    for s in report.senders:
        what = "; ".join(x for x in (f"models {s.models}" if s.models else "", s.description) if x)
        out.append(
            f"- `{s.id}` (driver `{s.driver}`)" + (f": {' '.join(what.split())}" if what else "")
        )
        out.append(f"  {column_sentence(report, s.id)}")
    out += ["", "## Receivers", ""]
    for r in rows:
        info = report.receiver(r)
        facts = f" ({receiver_facts(info)})" if info else ""
        described = f": {' '.join(info.description.split())}" if info and info.description else ""
        out += [f"- `{r}`{facts}{described}", f"  {row_sentence(report, r)}"]
    if rows_of := provenance_rows(report):
        out += ["", "## Provenance", ""]
        out += [f"- {label}: `{_md(value)}`" for label, value in rows_of]
    out += ["", "## Evidence per cell", ""]
    yield from out
    for c in ordered(report):
        yield from _evidence(report, finish(c) if finish else c)


def render_summary(report: RunReport) -> str:
    """Return summary.md: title, legend, the matrix, counts, the policy note, evidence."""
    return "\n".join(summary_lines(report))


__all__ = ["cell_text", "render_summary", "summary_lines"]
