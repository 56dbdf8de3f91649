"""CLI details: list, --version, backend choices in help, prune, and errors that help."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

import pytest
from cli_helpers import assert_usage_error, tlslab
from test_cli import SHIPPED_SUITE, make_root
from test_report import make_report

from harness.prune import prune, run_folders
from harness.report import write_report
from harness.scenarios import ScenarioError, load_suite


def test_version_prints_the_package_version() -> None:
    ran = tlslab("--version")
    assert ran.status == 0
    assert ran.out.strip() == f"tlslab {metadata.version('sender-tls-lab')}"


def test_list_shows_suites_receivers_and_senders_with_descriptions() -> None:
    ran = tlslab("list")
    assert ran.status == 0, ran.err
    lines = ran.out.splitlines()
    assert any(line.startswith("suites (") for line in lines)
    assert any("ses-2025" in line and "2025 study" in line for line in lines)
    assert any(line.split()[:1] == ["tls10"] and "TLS 1.0" in line for line in lines)
    assert any(line.split()[:2] == ["paubox", "[reference]"] for line in lines)


def test_list_of_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    assert_usage_error(tlslab("list", "--scenarios", tmp_path / "nope"), "does not exist")


def test_help_names_the_backends() -> None:
    for verb in ("run", "up", "scoreboard"):
        assert "--backend {attached,docker,local}" in tlslab(verb, "--help").out


def test_jobs_that_is_not_a_number_names_the_option() -> None:
    ran = tlslab("run", "--jobs", "four")
    assert ran.status == 2
    assert "argument --jobs: must be a whole number, got 'four'" in ran.err
    assert "_positive" not in ran.err


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda root: root.mkdir(), "has no suites"),
        (lambda root: None, "does not exist"),
    ],
)
def test_scenarios_folder_without_suites_says_so(
    tmp_path: Path, make: object, problem: str
) -> None:
    root = tmp_path / "scen"
    make(root)  # type: ignore[operator]
    ran = tlslab("run", "--scenarios", root, "--reports", tmp_path / "r")
    assert_usage_error(ran, "'--scenarios'", problem)


def test_unquoted_greater_than_gets_the_hint_to_quote(tmp_path: Path) -> None:
    broken = SHIPPED_SUITE.replace(
        "    paubox:          {outcome: delivered, tls: TLSv1.2}",
        "    paubox:\n      outcome: delivered\n      tls: >=TLSv1.2",
    )
    root = make_root(tmp_path, {"mine": broken})
    with pytest.raises(ScenarioError) as caught:
        load_suite("mine", root)
    assert "quote the value, e.g. tls: '>=TLSv1.2'" in caught.value.fix


def test_a_misspelt_cell_field_is_named_with_the_likely_fix(tmp_path: Path) -> None:
    broken = SHIPPED_SUITE.replace(
        "    paubox:          {outcome: delivered, tls: TLSv1.3}",
        "    paubox:          {outcom: delivered, tls: TLSv1.3}",
    )
    root = make_root(tmp_path, {"mine": broken})
    with pytest.raises(ScenarioError) as caught:
        load_suite("mine", root)
    assert caught.value.field == "cells.tls13.paubox.outcom"
    assert caught.value.problem == "unknown field"  # the field names it
    assert caught.value.fix == "did you mean `outcome`? rename it"


def test_prune_keeps_the_newest_and_the_latest_run(tmp_path: Path) -> None:
    for run_id in ("run-1", "run-2", "run-3", "run-4"):
        write_report(make_report(run_id), tmp_path)
    os.remove(tmp_path / "latest")
    os.symlink("run-1", tmp_path / "latest")  # latest on an old run: it survives
    (tmp_path / "bench").mkdir()  # not a run folder: never touched
    removed = prune(tmp_path, keep=2)
    assert [p.name for p in removed] == ["run-2"]
    assert [p.name for p in run_folders(tmp_path)] == ["run-1", "run-3", "run-4"]
    assert (tmp_path / "bench").is_dir()


def test_prune_command_reports_what_it_removed(tmp_path: Path) -> None:
    for run_id in ("run-1", "run-2"):
        write_report(make_report(run_id), tmp_path)
    ran = tlslab("prune", "--keep", "1", "--reports", tmp_path)
    assert ran.status == 0, ran.err
    assert f"removed {tmp_path / 'run-1'}" in ran.out
    assert "removed 1 runs; 1 left" in ran.out
    assert tlslab("prune", "--keep", "-1", "--reports", tmp_path).status == 2
