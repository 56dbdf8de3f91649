"""index.html: senders as columns by software, receiver states as rows by family, risk colours."""

from __future__ import annotations

import html
from urllib.parse import quote

from harness.html_report import CSS, EVIDENCE_NAMES
from harness.labels import HTML_MARKS, MATCH, MATCH_LEGEND, RISK_SCALE, risk_name
from harness.model import Verdict
from harness.report_view import receiver_facts
from harness.scoreboard.model import BoardCell, BoardReceiver, BoardSender, Scoreboard

OBSERVED_ONLY = "observed only"
OBSERVED_ONLY_MEANS = "no suite states an expectation for this pair, so the cell is not judged"
BOARD_CSS = (
    ".matrix thead th.group{text-align:center;border-bottom:3px solid currentColor}"
    "tr.family th{font-size:1.05rem;padding-top:1rem;text-align:left}"
    "tr.scores td{background:none;color:inherit;font-size:12px;font-style:italic;min-width:10rem}"
    ".obs{display:inline-block;margin-top:.25rem;font-size:12px;border:1px dashed #fff;"
    "border-radius:4px;padding:0 .35rem}.versions{display:flex;flex-wrap:wrap;gap:.2rem 1.5rem;"
    "margin:.3rem 0}.versions b{margin-right:.3rem}.unsafe{color:#cf222e}"
)


def _e(text: object) -> str:
    """Return text escaped for HTML element content and attribute values."""
    return html.escape(str(text), quote=True)


def _groups(senders: tuple[BoardSender, ...]) -> list[tuple[str, int]]:
    """Return (software, number of columns) in column order."""
    groups: list[tuple[str, int]] = []
    for sender in senders:
        if groups and groups[-1][0] == sender.software:
            groups[-1] = (sender.software, groups[-1][1] + 1)
        else:
            groups.append((sender.software, 1))
    return groups


def _not_run(receiver: str, sender: str) -> str:
    """Return the `<td>` of a cell that did not run."""
    return (
        f'<td class="not-run" data-cell="{_e(receiver)}-{_e(sender)}" data-outcome="not-run" '
        'data-risk="not-run" data-verdict="not-run">not run</td>'
    )


def _evidence(cell: BoardCell) -> str:
    """Return the cell's evidence: Received header, sessions, links to its files, the detail."""
    if cell.received is None:
        body = "<p>no message arrived</p>"
    else:
        body = f'<pre class="received">Received: {_e(cell.received)}</pre>'
    if cell.sessions_text:
        body += f"<p>sessions: {_e(cell.sessions_text)}</p>"
    links = [
        f'<a href="{_e(quote(link.path))}">{EVIDENCE_NAMES[link.kind]}</a>'
        for link in cell.evidence
    ]
    if cell.sender_log:
        links.append(f'<a href="{_e(quote(cell.sender_log))}">sender log</a>')
    if links:
        body += f'<p class="files">{" · ".join(links)}</p>'
    if cell.sender_report:
        body += f"<p>sender: {_e(cell.sender_report)}</p>"
    return body + f"<p>{_e(cell.detail)}</p>"


def board_td(cell: BoardCell) -> str:
    """Return one cell: risk colour and words, the match mark or `observed only`, its evidence."""
    verdict = cell.verdict.value if cell.verdict else "observed-only"
    hooks = (
        f'data-cell="{_e(cell.id)}" data-outcome="{_e(cell.outcome.value)}" '
        f'data-risk="{cell.risk.value}" data-verdict="{verdict}"'
    )
    face = [f'<span class="rname">{_e(risk_name(cell.risk))}</span>']
    face.append(f'<span class="what">{_e(cell.words)}</span>')
    if cell.tls:
        face.append(f'<span class="cipher">{_e(cell.tls.cipher)}</span>')
    if cell.verdict is not None:
        face.append(
            f'<span class="match">{HTML_MARKS[cell.verdict]} {_e(MATCH[cell.verdict])}</span>'
            f'<span class="expected">expected: {_e(cell.expected)} ({_e(cell.expected_from)})'
            "</span>"
        )
    else:
        face.append(f'<span class="obs">{OBSERVED_ONLY}</span>')
    if cell.note:
        face.append(f'<span class="note-cell">{_e(cell.note)}</span>')
    face.append(f'<span class="more">{"Received header" if cell.received else "evidence"}</span>')
    return (
        f'<td id="cell-{_e(cell.id)}" class="r-{cell.risk.value} v-{verdict}" {hooks} '
        f'title="{_e(cell.id)}"><details><summary>{"".join(face)}</summary>'
        f"{_evidence(cell)}</details></td>"
    )


def _row_head(row: BoardReceiver) -> str:
    """Return a row's header: the receiver id, its facts, and whether it is safe."""
    safety = f'<span class="unsafe">unsafe: {_e(row.unsafe)}</span>' if row.unsafe else "safe"
    return (
        f'<th data-receiver="{_e(row.id)}">{_e(row.id)}<br><small>'
        f"{_e(receiver_facts(row.info))}; {safety}</small></th>"
    )


