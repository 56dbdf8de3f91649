"""Run reports: results.json, summary.md, report.html and tlsrpt.json in `reports/<run-id>/`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.evidence_links import EvidenceFinder
from harness.html_report import html_chunks, render_html
from harness.labels import expected_label, outcome_label
from harness.model import ID_MAX_LENGTH, ID_PATTERN, RunReport
from harness.report_files import (
    OverlappedWrites,
    ReportError,
    atomic_write,
    closed_schema,
    error_field,
    point_symlink,
    unwritable_as_report_error,
)
from harness.report_stream import SCHEMA_ID, pretty_json, results_chunks
from harness.report_view import CellFinish
from harness.summary_md import render_summary, summary_lines
from harness.tlsrpt import FOLDER as TLSRPT_FOLDER
from harness.tlsrpt import report_senders, sender_report, tlsrpt_index

SCHEMA_PATH = Path(__file__).with_name("results.schema.json")
RESULTS, SUMMARY, HTML, TLSRPT = "results.json", "summary.md", "report.html", "tlsrpt.json"
LATEST = "latest"


def results_document(report: RunReport) -> dict[str, Any]:  # results_chunks streams the same
    """Return the results.json content: the schema id, then every field of the run report."""
    return {"schema": SCHEMA_ID, **report.model_dump(mode="json")}


def results_schema() -> dict[str, Any]:
    """Return the JSON Schema of results.json, generated from RunReport (every key is emitted)."""
    return closed_schema(RunReport, SCHEMA_ID)


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    """Write the JSON Schema of results.json (default: harness/results.schema.json)."""
    atomic_write(path, json.dumps(results_schema(), indent=2) + "\n")
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
    field = error_field(exc)
    if first["type"] == "missing":
        fix = f"add the required field `{field}`"
    else:
        fix = f"{first['msg']} (got {str(first.get('input'))[:60]!r})"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return ReportError(file, field, fix + more)


def _json(data: dict[str, Any]) -> str:
    """Return data as pretty, UTF-8 JSON text with a final newline."""
    return pretty_json(data) + "\n"


def render_all(report: RunReport, run_dir: Path) -> list[Path]:
    """(Re)write results.json, summary.md, report.html, tlsrpt.json, tlsrpt/<sender>.json.

    Each file is written as a stream of pieces (a cell or a matrix row at a time), never built
    whole in memory. Raise ReportError naming the folder when it cannot be written (full,
    read-only, a file).
    """
    finish = CellFinish(report, EvidenceFinder(run_dir))  # per cell: no copy of the whole run
    senders = report_senders(report)
    for sender in senders:
        if not re.fullmatch(ID_PATTERN, sender) or len(sender) > ID_MAX_LENGTH:
            raise ReportError(
                run_dir / RESULTS, "results[].sender", f"{sender[:60]!r} is not a sender id; "
                "restore the file from the run that wrote it",
            )  # fmt: skip
    files: dict[str, Iterable[str]] = {  # generators: each file's text is made as it is written
        RESULTS: results_chunks(report, finish),
        SUMMARY: _lines(summary_lines(report, finish)),
        HTML: html_chunks(report, finish),
    }
    written: dict[str, dict[str, Any]] = {}  # each sender's report, once written: its totals
    files |= {f"{TLSRPT_FOLDER}/{s}.json": _sender_file(report, s, written) for s in senders}
    with unwritable_as_report_error(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / TLSRPT_FOLDER).mkdir(exist_ok=True)
        with OverlappedWrites() as writes:
            for name, chunks in files.items():
                writes.write(run_dir / name, chunks)
            writes.write(run_dir / TLSRPT, (_json(tlsrpt_index(written, report.complete)),))
    names = [*list(files)[:3], TLSRPT, *list(files)[3:]]
    return [run_dir / name for name in names]


def _sender_file(report: RunReport, sender: str, written: dict[str, Any]) -> Iterator[str]:
    """Yield one sender's TLS-RPT report as JSON, made when written; keep what the index needs."""
    document = sender_report(report, sender)
    yield _json(document)
    written[sender] = {  # the index's part of it: the sender's other reports are not kept
        "report-id": document["report-id"],
        "policies": [{"summary": p["summary"]} for p in document["policies"]],
    }


def _lines(lines: Iterable[str]) -> Iterator[str]:
    """Yield the lines, each after the first preceded by a line end (as str.join writes them)."""
    for index, line in enumerate(lines):
        yield ("\n" if index else "") + line


def write_report(report: RunReport, reports_dir: Path, *, move_latest: bool | None = None) -> Path:
    """Write `reports_dir/<run_id>/` (the four files), point `latest` at it; return the folder.

    An interrupted run (`stopped_by` set) leaves `latest` where it was unless `move_latest`.
    """
    run_id = report.run_id
    if run_id in ("", ".", "..", LATEST) or any(c in run_id for c in "/\\\0"):
        raise ReportError(
            reports_dir, "run_id", f"{run_id!r} is not a folder name; use e.g. a timestamp"
        )
    run_dir = reports_dir / run_id
    render_all(report, run_dir)
    if move_latest or (move_latest is None and not report.stopped_by):
        point_symlink(reports_dir, LATEST, run_dir)
    return run_dir


__all__ = [
    "SCHEMA_ID",
    "ReportError",
    "expected_label",
    "load_results",
    "outcome_label",
    "render_all",
    "render_html",
    "render_summary",
    "unwritable_as_report_error",
    "write_report",
]
