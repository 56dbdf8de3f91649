"""Tests of `harness.diff` and `tlslab diff` / `tlslab run --baseline`: drift between two runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import Ran, assert_usage_error, tlslab

from harness.diff import diff_document, diff_runs, render_table, summary_line
from harness.model import CellResult, Outcome, RunReport, SenderInfo, TlsFacts, Verdict
from harness.report import write_report
from harness.scenarios import DEFAULT_ROOT
from lab.spec import TlsVersion

pytest_plugins = ["pytester"]

D, R, F = Outcome.DELIVERED, Outcome.REFUSED, Outcome.FALLBACK
TLS13 = TlsFacts(version=TlsVersion.TLS13, cipher="TLS_AES_256_GCM_SHA384", bits=256)
TLS12 = TlsFacts(version=TlsVersion.TLS12, cipher="ECDHE-RSA-AES256-GCM-SHA384", bits=256)
TLS10 = TlsFacts(version=TlsVersion.TLS10, cipher="ECDHE-RSA-AES256-SHA", bits=256)
SENDERS = (SenderInfo(id="ses-default", driver="reference"), SenderInfo(id="paubox", driver="x"))


def cell(
    receiver: str,
    sender: str,
    outcome: Outcome,
    tls: TlsFacts | None = None,
    verdict: Verdict = Verdict.PASS,
    **extra: Any,
) -> CellResult:
    return CellResult(
        receiver=receiver,
        sender=sender,
        outcome=outcome,
        expected=outcome,
        verdict=verdict,
        tls=tls,
        detail=f"{receiver} x {sender}",
        **extra,
    )


BASE = (
    cell("tls13", "ses-default", D, TLS13),
    cell("tls13", "paubox", D, TLS13),
    cell("tls10", "ses-default", D, TLS10),
    cell("tls10", "paubox", F),
    cell("no-starttls", "ses-default", D, None),
    cell("no-starttls", "paubox", F),
)


def run(results: tuple[CellResult, ...] = BASE, run_id: str = "20250101T000000Z-a") -> RunReport:
    return RunReport(
        suite="mini",
        backend="local",
        run_id=run_id,
        started="2025-01-01T00:00:00+00:00",
        finished="2025-01-01T00:00:01+00:00",
        receivers=tuple(dict.fromkeys(c.receiver for c in results)),
        senders=SENDERS,
        results=results,
    )


def replaced(index: int, new: CellResult) -> tuple[CellResult, ...]:
    return (*BASE[:index], new, *BASE[index + 1 :])


# --- diff_runs: pure ---------------------------------------------------------------------


def test_identical_runs_have_no_change() -> None:
    # run ids, timings and ciphers differ between two real runs; none of that is drift
    again = tuple(c.model_copy(update={"seconds": 9.0, "detail": "other"}) for c in BASE)
    assert diff_runs(run(), run(again, run_id="other")) == []
    assert summary_line([], 6) == "no cell changed (6 cells compared)"


def test_a_changed_outcome_is_flagged_by_cell_name() -> None:
    new = run(replaced(2, cell("tls10", "ses-default", R, verdict=Verdict.FAIL)))
    (change,) = diff_runs(run(), new)
    assert change.id == "tls10-ses-default"
    assert change.kinds == ("outcome", "verdict")
    assert change.what == "outcome delivered -> refused; verdict pass -> fail"
    table = render_table([change]).splitlines()
    assert table[0].split() == ["cell", "old", "new", "what", "changed"]
    assert set(table[1]) == {"-", " "}
    assert table[2].split("  ")[0] == "tls10-ses-default"
    assert "delivered TLSv1.0" in table[2]
    assert "refused" in table[2]
    assert summary_line([change], 6) == "1 of 6 cells changed: 1 outcome, 1 verdict"


def test_a_changed_tls_version_and_plaintext_are_flagged() -> None:
    weaker = replaced(0, cell("tls13", "ses-default", D, TLS12))
    (change,) = diff_runs(run(), run(weaker))
    assert (change.id, change.kinds) == ("tls13-ses-default", ("tls",))
    assert change.what == "TLS version TLSv1.3 -> TLSv1.2"
    plaintext = replaced(0, cell("tls13", "ses-default", D, None))
    (change,) = diff_runs(run(), run(plaintext))
    assert change.what == "TLS version TLSv1.3 -> plaintext"
    # negative control: only the cipher changed, the version did not
    other_cipher = TLS13.model_copy(update={"cipher": "TLS_CHACHA20_POLY1305_SHA256"})
    assert diff_runs(run(), run(replaced(0, cell("tls13", "ses-default", D, other_cipher)))) == []


def test_a_changed_verdict_alone_is_flagged() -> None:
    failing = replaced(3, cell("tls10", "paubox", F, verdict=Verdict.FAIL))
    (change,) = diff_runs(run(), run(failing))
    assert change.kinds == ("verdict",)
    assert change.what == "verdict pass -> fail"


def test_added_and_removed_cells() -> None:
    new = run((*BASE[1:], cell("tls12", "paubox", D, TLS12)))
    changes = diff_runs(run(), new)
    assert [(c.id, c.kinds) for c in changes] == [
        ("tls12-paubox", ("added",)),
        ("tls13-ses-default", ("removed",)),
    ]
    added, removed = changes
    assert (added.old, added.new) == (None, new.results[-1])
    assert added.what == "added: only in the new run"
    assert removed.what == "removed: only in the old run"
    assert "1 added, 1 removed" in summary_line(changes, 7)
    row = render_table([removed]).splitlines()[2].split()
    assert row[:4] == ["tls13-ses-default", "delivered", "TLSv1.3", "-"]


def test_diff_document_is_json_ready() -> None:
    new = run(replaced(4, cell("no-starttls", "ses-default", R, verdict=Verdict.FAIL)))
    document = diff_document(diff_runs(run(), new), "a", "b", 6)
    assert json.loads(json.dumps(document)) == document
    assert document["changed"] == 1
    (entry,) = document["cells"]
    assert entry["cell"] == "no-starttls-ses-default"
    assert (entry["old"], entry["new"]) == ("delivered plaintext", "refused")
    assert (entry["old_verdict"], entry["new_verdict"]) == ("pass", "fail")
    assert entry["changes"][0] == {"kind": "outcome", "old": "delivered", "new": "refused"}


# --- tlslab diff on run folders written by write_report ----------------------------------


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Write three runs: a base, an identical one, and one where tls10-ses-default refused."""
    reports = tmp_path / "reports"
    same = write_report(run(run_id="run-same"), reports)
    base = write_report(run(run_id="run-base"), reports)
    drifted = replaced(2, cell("tls10", "ses-default", R, verdict=Verdict.FAIL))
    return base, same, write_report(run(drifted, run_id="run-drift"), reports)


