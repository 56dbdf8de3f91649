"""Run reports: results.json, summary.md, report.html and tlsrpt.json in `reports/<run-id>/`."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.expectations import expectation_label
from harness.model import CellResult, Outcome, RunReport, Verdict
from harness.session_text import downgrade_text, session_extras
from harness.tlsrpt import build_tlsrpt
from lab.spec import TlsVersion

SCHEMA_ID = "sender-tls-lab/results/v1"
SCHEMA_PATH = Path(__file__).with_name("results.schema.json")
RESULTS, SUMMARY, HTML, TLSRPT = "results.json", "summary.md", "report.html", "tlsrpt.json"
LATEST = "latest"
MARKS = {Verdict.PASS: "✅", Verdict.FAIL: "❌", Verdict.ERROR: "⚠️"}
# the HTML page uses text glyphs that common fonts carry (emoji need an emoji font)
HTML_MARKS = {Verdict.PASS: "✓", Verdict.FAIL: "✗", Verdict.ERROR: "⚠"}
POLICY_NOTE = (
    "are driven by the `reference` driver: they are policy models of the named services, "
    "not the services themselves"
)


class ReportError(Exception):
    """A results.json (or a reports folder) that cannot be used: names the path, field and fix."""

    def __init__(self, path: Path, field: str, fix: str) -> None:
        """Keep the path, the offending field and what would fix it."""
        self.path, self.field, self.fix = path, field, " ".join(fix.split())
        super().__init__(f"{path}: field `{field}`: {self.fix}")


def results_document(report: RunReport) -> dict[str, Any]:
    """Return the results.json content: the schema id, then every field of the run report."""
    return {"schema": SCHEMA_ID, **report.model_dump(mode="json")}


def results_schema() -> dict[str, Any]:
    """Return the JSON Schema of results.json, generated from RunReport (every key is emitted)."""
    schema = RunReport.model_json_schema(mode="serialization")
    for node in [schema, *schema.get("$defs", {}).values()]:
        if "properties" in node:
            node["required"] = list(node["properties"])
    schema["properties"] = {
        "schema": {"const": SCHEMA_ID, "type": "string"},
        **schema["properties"],
    }
    schema["required"] = ["schema", *schema["required"]]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    """Write the JSON Schema of results.json (default: harness/results.schema.json)."""
    _atomic_write(path, json.dumps(results_schema(), indent=2) + "\n")
    return path


def load_results(path: Path) -> RunReport:
    """Read a results.json file, or the one in a run folder; raise ReportError naming the field."""
    file = path / RESULTS if path.is_dir() else path
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = "no such file" if isinstance(exc, FileNotFoundError) else f"cannot read it ({exc})"
        raise ReportError(file, "(file)", f"{why}; pass a results.json or a run folder") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        why = f"not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"
        raise ReportError(file, "(json)", f"{why}; re-run the suite or restore the file") from None
    if not isinstance(data, dict):
        raise ReportError(file, "(top level)", "expected a JSON object with suite, results, ...")
    schema = data.pop("schema", SCHEMA_ID)
    if schema != SCHEMA_ID:
        raise ReportError(file, "schema", f"expected {SCHEMA_ID!r}, got {schema!r}")
    try:
        return RunReport.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(file, exc) from None


def _validation_error(file: Path, exc: ValidationError) -> ReportError:
    """Turn the first pydantic error into a ReportError naming its field as `results[0].outcome`."""
    errors = exc.errors()
    first = errors[0]
    field = ""
    for part in first["loc"]:
        field += f"[{part}]" if isinstance(part, int) else f".{part}" if field else str(part)
    if first["type"] == "missing":
        fix = f"add the required field `{field}`"
    else:
        fix = f"{first['msg']} (got {str(first.get('input'))[:60]!r})"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return ReportError(file, field or "(top level)", fix + more)


def expected_label(cell: CellResult) -> str:
    """Return the expectation as text: `refused`, `delivered TLSv1.2`, `not delivered`, ..."""
    return expectation_label(cell.expected, cell.expected_tls)


def outcome_label(cell: CellResult) -> str:
    """Return the observed outcome as text: `delivered TLSv1.3`, `delivered plaintext`, ..."""
    if cell.outcome is Outcome.DELIVERED:
        return f"delivered {cell.tls.version.value if cell.tls else 'plaintext'}"
    return str(cell.outcome.value)


def cell_text(cell: CellResult | None) -> str:
    """Return a matrix cell: verdict mark, outcome and, when failing, `(expected X)`."""
    if cell is None:
        return "—"
    text = f"{MARKS[cell.verdict]} {outcome_label(cell)}"
    return f"{text} (expected {expected_label(cell)})" if cell.verdict is Verdict.FAIL else text


def tone(cell: CellResult) -> str:
    """Return the colour class of a cell: tls, weak, plain, held, unseen or error."""
    if cell.outcome is Outcome.ERROR:
        return "error"
    if cell.outcome is Outcome.NOT_OBSERVED:
        return "unseen"
    if cell.outcome is not Outcome.DELIVERED:
        return "held"
    if cell.tls is None:
        return "plain"
    return "tls" if cell.tls.version.rank >= TlsVersion.TLS12.rank else "weak"


def axes(report: RunReport) -> tuple[list[str], list[str]]:
    """Return (rows, columns): the report's receivers and senders, then any others in results."""
    rows, cols = list(report.receivers), [s.id for s in report.senders]
    rows += [r for r in dict.fromkeys(c.receiver for c in report.results) if r not in rows]
    cols += [s for s in dict.fromkeys(c.sender for c in report.results) if s not in cols]
    return rows, cols


