"""Looking cells up in a report, and finding their evidence, without a scan per cell."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.evidence_links import cell_evidence, link_evidence
from harness.model import CellResult, Outcome, RunReport, Verdict
from lab.evidence_store import read_messages

D = Outcome.DELIVERED


def cell(receiver: str, sender: str, detail: str = "", message_id: str = "") -> CellResult:
    """Return a passing delivered cell."""
    return CellResult(
        receiver=receiver,
        sender=sender,
        outcome=D,
        expected=D,
        verdict=Verdict.PASS,
        detail=detail or f"{receiver} x {sender}",
        message_id=message_id,
    )


def report(*results: CellResult) -> RunReport:
    """Return a report of these results."""
    return RunReport(
        suite="mini",
        backend="local",
        run_id="20250101T000000Z-a",
        started="2025-01-01T00:00:00+00:00",
        finished="2025-01-01T00:00:01+00:00",
        receivers=tuple(dict.fromkeys(r.receiver for r in results)),
        senders=(),
        results=results,
    )


def test_a_cell_is_found_by_receiver_and_sender_the_first_of_repeats() -> None:
    first, repeat = cell("r1", "s1", "first"), cell("r1", "s1", "repeat")
    run = report(cell("r1", "s2"), first, repeat, cell("r2", "s1"))
    assert run.cell("r1", "s1") is first
    assert run.cell("r2", "s1") is run.results[3]
    assert run.cell("r2", "s2") is None, "a cell that did not run"
    assert run.cell("s1", "r1") is None, "receiver and sender are not interchangeable"


def test_a_copied_report_looks_up_its_own_results_not_the_originals() -> None:
    run = report(cell("r1", "s1", "old"), cell("r2", "s2"))
    old = run.cell("r1", "s1")
    assert old is not None
    assert old.detail == "old"
    changed = run.model_copy(update={"results": (cell("r1", "s1", "new"), cell("r2", "s1"))})
    new = changed.cell("r1", "s1")
    assert new is not None
    assert new.detail == "new"
    assert changed.cell("r2", "s1") is not None
    assert changed.cell("r2", "s2") is None, "gone from the copy"
    assert run.cell("r2", "s1") is None, "the original keeps its own results"


def stored(folder: Path, *records: dict[str, object]) -> None:
    """Write messages.jsonl records and an .eml for each that names one."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "messages.jsonl").open("a") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
            if isinstance(record.get("eml"), str):
                (folder / str(record["eml"])).write_bytes(b"x")


def test_link_evidence_reads_each_receivers_messages_once_and_links_as_per_cell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored(
        tmp_path / "evidence" / "r1",
        {"message_id": "<a@x>", "eml": "q1.eml"},
        {"message_id": "<b@x>", "eml": "q2.eml"},
        {"message_id": "<a@x>", "eml": "q3.eml"},
        {"message_id": ["<a@x>"], "eml": "q4.eml"},  # not a message id: never linked
        {"message_id": "<b@x>", "eml": "../q5.eml"},  # leaves its folder: never linked
    )
    stored(tmp_path / "evidence" / "r2", {"message_id": "<c@x>", "eml": "q1.eml"})
    cells = (
        cell("r1", "s1", message_id="<a@x>"),
        cell("r1", "s2", message_id="<b@x>"),
        cell("r2", "s1", message_id="<c@x>"),
        cell("r2", "s2", message_id="<a@x>"),  # its copy is at another receiver: none here
    )
    one_by_one = [cell_evidence(c, tmp_path) for c in cells]
    reads: list[Path] = []

    def counted(folder: Path) -> object:
        reads.append(folder)
        return read_messages(folder)

    monkeypatch.setattr("harness.evidence_links.read_messages", counted)
    linked = link_evidence(report(*cells), tmp_path)
    assert sorted(reads) == [tmp_path / "evidence" / "r1", tmp_path / "evidence" / "r2"]
    assert [c.evidence for c in linked.results] == one_by_one
    assert [link.path for link in linked.results[0].evidence] == [
        "evidence/r1/q1.eml",
        "evidence/r1/q3.eml",
    ]
    assert linked.results[3].evidence == ()
