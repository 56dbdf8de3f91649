"""report.html: one self-contained page, cells coloured by risk, match marks and evidence."""

from __future__ import annotations

import html
from collections.abc import Callable, Iterator
from urllib.parse import quote

from harness.labels import (
    HTML_MARKS,
    MATCH,
    MATCH_LEGEND,
    NOT_RUN,
    RISK_SCALE,
    expected_label,
    risk_name,
    risk_of,
    risk_words,
)
from harness.model import CellResult, RunReport, Verdict
from harness.report_view import (
    POLICY_NOTE,
    axes,
    claim_text,
    column_sentence,
    incomplete_banner,
    policy_models,
    provenance_rows,
    receiver_facts,
    row_sentence,
    sessions_line,
    study_line,
    totals,
)

RISK_COLOURS = {  # background of each risk class; white text on each is at least 4.5:1
    "verified": "#1a7f37",
    "unverified": "#bc4c00",
    "legacy": "#7d4e00",
    "downgraded": "#8250df",
    "plaintext": "#cf222e",
    "not-delivered": "#0550ae",
    "not-observed": "#6e7781",
    "error": "#24292f",
}
EVIDENCE_NAMES = {
    "message": "stored message (.eml)",
    "sessions": "session records",
    "portal": "portal copy",
}
# the one script: "expand all" opens (or closes) every cell's evidence; the page works without it
EXPAND_ALL = (
    '<button type="button" id="expand-all">expand all evidence</button><script>'
    "document.getElementById('expand-all').onclick=function(){"
    "var d=document.querySelectorAll('.matrix details'),"
    "o=![].some.call(d,function(x){return x.open});d.forEach(function(x){x.open=o});"
    "this.textContent=o?'collapse all evidence':'expand all evidence'}"
    "</script>"
)
CSS = (
    """
body{font:15px/1.45 system-ui,sans-serif;margin:1.2rem auto;max-width:76rem;padding:0 1rem;
color:#1b1f24;background:#fff}h1{margin:.2rem 0;font-size:1.6rem}.meta{color:#57606a}
code,pre{font:13px ui-monospace,monospace}.score{display:flex;flex-wrap:wrap;gap:.3rem 2rem;
align-items:baseline;margin:.6rem 0}.big{font-size:1.3rem;font-weight:700}
.note{background:#fff8c5;border-left:4px solid #d4a72c;padding:.4rem .8rem;margin:.5rem 0}
.legend{display:grid;grid-template-columns:repeat(auto-fill,minmax(15rem,1fr));gap:.2rem 1rem;
margin:.6rem 0;font-size:12.5px}.legend h2{grid-column:1/-1;font-size:13px;margin:.3rem 0 0}
.sw{display:inline-block;width:1rem;height:1rem;border-radius:3px;vertical-align:-3px;
margin-right:.35rem;border:1px solid #0003}.scroll{overflow-x:auto;max-width:100%}
table.matrix{border-collapse:separate;border-spacing:4px}.matrix th{text-align:left;
vertical-align:bottom;padding:.3rem}.matrix tbody th{vertical-align:middle;position:sticky;
left:0;background:#fff;z-index:1}.matrix th small{font-weight:400;color:#57606a}
.matrix td{vertical-align:top;padding:.45rem;border-radius:6px;color:#fff;min-width:10rem;
max-width:17rem;font-size:13px;overflow-wrap:break-word}.rname{display:block;font-size:11px;
text-transform:uppercase;letter-spacing:.03em;font-weight:700;opacity:.95}
.what{display:block;font-weight:700}.cipher,.tag,.note-cell{display:block;font-size:12px}
.match{display:inline-block;margin-top:.25rem;font-weight:700;background:#fff;color:#1b1f24;
border-radius:4px;padding:0 .35rem}td.v-fail .match{background:#1b1f24;color:#fff;
outline:2px dashed #fff}.expected{display:block;font-size:12px}.note-cell{font-style:italic}
td.v-fail{outline:4px dashed #1b1f24;outline-offset:-2px}td.not-run{background:#eaeef2;
color:#57606a}summary{cursor:pointer;list-style:none}summary::-webkit-details-marker{display:none}
summary .more{display:block;font-size:11px;text-decoration:underline;margin-top:.2rem}
details pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#fff;color:#1b1f24;
padding:.4rem;border-radius:4px}details p{font-size:12px;margin:.3rem 0}
.who{display:grid;grid-template-columns:repeat(auto-fit,minmax(20rem,1fr));gap:0 2rem}
.banner{background:#ffebe9;border:2px solid #cf222e;color:#82071e;font-weight:700;
padding:.5rem .8rem;border-radius:6px}.prov{display:grid;grid-template-columns:max-content 1fr;
gap:.1rem 1rem}.prov dd{margin:0;overflow-wrap:anywhere}
#headline h2{font-size:1.1rem;margin:.6rem 0 .2rem}#headline ul{margin:0;padding-left:1.2rem}
#headline li{margin:.15rem 0}.claim{font-size:12px;padding:0 .3rem;border-radius:4px}
.claim.ok{background:#dafbe1;color:#116329}.claim.differs{background:#ffebe9;color:#82071e}
.counted{display:inline;margin-left:.4rem}.counted summary{display:inline;font-size:12px;
text-decoration:underline;color:#0969da}.counted a{font-size:12px;margin-right:.3rem}
#expand-all{margin:.3rem 0;font:inherit;font-size:13px;cursor:pointer}.files a{color:#fff}
dt{font-weight:700}dd{margin:0 0 .6rem 1rem}
"""
    + "".join(f".r-{k}{{background:{v}}}" for k, v in RISK_COLOURS.items())
    + """
@media (prefers-color-scheme:dark){body{background:#0d1117;color:#e6edf3}
.matrix tbody th{background:#0d1117}.meta,.matrix th small{color:#9198a1}
.note{background:#3b2e00;color:#f0e6c8}.banner{background:#3d0a0e;color:#ffc1c0}
td.not-run{background:#21262d;color:#9198a1}td.v-fail{outline-color:#f0f6fc}
details pre{background:#161b22;color:#e6edf3}.sw{border-color:#fff5}
.counted summary,.counted a{color:#4493f8}}
@media print{body{max-width:none;margin:0;padding:0;font-size:11px;background:#fff;color:#1b1f24}
.matrix tbody th{background:#fff}.meta,.matrix th small{color:#57606a}details pre{background:#fff;
color:#1b1f24}.note{background:#fff8c5;color:#1b1f24}.counted a{display:none}
.scroll{overflow:visible}
*{-webkit-print-color-adjust:exact;print-color-adjust:exact}.matrix td{max-width:none}
tr,td,dt,dd,.legend span{break-inside:avoid}summary .more,#expand-all{display:none}
details::details-content{content-visibility:visible;display:block}
details pre,.matrix td,.what{overflow-wrap:normal;word-break:normal;hyphens:none}
details pre{white-space:pre-wrap}}
"""
)