def test_cli_diff_of_identical_runs_exits_0(folders: tuple[Path, Path, Path]) -> None:
    base, same, _ = folders
    ran = tlslab("diff", base, same / "results.json")
    assert ran.status == 0, ran.out + ran.err
    assert ran.out.splitlines()[-1] == "no cell changed (6 cells compared)"
    assert "what changed" not in ran.out


def test_cli_diff_of_a_changed_cell_exits_1(folders: tuple[Path, Path, Path]) -> None:
    base, _, drifted = folders
    ran = tlslab("diff", base, drifted)
    assert ran.status == 1, ran.out + ran.err
    lines = ran.out.splitlines()
    assert lines[0] == f"old: {base} (suite mini, run run-base)"
    assert lines[2].startswith("cell ")
    (row,) = [line for line in lines if line.startswith("tls10-ses-default")]
    assert "delivered TLSv1.0" in row
    assert "outcome delivered -> refused; verdict pass -> fail" in row
    assert lines[-1] == "1 of 6 cells changed: 1 outcome, 1 verdict"
    # swapped, the same cell changes back
    assert "outcome refused -> delivered" in tlslab("diff", drifted, base).out


def test_cli_diff_json(folders: tuple[Path, Path, Path]) -> None:
    base, same, drifted = folders
    ran = tlslab("diff", "--json", base, drifted)
    assert ran.status == 1
    document = json.loads(ran.out)
    assert [c["cell"] for c in document["cells"]] == ["tls10-ses-default"]
    assert document["compared"] == 6
    identical = tlslab("diff", "--json", base, same)
    assert identical.status == 0
    assert json.loads(identical.out)["cells"] == []


def test_cli_diff_of_a_missing_path_exits_2(folders: tuple[Path, Path, Path]) -> None:
    base, _, _ = folders
    missing = base.parent / "nope" / "results.json"
    assert_usage_error(tlslab("diff", base, missing), str(missing), "(file)", "no such file")


def test_cli_diff_of_broken_json_exits_2(folders: tuple[Path, Path, Path]) -> None:
    base, _, drifted = folders
    (drifted / "results.json").write_text('{"suite": ')
    assert_usage_error(
        tlslab("diff", base, drifted), str(drifted / "results.json"), "(json)", "not valid JSON"
    )


# --- tlslab run --baseline: a real run against a stored one ------------------------------


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Ran, Path, Path]:
    """Run the shipped suite once; return the run, its reports folder and a shared certs folder."""
    base = tmp_path_factory.mktemp("baseline")
    reports, certs = base / "reports", base / "certs"
    return tlslab("run", "--reports", reports, "--certs", certs), reports, certs


