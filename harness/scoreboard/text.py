"""scoreboard.md: the same board as Markdown tables, one per receiver family."""

from __future__ import annotations

from harness.labels import MARKS, risk_name, risk_swatch
from harness.scoreboard.model import BoardCell, Scoreboard


def _md(text: str) -> str:
    """Return text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def md_cell(cell: BoardCell | None) -> str:
    """Return one table cell: swatch, risk name and words, and the mark or `observed only`."""
    if cell is None:
        return "not run"
    mark = f"{MARKS[cell.verdict]}" if cell.verdict else "observed only"
    return _md(f"{risk_swatch(cell.risk)} {risk_name(cell.risk)}: {cell.words} ({mark})")


def render_markdown(board: Scoreboard) -> str:
    """Return scoreboard.md: header and versions, column scores, one table per family."""
    lines = [
        "# Sender TLS Lab: the scoreboard",
        "",
        f"Run `{board.run_id}` on {board.backend}, {board.started} to {board.finished} "
        f"({board.wall_seconds:g} s).",
        "",
    ]
    if board.selection:
        lines += [f"**A subset of the board:** `{board.selection}`.", ""]
    if not board.complete:
        lines += [f"**Incomplete:** {len(board.not_run)} cells not run.", ""]
    lines += [f"- {_md(v.software)} {_md(v.version)} ({v.sender})" for v in board.versions]
    lines += ["", "## Scores", ""]
    lines += [f"- **{s.id}** ({_md(s.software)}): {_md(s.score)}" for s in board.senders]
    head = "| receiver | " + " | ".join(f"{s.id} ({_md(s.software)})" for s in board.senders)
    rule = "|---" * (len(board.senders) + 1) + "|"
    family = None
    for row in board.receivers:
        if row.family is not family:
            family = row.family
            lines += ["", f"## {family.heading}", "", head + " |", rule]
        cells = " | ".join(md_cell(board.cell(row.id, s.id)) for s in board.senders)
        safety = f"unsafe: {row.unsafe}" if row.unsafe else "safe"
        lines.append(f"| {row.id} ({_md(safety)}) | {cells} |")
    return "\n".join(lines) + "\n"


__all__ = ["md_cell", "render_markdown"]
