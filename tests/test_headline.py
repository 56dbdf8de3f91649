"""Headline findings: declared as queries in the suite YAML, counted from the observed cells."""

from __future__ import annotations

import json
import typing
from pathlib import Path

import pytest
from test_cli import SHIPPED_SUITE, make_root
from test_report import make_report

from harness.headline import evaluate, failure_mode
from harness.model import NOT_DELIVERED, CellQuery, HeadlineQuery, Outcome
from harness.report import write_report
from harness.report_model import QueryOutcome
from harness.scenarios import ScenarioError, load_suite

CONTROLLED = HeadlineQuery(id="tests", text="{count} tests", where=CellQuery(study=True), claim=6)
DELIVERED_WEAK = HeadlineQuery(
    id="weak",
    text="{count} of {of} failure modes delivered by ses-require-tls",
    where=CellQuery(senders=("ses-require-tls",), unsafe=True, outcome="delivered"),
    of=CellQuery(senders=("ses-require-tls",), unsafe=True),
    count="failure-modes",
    claim=2,
)


def test_counts_come_from_the_cells_and_list_them() -> None:
    tests, weak = evaluate((CONTROLLED, DELIVERED_WEAK), make_report())
    assert (tests.text, tests.count, tests.matches_claim) == ("6 tests", 6, True)
    assert weak.text == "2 of 3 failure modes delivered by ses-require-tls"
    assert weak.cells == ("tls10-ses-require-tls", "no-starttls-ses-require-tls")
    assert weak.matches_claim is True


def test_a_changed_observation_changes_the_count_and_is_marked() -> None:
    report = make_report()
    refused = report.results[3].model_copy(update={"outcome": Outcome.REFUSED, "tls": None})
    changed = report.model_copy(
        update={"results": (*report.results[:3], refused, *report.results[4:])}
    )
    (weak,) = evaluate((DELIVERED_WEAK,), changed)
    assert weak.count == 1
    assert weak.matches_claim is False


def test_a_subset_run_counts_only_what_ran_and_says_so(tmp_path: Path) -> None:
    report = make_report()
    subset = report.model_copy(update={"results": report.results[:2], "complete": False})
    subset = subset.model_copy(update={"headline": evaluate((CONTROLLED,), subset)})
    run = write_report(subset, tmp_path)
    text = (run / "summary.md").read_text(encoding="utf-8")
    assert (
        "- ❌ **2 tests** (differs from the study, which reported 6 (incomplete run: only the "
        "cells that ran are counted))"
    ) in text
    assert "  cells counted: `tls13-ses-default`, `tls13-ses-require-tls`" in text
    page = (run / "report.html").read_text(encoding="utf-8")
    assert 'data-headline="tests" data-count="2"' in page
    assert '<a href="#cell-tls13-ses-default">' in page
    assert '<td id="cell-tls13-ses-default"' in page
    data = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert data["headline"][0]["cells"] == ["tls13-ses-default", "tls13-ses-require-tls"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (CellQuery(outcome=NOT_DELIVERED), {"self-signed-ses-default"}),
        (
            CellQuery(certificate="defect"),
            {"self-signed-ses-default", "self-signed-ses-require-tls"},
        ),
        (CellQuery(tls="legacy"), {"tls10-ses-default", "tls10-ses-require-tls"}),
        (CellQuery(starttls=False, senders=("ses-default",)), {"no-starttls-ses-default"}),
        (
            CellQuery(unsafe=False, outcome="delivered"),
            {"tls13-ses-default", "tls13-ses-require-tls"},
        ),
    ],
)
def test_each_filter_reads_the_receivers_facts(query: CellQuery, expected: set[str]) -> None:
    (found,) = evaluate((HeadlineQuery(id="q", text="{count}", where=query),), make_report())
    assert set(found.cells) == expected


def test_without_receiver_facts_a_facts_filter_counts_nothing() -> None:
    bare = make_report().model_copy(update={"receiver_info": ()})
    (found,) = evaluate((DELIVERED_WEAK,), bare)
    assert found.count == 0


def test_failure_modes_are_named_from_facts() -> None:
    infos = {i.id: i for i in make_report().receiver_info}
    assert failure_mode(infos["no-starttls"]) == "no encryption"
    assert failure_mode(infos["tls10"]) == "legacy TLS"
    assert failure_mode(infos["self-signed"]) == "self-signed certificate"
    assert failure_mode(infos["tls13"]) is None


def test_query_outcomes_are_the_outcome_vocabulary() -> None:
    assert set(typing.get_args(QueryOutcome)) == {o.value for o in Outcome} | {NOT_DELIVERED}


def test_shipped_suite_declares_the_four_study_takeaways() -> None:
    headline = load_suite("ses-2025").suite.headline
    assert [h.claim for h in headline] == [14, 4, 2, 3]


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("  - {id: x, text: '{total} tests', where: {study: true}}", "headline[0].text"),
        ("  - {id: x, text: '{count}', where: {studdy: true}}", "headline[0].where.studdy"),
    ],
)
def test_a_bad_headline_names_its_field(tmp_path: Path, entry: str, field: str) -> None:
    root = make_root(
        tmp_path, {"mine": SHIPPED_SUITE.split("\nheadline:")[0] + f"\nheadline:\n{entry}\n"}
    )
    with pytest.raises(ScenarioError) as caught:
        load_suite("mine", root)
    assert caught.value.field == field
