"""Tests of the pytest plugin: suite files collect as cells, run, fail with evidence, report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.scenarios import DEFAULT_ROOT

pytest_plugins = ["pytester"]

SHIPPED_SUITE = (DEFAULT_ROOT / "suites" / "ses-2025.yaml").read_text(encoding="utf-8")
NODE = "scenarios/suites/{}.yaml::{}"
# the inner sessions need neither hypothesis (slow to import) nor a cache folder
QUIET = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")


def make_root(base: Path, suites: dict[str, str]) -> Path:
    """Write a scenarios root under `base`: the shipped receivers and senders plus `suites`."""
    root = base / "scenarios"
    for folder in ("receivers", "senders"):
        shutil.copytree(DEFAULT_ROOT / folder, root / folder)
    (root / "suites").mkdir()
    for name, text in suites.items():
        (root / "suites" / f"{name}.yaml").write_text(text, encoding="utf-8")
    return root


def wrong_suite() -> str:
    """Return ses-2025 with tls10 x ses-require-tls deliberately expected `refused`."""
    lines = SHIPPED_SUITE.splitlines()
    row = lines.index("  tls10:")
    assert lines[row + 2].startswith("    ses-require-tls: {outcome: delivered, tls: TLSv1.0")
    lines[row + 2] = "    ses-require-tls: {outcome: refused, study: true}"
    return "\n".join(lines) + "\n"


def wrong_version_suite() -> str:
    """Return ses-2025's tls10 and tls12 rows for ses-default, both expecting TLSv1.2."""
    return (
        "title: A delivery over the wrong TLS version fails its cell\n"
        "receivers: [tls10, tls12]\n"
        "senders: [ses-default]\n"
        "cells:\n"
        "  tls10:\n"
        "    ses-default: {outcome: delivered, tls: TLSv1.2}\n"
        "  tls12:\n"
        "    ses-default: {outcome: delivered, tls: TLSv1.2}\n"
    )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a certificate folder shared by this module's lab runs."""
    return tmp_path_factory.mktemp("certs")


def lab_options(pytester: pytest.Pytester, certs: Path) -> list[str]:
    return [*QUIET, "--lab-reports", str(pytester.path / "reports"), "--lab-certs", str(certs)]


def collected(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if "::" in line]


def test_k_row_collects_the_three_cells_of_that_row(pytester: pytest.Pytester) -> None:
    make_root(pytester.path, {"ses-2025": SHIPPED_SUITE})
    result = pytester.runpytest(
        "scenarios/suites/ses-2025.yaml", "--collect-only", "-q", "-k", "tls10", *QUIET
    )
    assert result.ret == pytest.ExitCode.OK
    assert collected(result) == [
        NODE.format("ses-2025", "tls10-ses-default"),
        NODE.format("ses-2025", "tls10-ses-require-tls"),
        NODE.format("ses-2025", "tls10-paubox"),
    ]
    result.stdout.fnmatch_lines(["3/27 tests collected (24 deselected)*"])


def test_k_column_collects_the_nine_cells_of_that_column(pytester: pytest.Pytester) -> None:
    make_root(pytester.path, {"ses-2025": SHIPPED_SUITE})
    result = pytester.runpytest(
        "scenarios/suites/ses-2025.yaml", "--collect-only", "-q", "-k", "ses-default", *QUIET
    )
    receivers = "tls13 tls12 tls11 tls10 no-starttls self-signed expired mismatched untrusted-ca"
    assert collected(result) == [
        NODE.format("ses-2025", f"{r}-ses-default") for r in receivers.split()
    ]
    # negative control: without -k every cell of the matrix is collected, row by row
    everything = collected(
        pytester.runpytest("scenarios/suites/ses-2025.yaml", "--co", "-q", *QUIET)
    )
    assert len(everything) == 27
    assert everything[:3] == [
        NODE.format("ses-2025", f"tls13-{s}") for s in ("ses-default", "ses-require-tls", "paubox")
    ]


def test_yaml_outside_a_suites_folder_is_not_collected(pytester: pytest.Pytester) -> None:
    root = make_root(pytester.path, {})
    (root / "elsewhere").mkdir()
    (root / "elsewhere" / "ses-2025.yaml").write_text(SHIPPED_SUITE)
    result = pytester.runpytest("scenarios", "--collect-only", "-q", *QUIET)
    assert collected(result) == []
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    # negative control: the same file inside `suites/` is collected
    (root / "suites" / "ses-2025.yaml").write_text(SHIPPED_SUITE)
    result = pytester.runpytest("scenarios", "--collect-only", "-q", *QUIET)
    assert len(collected(result)) == 27
    assert all(line.startswith("scenarios/suites/") for line in collected(result))


def test_running_a_row_passes_and_writes_a_report(pytester: pytest.Pytester, certs: Path) -> None:
    make_root(pytester.path, {"ses-2025": SHIPPED_SUITE})
    result = pytester.runpytest(
        "scenarios/suites/ses-2025.yaml", "-k", "tls10", *lab_options(pytester, certs)
    )
    result.assert_outcomes(passed=3, deselected=24)
    assert result.ret == pytest.ExitCode.OK
    latest = pytester.path / "reports" / "latest"
    result.stdout.fnmatch_lines([f"Sender TLS Lab report: {latest.resolve()}"])
    data = json.loads((latest / "results.json").read_text())
    assert data["suite"] == "ses-2025"
    cells = {(c["receiver"], c["sender"]): c for c in data["results"]}
    assert set(cells) == {("tls10", s) for s in ("ses-default", "ses-require-tls", "paubox")}
    assert {c["verdict"] for c in cells.values()} == {"pass"}
    assert cells["tls10", "ses-default"]["tls"]["version"] == "TLSv1.0"
    assert cells["tls10", "paubox"]["outcome"] == "fallback"
    assert data["complete"] is False, "a -k run is a subset of the suite"
    assert len(data["not_run"]) == 24
    assert ("tls10", "paubox") not in {(c["receiver"], c["sender"]) for c in data["not_run"]}
    summary = (latest / "summary.md").read_text(encoding="utf-8")
    assert "Incomplete run (a subset of the suite): 3 of 27 cells run" in summary
    assert "2 of 14 study cells run, 2 reproduced" in summary
    assert "Incomplete run (a subset" in (latest / "report.html").read_text(encoding="utf-8")