def test_run_against_an_identical_baseline_exits_0(
    stored: tuple[Ran, Path, Path], tmp_path: Path
) -> None:
    first, reports, certs = stored
    assert first.status == 0, first.out + first.err
    baseline = (reports / "latest").resolve()
    ran = tlslab(
        "run", "--baseline", reports / "latest", "--reports", tmp_path / "r", "--certs", certs
    )
    assert ran.status == 0, ran.out + ran.err
    assert f"Baseline {reports / 'latest'}: no cell changed (27 cells compared)" in ran.out
    assert "Drift" not in ran.out
    assert (reports / "latest").resolve() == baseline


def test_run_against_a_doctored_baseline_exits_1_naming_the_cell(
    stored: tuple[Ran, Path, Path], tmp_path: Path
) -> None:
    _, reports, certs = stored
    data = json.loads((reports / "latest" / "results.json").read_text())
    (doctored,) = [
        c for c in data["results"] if (c["receiver"], c["sender"]) == ("tls10", "ses-require-tls")
    ]
    doctored.update(outcome="refused", tls=None, received=None)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(data))
    ran = tlslab("run", "--baseline", baseline, "--reports", tmp_path / "r", "--certs", certs)
    assert ran.status == 1, ran.out + ran.err
    assert "27 cells: 27 pass, 0 fail, 0 error" in ran.out
    assert f"Baseline {baseline}: 1 of 27 cells changed: 1 outcome" in ran.out
    (row,) = [line for line in ran.out.splitlines() if line.startswith("tls10-ses-require-tls ")]
    assert "refused" in row
    assert "delivered TLSv1.0" in row
    assert "outcome refused -> delivered" in row
    assert "Drift against the baseline: exit 1 even though every verdict passed" in ran.out


def test_run_with_a_missing_baseline_exits_2_before_running(tmp_path: Path) -> None:
    missing = tmp_path / "none" / "results.json"
    ran = tlslab(
        "run", "--baseline", missing, "--reports", tmp_path / "r", "--certs", tmp_path / "c"
    )
    assert_usage_error(ran, str(missing), "(file)", "no such file")
    assert not (tmp_path / "r").exists()


# --- pytest --lab-baseline: the session fails on drift -------------------------------------

QUIET = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")


def test_pytest_lab_baseline_fails_the_session_on_drift(
    pytester: pytest.Pytester, stored: tuple[Ran, Path, Path]
) -> None:
    _, _, certs = stored
    root = pytester.path / "scenarios"
    for folder in ("receivers", "senders"):
        shutil.copytree(DEFAULT_ROOT / folder, root / folder)
    (root / "suites").mkdir()
    shutil.copy(DEFAULT_ROOT / "suites" / "ses-2025.yaml", root / "suites")
    reports = pytester.path / "reports"
    args = ["scenarios/suites/ses-2025.yaml", "-k", "tls10", *QUIET, "--lab-certs", str(certs)]
    args += ["--lab-reports", str(reports)]
    assert pytester.runpytest(*args).ret == pytest.ExitCode.OK
    baseline = pytester.path / "baseline.json"
    shutil.copy(reports / "latest" / "results.json", baseline)

    same = pytester.runpytest(*args, "--lab-baseline", str(baseline))
    assert same.ret == pytest.ExitCode.OK
    same.stdout.fnmatch_lines([f"Baseline {baseline} vs suite ses-2025: no cell changed (3 cells*"])

    data = json.loads(baseline.read_text())
    cells = {(c["receiver"], c["sender"]): c for c in data["results"]}
    cells["tls10", "ses-require-tls"].update(outcome="refused", tls=None, received=None)
    # a cell this session deselects (-k tls10) is not drift
    data["results"].append({**cells["tls10", "paubox"], "receiver": "tls13"})
    baseline.write_text(json.dumps(data))
    drift = pytester.runpytest(*args, "--lab-baseline", str(baseline))
    drift.assert_outcomes(passed=3, deselected=24)
    assert drift.ret == pytest.ExitCode.TESTS_FAILED
    drift.stdout.fnmatch_lines(
        [
            "*Sender TLS Lab baseline*",
            f"Baseline {baseline} vs suite ses-2025: 1 of 3 cells changed: 1 outcome",
            "tls10-ses-require-tls *refused *delivered TLSv1.0 *outcome refused -> delivered",
            "Drift against the baseline: the session fails (exit status 1)",
        ]
    )
    assert "tls13-paubox" not in drift.stdout.str()


def test_pytest_lab_baseline_that_does_not_exist_is_a_usage_error(
    pytester: pytest.Pytester,
) -> None:
    missing = pytester.path / "missing.json"
    result = pytester.runpytest("--co", *QUIET, "--lab-baseline", str(missing))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--lab-baseline: {missing}: field `(file)`: no such file*"])