def _e(text: object) -> str:
    """Return text escaped for HTML element content and attribute values."""
    return html.escape(str(text), quote=True)


def _not_run(cell_id: str) -> str:
    """Return the `<td>` of a cell that did not run."""
    hooks = f'data-cell="{_e(cell_id)}" data-outcome="not-run" data-risk="not-run"'
    return f'<td class="not-run" {hooks} data-verdict="not-run">{NOT_RUN}</td>'


def html_cell(report: RunReport, cell: CellResult) -> str:
    """Return one matrix `<td>`: risk colour and words, match mark, expectation, note, evidence."""
    info = report.receiver(cell.receiver)
    risk = risk_of(cell, info)
    classes = f"r-{risk.value} v-{cell.verdict.value}"
    hooks = (
        f'data-cell="{_e(cell.id)}" data-outcome="{_e(cell.outcome.value)}" '
        f'data-risk="{risk.value}" data-verdict="{cell.verdict.value}"'
    )
    face = [f'<span class="rname">{_e(risk_name(risk))}</span>']
    face.append(f'<span class="what">{_e(risk_words(cell, info))}</span>')
    if cell.tls:
        face.append(f'<span class="cipher">{_e(cell.tls.cipher)}</span>')
    face.append(f'<span class="match">{HTML_MARKS[cell.verdict]} {_e(MATCH[cell.verdict])}</span>')
    face.append(f'<span class="expected">expected: {_e(expected_label(cell))}</span>')
    if cell.note:
        face.append(f'<span class="note-cell">{_e(cell.note)}</span>')
    if cell.study:
        face.append('<span class="tag">★ study cell</span>')
    face.append(f'<span class="more">{"Received header" if cell.received else "evidence"}</span>')
    if cell.received is None:
        evidence = "<p>no message arrived</p>"
    else:
        evidence = f'<pre class="received">Received: {_e(cell.received)}</pre>'
    if cell.sessions:
        evidence += f"<p>sessions: {_e(sessions_line(cell))}</p>"
    if cell.evidence:
        links = " · ".join(
            f'<a href="{_e(quote(link.path))}">{EVIDENCE_NAMES[link.kind]}</a>'
            for link in cell.evidence
        )
        evidence += f'<p class="files">{links}</p>'
    body = f"{evidence}<p>{_e(cell.detail)}</p>"
    return (
        f'<td id="cell-{_e(cell.id)}" class="{classes}" {hooks} title="{_e(cell.id)}">'
        f"<details><summary>{''.join(face)}</summary>{body}</details></td>"
    )