def _head(board: Scoreboard) -> str:
    """Return the table head: software groups, sender ids, and each column's score."""
    groups = "".join(
        f'<th class="group" colspan="{n}" data-software="{_e(name)}">{_e(name)}</th>'
        for name, n in _groups(board.senders)
    )
    ids = "".join(
        f'<th data-sender="{_e(s.id)}">{_e(s.id)}<br><small>{_e(s.models or s.driver)}</small></th>'
        for s in board.senders
    )
    scores = "".join(f'<td data-score="{_e(s.id)}">{_e(s.score)}</td>' for s in board.senders)
    return (
        f"<thead><tr><th></th>{groups}</tr><tr><th>receiver \\ sender</th>{ids}</tr>"
        f'<tr class="scores"><th>score</th>{scores}</tr></thead>'
    )


def _body(board: Scoreboard) -> str:
    """Return the table body: one group of rows per family, one row per receiver state."""
    body, family = "", None
    span = len(board.senders) + 1
    for row in board.receivers:
        if row.family is not family:
            family = row.family
            body += (
                f'<tr class="family" data-family="{family.value}"><th colspan="{span}">'
                f"{_e(family.heading)}</th></tr>"
            )
        cells = "".join(
            board_td(c) if (c := board.cell(row.id, s.id)) else _not_run(row.id, s.id)
            for s in board.senders
        )
        body += f'<tr data-family="{row.family.value}">{_row_head(row)}{cells}</tr>'
    return f"<tbody>{body}</tbody>"


def _legend() -> str:
    """Return the legend: the risk colours (report.html's), the marks and `observed only`."""
    risks = "".join(
        f'<span><span class="sw r-{risk.value}"></span><b>{_e(name)}</b>: {_e(meaning)}</span>'
        for risk, (name, _, meaning) in RISK_SCALE.items()
    )
    marks = "".join(
        f"<span><b>{HTML_MARKS[v]} {_e(MATCH[v])}</b>: {_e(MATCH_LEGEND[v])}</span>"
        for v in Verdict
    )
    marks += f"<span><b>{OBSERVED_ONLY}</b>: {OBSERVED_ONLY_MEANS}</span>"
    return (
        '<section class="legend" id="legend"><h2>Colour: what the delivery means for the message'
        f"</h2>{risks}<h2>Mark: observed against a suite's stated expectation (not a safety mark)"
        f"</h2>{marks}</section>"
    )


def _versions(board: Scoreboard) -> str:
    """Return the software versions read from the running senders."""
    items = "".join(
        f'<span data-software="{_e(v.software)}"><b>{_e(v.software)}</b>{_e(v.version)} '
        f"<small>({_e(v.sender)}: <code>{_e(v.command)}</code>)</small></span>"
        for v in board.versions
    )
    return f'<p class="versions" id="versions">{items or "no versions read"}</p>'


def _banner(board: Scoreboard) -> str:
    """Return the banner of an incomplete board or a subset, or ''."""
    if board.complete and board.selection:
        return f'<p class="note" id="subset">A subset of the board: {_e(board.selection)}.</p>'
    if board.complete:
        return ""
    why = f"interrupted by {board.stopped_by}" if board.stopped_by else "a subset of the board"
    total = len(board.cells) + len(board.not_run)
    return (
        f'<p class="banner" role="alert">Incomplete scoreboard ({_e(why)}): {len(board.cells)} '
        f"of {total} cells run. Its scores cover only the cells that ran.</p>"
    )


def render_page(board: Scoreboard) -> str:
    """Return index.html: one self-contained page (inline CSS, no script, no external assets)."""
    judged = [c for c in board.cells if c.verdict is not None]
    counts = {v: sum(c.verdict is v for c in judged) for v in Verdict}
    score = (
        f"<div>{len(board.cells)} cells · {len(board.cells) - len(judged)} {OBSERVED_ONLY} · "
        f"{HTML_MARKS[Verdict.PASS]} {counts[Verdict.PASS]} as expected · "
        f"{HTML_MARKS[Verdict.FAIL]} {counts[Verdict.FAIL]} differ · "
        f"{HTML_MARKS[Verdict.ERROR]} {counts[Verdict.ERROR]} lab error</div>"
    )
    title = "Sender TLS Lab: the scoreboard"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} ({_e(board.run_id)})</title><style>{CSS}{BOARD_CSS}</style>"
        f"</head><body><header><h1>{_e(title)}</h1>"
        "<p>Every receiver state the lab has, every real sender the lab runs and the policy "
        "models, in one run.</p>"
        f'<p class="meta">run {_e(board.run_id)} on {_e(board.backend)} · started '
        f"{_e(board.started)} · finished {_e(board.finished)} · {board.wall_seconds:g} s · "
        f"lab {_e(board.lab_version)} ({_e(board.lab_commit[:12])})</p>{_versions(board)}"
        f'</header>{_banner(board)}<section class="score">{score}</section>{_legend()}'
        f'<div class="scroll"><table class="matrix">{_head(board)}{_body(board)}</table></div>'
        '<p class="meta">Click a cell for the Received header exactly as the receiver stored '
        "it, the receiver's session records, the sender's own account and log, and the lab's "
        "detail.</p></body></html>\n"
    )


__all__ = ["board_td", "render_page"]