def test_a_wrong_expectation_fails_with_expected_observed_and_evidence(
    pytester: pytest.Pytester, certs: Path
) -> None:
    make_root(pytester.path, {"wrong": wrong_suite()})
    result = pytester.runpytest(
        "scenarios/suites/wrong.yaml", "-k", "tls10", *lab_options(pytester, certs)
    )
    result.assert_outcomes(passed=2, failed=1, deselected=24)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*FAIL tls10-ses-require-tls",
            "  expected: refused",
            "  observed: delivered TLSv1.0",
            "  detail:   arrived over TLSv1.0 *",
            "  received: from sender-ses-require-tls.lab.test *",
            "*(using TLSv1 with cipher *",
            "*by mx.tls10.lab.test*",
            '  session:  {"peer":*"version":"TLSv1.0"*',
        ]
    )
    result.stdout.fnmatch_lines(["FAILED scenarios/suites/wrong.yaml::tls10-ses-require-tls*"])
    output = result.stdout.str()
    assert "Traceback" not in output
    assert "CellFailed" not in output  # repr_failure replaced pytest's traceback
    assert "def runtest" not in output
    data = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())
    verdicts = {c["sender"]: c["verdict"] for c in data["results"]}
    assert verdicts == {"ses-default": "pass", "ses-require-tls": "fail", "paubox": "pass"}


def test_a_delivery_over_the_wrong_tls_version_fails_and_its_control_passes(
    pytester: pytest.Pytester, certs: Path
) -> None:
    make_root(pytester.path, {"wrong-version": wrong_version_suite()})
    result = pytester.runpytest(
        "scenarios/suites/wrong-version.yaml", *lab_options(pytester, certs)
    )
    result.assert_outcomes(passed=1, failed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*FAIL tls10-ses-default",
            "  expected: delivered TLSv1.2",
            "  observed: delivered TLSv1.0",
            "*(using TLSv1 with cipher *",
        ]
    )
    result.stdout.fnmatch_lines(["FAILED scenarios/suites/wrong-version.yaml::tls10-ses-default*"])
    assert "tls12-ses-default" not in "".join(line for line in result.outlines if "FAILED" in line)
    data = json.loads((pytester.path / "reports" / "latest" / "results.json").read_text())
    cells = {c["receiver"]: (c["verdict"], c["tls"]["version"]) for c in data["results"]}
    assert cells == {"tls10": ("fail", "TLSv1.0"), "tls12": ("pass", "TLSv1.2")}


def test_malformed_suite_is_a_collection_error_naming_file_and_field(
    pytester: pytest.Pytester,
) -> None:
    make_root(pytester.path, {"broken": "receivers: [tls10\nsenders: [paubox]\n"})
    result = pytester.runpytest("scenarios/suites/broken.yaml", *QUIET)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert int(result.ret) == 2
    path = pytester.path / "scenarios" / "suites" / "broken.yaml"
    result.stdout.fnmatch_lines(
        [f"{path}: field 'line 2, column 8': invalid YAML: *; fix: fix the YAML syntax"]
    )
    result.stdout.fnmatch_lines(["*Interrupted: 1 error during collection*"])
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    assert "scenarios.py" not in output
    assert "plugin.py" not in output


def test_suite_with_an_unknown_receiver_is_a_collection_error(pytester: pytest.Pytester) -> None:
    suite = SHIPPED_SUITE.replace("receivers: [tls13,", "receivers: [tls99,")
    make_root(pytester.path, {"bad": suite})
    result = pytester.runpytest("scenarios/suites/bad.yaml", *QUIET)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    path = pytester.path / "scenarios" / "suites" / "bad.yaml"
    first = min(p.stem for p in (DEFAULT_ROOT / "receivers").glob("*.yaml"))
    line = f"{path}: field 'receivers[0]': unknown id 'tls99'; fix: use one of ['{first}',"
    assert any(out.startswith(line) for out in result.outlines), result.stdout.str()
    assert "Traceback" not in result.stdout.str()
    # negative control: the same folder with the shipped suite collects fine
    (pytester.path / "scenarios" / "suites" / "bad.yaml").write_text(SHIPPED_SUITE)
    assert pytester.runpytest("scenarios/suites/bad.yaml", "--co", "-q", *QUIET).ret == 0


def test_cells_collect_under_strict_markers_outside_the_project(
    pytester: pytest.Pytester,
) -> None:
    make_root(pytester.path, {"ses-2025": SHIPPED_SUITE})
    # a subprocess: in-process runs share pytest's mark registry with this session
    result = pytester.runpytest_subprocess(
        "scenarios/suites/ses-2025.yaml", "--strict-markers", "--co", "-q", "-k", "tls10", *QUIET
    )
    assert len(collected(result)) == 3