def _legend() -> str:
    """Return the legend: every risk class with its colour and meaning, then the match marks."""
    risks = "".join(
        f'<span><span class="sw r-{risk.value}"></span><b>{_e(name)}</b>: {_e(meaning)}</span>'
        for risk, (name, _, meaning) in RISK_SCALE.items()
    )
    marks = "".join(
        f"<span><b>{HTML_MARKS[v]} {_e(MATCH[v])}</b>: {_e(MATCH_LEGEND[v])}</span>"
        for v in Verdict
    )
    return (
        '<section class="legend" id="legend"><h2>Colour: what the delivery means for the message'
        f"</h2>{risks}<h2>Mark: observed against the suite's expectation (not a safety mark)"
        f"</h2>{marks}</section>"
    )


def _people(report: RunReport, rows: list[str]) -> str:
    """Return the Senders and Receivers sections side by side, one sentence per column/row."""
    senders = "".join(
        f"<dt>{_e(s.id)} <small>(driver {_e(s.driver)})</small></dt>"
        f"<dd>{_e(s.description)}{' — models ' + _e(s.models) if s.models else ''}"
        f"<br><i>{_e(column_sentence(report, s.id))}</i></dd>"
        for s in report.senders
    )
    receivers = ""
    for r in rows:
        info = report.receiver(r)
        facts = f" <small>({_e(receiver_facts(info))})</small>" if info else ""
        described = _e(info.description) + "<br>" if info and info.description else ""
        receivers += (
            f"<dt>{_e(r)}{facts}</dt><dd>{described}<i>{_e(row_sentence(report, r))}</i></dd>"
        )
    return (
        f'<div class="who"><section id="senders"><h2>Senders</h2><dl>{senders}</dl></section>'
        f'<section id="receivers"><h2>Receivers</h2><dl>{receivers}</dl></section></div>'
    )


