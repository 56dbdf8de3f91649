"""The streamed report files are byte-for-byte what the report model renders in one piece."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

import pydantic_core
import pytest
from test_report import make_report

from harness.cell_notes import shared
from harness.evidence_links import link_evidence
from harness.html_report import render_html
from harness.model import CellResult, Outcome, RunReport, Verdict
from harness.report import SCHEMA_ID, write_report
from harness.report_stream import cell_json, pretty_json, results_chunks
from harness.report_view import assess
from harness.summary_md import render_summary
from lab.tls_transport import LabSSLProtocol

AWKWARD = 'é 中文 🙂 "quoted" back\\slash \x01 tab\t line\nbreak \u2028 </script> "results": []'


def whole_document(report: RunReport) -> str:
    """Return results.json as the model renders it in one piece (the contract)."""
    return pretty_json({"schema": SCHEMA_ID, **report.model_dump(mode="json")}) + "\n"


def awkward_report() -> RunReport:
    """Return the test report with odd text everywhere and floats both JSON writers differ on."""
    report = make_report()
    cells = list(report.results)
    for index, seconds in enumerate((1e-05, 1e16, 0.0, 12.5, 0.0001, 3.1415)):
        cells[index] = cells[index].model_copy(
            update={"detail": AWKWARD, "note": AWKWARD[::-1], "seconds": seconds}
        )
    return report.model_copy(update={"results": tuple(cells), "title": AWKWARD})


def finished(report: RunReport, run_dir: Path) -> RunReport:
    """Return the report as the writers show it: risk set and evidence linked."""
    return link_evidence(assess(report), run_dir)


def test_pydantic_and_json_write_some_floats_differently() -> None:
    # the precondition of the fallback test below: these two are not written alike
    assert pydantic_core.to_json(1e-05).decode() != json.dumps(1e-05)
    assert pydantic_core.to_json(12.5).decode() == json.dumps(12.5)


def test_each_cell_is_written_as_the_json_module_writes_it() -> None:
    for cell in awkward_report().results:
        assert cell_json(cell) == pretty_json(cell.model_dump(mode="json")), cell.seconds


def test_streamed_results_json_is_the_whole_documents_bytes(tmp_path: Path) -> None:
    report = awkward_report()
    run = write_report(report, tmp_path)
    written = (run / "results.json").read_bytes()
    assert written == whole_document(finished(report, run)).encode("utf-8")
    assert json.loads(written)["title"] == AWKWARD
    # negative control: the document of the report without its risk set is other bytes
    assert written != whole_document(report).encode("utf-8")


def test_streamed_document_of_a_run_without_cells(tmp_path: Path) -> None:
    report = make_report().model_copy(update={"results": ()})
    assert "".join(results_chunks(report)) == whole_document(report)
    run = write_report(report, tmp_path)
    assert json.loads((run / "results.json").read_text(encoding="utf-8"))["results"] == []


def test_streamed_summary_and_page_are_the_in_memory_renderings(tmp_path: Path) -> None:
    report = awkward_report()
    run = write_report(report, tmp_path)
    shown = finished(report, run)
    assert (run / "summary.md").read_text(encoding="utf-8") == render_summary(shown)
    assert (run / "report.html").read_text(encoding="utf-8") == render_html(shown)
    assert AWKWARD.splitlines()[0] in (run / "summary.md").read_text(encoding="utf-8")


def test_cells_out_of_matrix_order_are_written_in_results_order(tmp_path: Path) -> None:
    report = make_report()
    backwards = report.model_copy(update={"results": tuple(reversed(report.results))})
    run = write_report(backwards, tmp_path)
    rows = json.loads((run / "results.json").read_text(encoding="utf-8"))["results"]
    assert [(r["receiver"], r["sender"]) for r in rows] == [
        (c.receiver, c.sender) for c in reversed(report.results)
    ]
    assert (run / "summary.md").read_text(encoding="utf-8") == render_summary(
        finished(backwards, run)
    )


def test_sessions_with_the_same_offer_share_one_copy() -> None:
    first = tuple(f"TLS_CIPHER_{n}" for n in range(3))
    again = tuple("".join(["TLS_CIPHER_", str(n)]) for n in range(3))  # equal, other objects
    other = ("TLS_OTHER",)
    assert again == first
    assert again[0] is not first[0]
    assert shared(first) is shared(again)
    assert shared(again)[0] is first[0]
    assert shared(other) is other
    assert shared(other) != shared(first)


def test_a_closed_tls_sessions_read_buffer_is_freed() -> None:
    loop = asyncio.new_event_loop()
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        protocol = LabSSLProtocol(
            loop, asyncio.Protocol(), context, loop.create_future(), server_side=True
        )
        open_one = LabSSLProtocol(
            loop, asyncio.Protocol(), context, loop.create_future(), server_side=True
        )
        protocol.connection_lost(None)
        assert len(protocol._ssl_buffer) == 0
        assert len(open_one._ssl_buffer) == LabSSLProtocol.max_size, "an open session keeps it"
        assert len(protocol.get_buffer(1024)) >= 1024, "a late read would still get a buffer"
    finally:
        loop.close()


@pytest.mark.parametrize("verdict", [Verdict.PASS, Verdict.FAIL])
def test_one_cell_round_trips_through_its_streamed_text(verdict: Verdict) -> None:
    cell = CellResult(
        receiver="r1", sender="s1", outcome=Outcome.DELIVERED, expected=Outcome.DELIVERED,
        verdict=verdict, detail=AWKWARD, seconds=1e-05,
    )  # fmt: skip
    assert CellResult.model_validate_json(cell_json(cell)) == cell


@pytest.mark.parametrize(
    "data",
    [
        {"a": [1, True, None, "é\x01\u2028"], "b": {}, "c": [], "d": {"e": [{"f": -(2**63)}]}},
        {"float": 1e-05, "fine": "x"},  # pydantic writes 1e-5: the json module's text is kept
        {"big": 2**64, "tuple": (1, 2)},
        {"enum": Outcome.DELIVERED, 1: "int key"},
    ],
)
def test_pretty_json_is_the_json_modules_text(data: dict[Any, Any]) -> None:
    assert pretty_json(data) == json.dumps(data, indent=2, ensure_ascii=False)