def totals(report: RunReport) -> dict[Verdict, int]:
    """Return how many cells have each verdict."""
    return {v: sum(c.verdict is v for c in report.results) for v in Verdict}


def _ordered(report: RunReport) -> list[CellResult]:
    """Return the results in matrix order (row-major), then any not on the matrix axes."""
    rows, cols = axes(report)
    return sorted(report.results, key=lambda c: (rows.index(c.receiver), cols.index(c.sender)))


def _policy_models(report: RunReport) -> list[str]:
    """Return the ids of the sender columns driven by the reference (policy model) driver."""
    return [s.id for s in report.senders if s.driver == "reference"]


def _md(text: str) -> str:
    """Return text safe inside one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _sessions_line(cell: CellResult) -> str:
    """Return the receiver's session records of a cell as one line."""
    parts = []
    for s in cell.sessions:
        tls = f" {s.version} {s.cipher or ''}".rstrip() if s.version else ""
        alert = f", alert {s.alert}" if s.alert else ""
        starttls = "STARTTLS" if s.starttls else "no STARTTLS"
        line = f"{s.peer}: {starttls}, handshake {s.handshake}{tls}{alert}"
        parts.append(line + session_extras(s))
    if cell.downgrade is not None:
        parts.append(downgrade_text(cell.downgrade))
    return "; ".join(parts)


def render_summary(report: RunReport) -> str:
    """Return summary.md: title, the matrix, study score, totals, the policy note, evidence."""
    rows, cols = axes(report)
    out = [f"# Sender TLS Lab: `{report.suite}` on `{report.backend}`", ""]
    if report.title:
        out += [report.title, ""]
    out += [f"Run `{report.run_id}`, started {report.started}, finished {report.finished}.", ""]
    out += ["| receiver \\ sender | " + " | ".join(f"`{_md(s)}`" for s in cols) + " |"]
    out += ["|---" * (len(cols) + 1) + "|"]
    for r in rows:
        cells = [_md(cell_text(report.cell(r, s))) for s in cols]
        out.append(f"| `{_md(r)}` | " + " | ".join(cells) + " |")
    out.append("")
    passed, total = report.study_reproduced
    if total:
        out += [f"Study cells reproduced: {passed}/{total}", ""]
    count = totals(report)
    out += [
        f"Totals: {count[Verdict.PASS]} pass, {count[Verdict.FAIL]} fail, "
        f"{count[Verdict.ERROR]} error ({len(report.results)} cells).",
        "",
    ]
    if models := _policy_models(report):
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
    out += ["", "## Evidence per cell", ""]
    for c in _ordered(report):
        cipher = f" ({c.tls.cipher})" if c.tls else ""
        out += [f"### `{c.id}` {MARKS[c.verdict]} {c.verdict.value}", ""]
        out += [f"Outcome: {outcome_label(c)}{cipher}; expected: {expected_label(c)}.", ""]
        if c.received is None:
            out += ["Received header: no message arrived.", ""]
        else:
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall("`+", c.received)), default=0))
            out += ["Received header:", "", f"{fence}text", c.received, fence, ""]
        if c.sessions:
            out += [f"Receiver sessions: {_sessions_line(c)}", ""]
        if c.sender_report:
            out += [f"Sender report: {' '.join(c.sender_report.split())}", ""]
        out += [f"Detail: {c.detail or '(none)'}", ""]
    return "\n".join(out)


CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;
color:#1b1f24}h1{margin:.2rem 0}.meta{color:#57606a}code,pre{font:13px ui-monospace,monospace}
.score{display:flex;gap:2rem;align-items:baseline;margin:1rem 0}.big{font-size:1.6rem;
font-weight:700}.note{background:#fff8c5;border-left:4px solid #d4a72c;padding:.5rem .8rem}
table.matrix{border-collapse:separate;border-spacing:4px;width:100%}.matrix th{text-align:left;
vertical-align:bottom;padding:.3rem}.matrix tbody th{vertical-align:middle}
.matrix th small{font-weight:400;color:#57606a}
.matrix td{vertical-align:top;padding:.45rem;border-radius:6px;color:#fff;min-width:9rem}
.tls{background:#1a7f37}.weak{background:#bf8700}.plain{background:#cf222e}.held{background:#54708f}
.error{background:#24292f}.unseen{background:#8c959f}.missing{background:#eaeef2;color:#57606a}
td.fail{outline:4px dashed #8250df;outline-offset:-4px;box-shadow:0 0 0 2px #fff inset}
td.verdict-error{outline:3px dotted #ff8c00;outline-offset:-3px}.what{font-weight:700}
.cipher,.tag{font-size:12px;opacity:.9}.expected{display:block;font-weight:700}.badge{float:right;
font-size:12px;background:rgba(255,255,255,.22);border-radius:4px;padding:0 .3rem}
details{margin-top:.3rem}summary{cursor:pointer;font-size:12px}details pre{white-space:pre-wrap;
word-break:break-all;background:#fff;color:#1b1f24;padding:.4rem;border-radius:4px;max-width:28rem}
details p{font-size:12px;margin:.3rem 0}.legend{display:flex;flex-wrap:wrap;gap:.6rem 1.4rem;
margin:1rem 0;font-size:13px}.sw{display:inline-block;width:1.1rem;height:1.1rem;border-radius:3px;
vertical-align:middle;margin-right:.35rem}.sw.fail{background:#fff;outline:3px dashed #8250df;
outline-offset:-3px}dt{font-weight:700}dd{margin:0 0 .6rem 1rem}
"""

LEGEND = (
    ("tls", "delivered over TLS 1.2 or newer"),
    ("weak", "delivered over TLS 1.0 / 1.1"),
    ("plain", "delivered in plaintext"),
    ("held", "not delivered: refused, deferred or fallback"),
    ("unseen", "not observed: neither the message nor a bounce arrived in time"),
    ("error", "lab error (not the sender's fault)"),
    ("fail", "verdict fail: observed differs from expected"),
)


def _e(text: object) -> str:
    """Return text escaped for HTML element content and attribute values."""
    return html.escape(str(text), quote=True)


def _html_cell(cell: CellResult | None) -> str:
    """Return one matrix `<td>`: colour by outcome, outline by verdict, evidence in `<details>`."""
    if cell is None:
        return '<td class="missing">not run</td>'
    classes = [tone(cell)] + (["fail"] if cell.verdict is Verdict.FAIL else [])
    classes += ["verdict-error"] if cell.verdict is Verdict.ERROR else []
    what, _, how = outcome_label(cell).partition(" ")
    parts = [f'<span class="badge">{HTML_MARKS[cell.verdict]} {_e(cell.verdict.value)}</span>']
    parts.append(f'<span class="what">{_e(what)}</span> {_e(how)}')
    if cell.tls:
        parts.append(f'<br><span class="cipher">{_e(cell.tls.cipher)}</span>')
    if cell.verdict is Verdict.FAIL:
        parts.append(f'<span class="expected">expected {_e(expected_label(cell))}</span>')
    if cell.study:
        parts.append('<br><span class="tag">★ study cell</span>')
    evidence = f"<pre>{_e(cell.received)}</pre>" if cell.received else "<p>no message arrived</p>"
    summary = "Received header" if cell.received else "evidence"
    extra = f"<p>sessions: {_e(_sessions_line(cell))}</p>" if cell.sessions else ""
    parts.append(
        f"<details><summary>{summary}</summary>{evidence}{extra}<p>{_e(cell.detail)}</p></details>"
    )
    return f'<td class="{" ".join(classes)}" title="{_e(cell.id)}">{"".join(parts)}</td>'


def render_html(report: RunReport) -> str:
    """Return report.html: one self-contained page (inline CSS, no scripts, no external assets)."""
    rows, cols = axes(report)
    info = {s.id: s for s in report.senders}
    head = "".join(
        f"<th>{_e(s)}<br><small>{_e(info[s].models or info[s].driver) if s in info else ''}"
        "</small></th>"
        for s in cols
    )
    body = "".join(
        f"<tr><th>{_e(r)}</th>{''.join(_html_cell(report.cell(r, s)) for s in cols)}</tr>"
        for r in rows
    )
    passed, total = report.study_reproduced
    count = totals(report)
    score = f'<div class="big">Study cells reproduced: {passed}/{total}</div>' if total else ""
    score += (
        f"<div>{HTML_MARKS[Verdict.PASS]} {count[Verdict.PASS]} pass · "
        f"{HTML_MARKS[Verdict.FAIL]} {count[Verdict.FAIL]} fail · "
        f"{HTML_MARKS[Verdict.ERROR]} {count[Verdict.ERROR]} error</div>"
    )
    models = _policy_models(report)
    note = (
        f'<p class="note">The sender columns {_e(", ".join(models))} '
        f"{_e(POLICY_NOTE.replace('`', ''))}.</p>"
        if models
        else ""
    )
    legend = "".join(f'<span><span class="sw {k}"></span>{_e(v)}</span>' for k, v in LEGEND)
    senders = "".join(
        f"<dt>{_e(s.id)} <small>(driver {_e(s.driver)})</small></dt>"
        f"<dd>{_e(s.description)}{' — models ' + _e(s.models) if s.models else ''}</dd>"
        for s in report.senders
    )
    title = f"Sender TLS Lab: {report.suite} on {report.backend}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} ({_e(report.run_id)})</title><style>{CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1>"
        + (f"<p>{_e(report.title)}</p>" if report.title else "")
        + f'<p class="meta">run {_e(report.run_id)} · started {_e(report.started)} · finished '
        f"{_e(report.finished)}</p></header>"
        f'<section class="score">{score}</section>{note}'
        f'<table class="matrix"><thead><tr><th>receiver \\ sender</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
        f'<section class="legend">{legend}</section>'
        f"<h2>Senders</h2><dl>{senders}</dl>"
        '<p class="meta">Evidence: open a cell\'s “Received header” for the header exactly as the '
        "receiver stored it.</p></body></html>\n"
    )


def _atomic_write(path: Path, text: str) -> None:
    """Write text to path through a temp file in the same folder and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json(data: dict[str, Any]) -> str:
    """Return data as pretty, UTF-8 JSON text with a final newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def render_all(report: RunReport, run_dir: Path) -> list[Path]:
    """(Re)write results.json, summary.md, report.html, tlsrpt.json; ReportError if unwritable."""
    files = {
        RESULTS: _json(results_document(report)),
        SUMMARY: render_summary(report),
        HTML: render_html(report),
        TLSRPT: _json(build_tlsrpt(report)),
    }
    with unwritable_as_report_error(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            _atomic_write(run_dir / name, text)
    return [run_dir / name for name in files]


@contextlib.contextmanager
def unwritable_as_report_error(folder: Path) -> Iterator[None]:
    """Turn an OSError while writing under `folder` into a one-line ReportError naming the path."""
    try:
        yield
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ReportError(
            folder,
            "(folder)",
            f"cannot write the report there ({why}); free space or pass a writable reports "
            "folder (evidence recorded so far stays on disk)",
        ) from None


def _point_latest(reports_dir: Path, run_dir: Path) -> None:
    """Point reports_dir/latest at run_dir with a relative symlink, swapped in atomically."""
    latest = reports_dir / LATEST
    tmp = reports_dir / f".{LATEST}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    os.symlink(os.path.relpath(run_dir, reports_dir), tmp)
    try:
        os.replace(tmp, latest)
    except OSError as exc:
        tmp.unlink()
        raise ReportError(
            latest, LATEST, f"cannot replace it ({exc}); remove it, it must be a symlink"
        ) from None


def write_report(report: RunReport, reports_dir: Path) -> Path:
    """Write `reports_dir/<run_id>/` (the four files), point `latest` at it; return the folder."""
    run_id = report.run_id
    if run_id in ("", ".", "..", LATEST) or any(c in run_id for c in "/\\\0"):
        raise ReportError(
            reports_dir, "run_id", f"{run_id!r} is not a folder name; use e.g. a timestamp"
        )
    run_dir = reports_dir / run_id
    render_all(report, run_dir)
    with unwritable_as_report_error(reports_dir):
        _point_latest(reports_dir, run_dir)
    return run_dir