def _headline(report: RunReport) -> str:
    """Return the headline findings, each linked to the cells it counts."""
    if not report.headline:
        return ""
    items = ""
    for finding in report.headline:
        claim = claim_text(finding, report.complete)
        tone = {True: "ok", False: "differs", None: "none"}[finding.matches_claim]
        mark = {True: HTML_MARKS[Verdict.PASS], False: HTML_MARKS[Verdict.FAIL], None: ""}[
            finding.matches_claim
        ]
        links = " ".join(f'<a href="#cell-{_e(c)}">{_e(c)}</a>' for c in finding.cells)
        items += (
            f'<li data-headline="{_e(finding.id)}" data-count="{finding.count}">'
            f"<b>{_e(finding.text)}</b>"
            + (f' <span class="claim {tone}">{mark} {_e(claim)}</span>' if claim else "")
            + f'<details class="counted"><summary>{len(finding.cells)} cells counted</summary>'
            f"{links or 'none'}</details></li>"
        )
    return f'<section id="headline"><h2>Headline findings</h2><ul>{items}</ul></section>'


def _provenance(report: RunReport) -> str:
    """Return the provenance block: lab version and commit, tools, host, suite file and hash."""
    rows = provenance_rows(report)
    if not rows:
        return ""
    items = "".join(
        f"<dt>{_e(label)}</dt><dd><code>{_e(value)}</code></dd>" for label, value in rows
    )
    return f'<section id="provenance"><h2>Provenance</h2><dl class="prov">{items}</dl></section>'


def html_chunks(
    report: RunReport, finish: Callable[[CellResult], CellResult] | None = None
) -> Iterator[str]:
    """Yield report.html in pieces, one matrix row at a time (render_html joins them).

    `finish` (report_view.CellFinish) completes each cell just before it is shown.
    """
    rows, cols = axes(report)
    info = {s.id: s for s in report.senders}
    head = "".join(
        f"<th>{_e(s)}<br><small>{_e(info[s].models or info[s].driver) if s in info else ''}"
        "</small></th>"
        for s in cols
    )
    count = totals(report)
    line = study_line(report)
    score = f'<div class="big">{_e(line)}</div>' if line else ""
    score += (
        f"<div>{HTML_MARKS[Verdict.PASS]} {count[Verdict.PASS]} as expected · "
        f"{HTML_MARKS[Verdict.FAIL]} {count[Verdict.FAIL]} differ · "
        f"{HTML_MARKS[Verdict.ERROR]} {count[Verdict.ERROR]} lab error</div>"
    )
    models = policy_models(report)
    note = (
        f'<p class="note" id="policy-note">The sender columns {_e(", ".join(models))} '
        f"{_e(POLICY_NOTE.replace('`', ''))}.</p>"
        if models
        else ""
    )
    title = f"Sender TLS Lab: {report.suite} on {report.backend}"
    banner = incomplete_banner(report)
    yield (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} ({_e(report.run_id)})</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1>"
        + (f"<p>{_e(report.title)}</p>" if report.title else "")
        + f'<p class="meta">run {_e(report.run_id)} · started {_e(report.started)} · finished '
        f"{_e(report.finished)}</p></header>"
        + (f'<p class="banner" role="alert">{_e(banner)}</p>' if banner else "")
        + _headline(report)
        + f'<section class="score">{score}</section>{note}{_legend()}'
        f'{EXPAND_ALL}<div class="scroll"><table class="matrix"><thead><tr>'
        f"<th>receiver \\ sender</th>{head}</tr></thead><tbody>"
    )
    for r in rows:
        cells = "".join(
            html_cell(report, finish(c) if finish else c)
            if (c := report.cell(r, s))
            else _not_run(f"{r}-{s}")
            for s in cols
        )
        yield f"<tr><th>{_e(r)}</th>{cells}</tr>"
    yield (
        f"</tbody></table></div>{_people(report, rows)}{_provenance(report)}"
        '<p class="meta">Evidence: click a cell for the Received header exactly as the '
        "receiver stored it, the receiver's session records and the lab's detail.</p>"
        "</body></html>\n"
    )


def render_html(report: RunReport) -> str:
    """Return report.html: one self-contained page (inline CSS and script, no external assets)."""
    return "".join(html_chunks(report))


__all__ = ["CSS", "html_cell", "html_chunks", "render_html"]
