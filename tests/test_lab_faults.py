"""The lab's own failures are the lab's: a full reports disk, an unwritable reports folder or a
crash inside one cell give `error` cells (never the sender's verdict), the run goes on, and the
commands exit 2 with one line naming the path while evidence already recorded stays on disk.

Receivers are real (the local backend on 127.0.0.1); the full-disk tests mount a small tmpfs
(root only) and run `tlslab` in a subprocess or the pytest plugin through pytester.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_helpers import assert_usage_error, tlslab
from full_disk import fill, small_tmpfs

from harness.model import Outcome, Verdict
from harness.run_start import open_run
from harness.runner import LabRun
from harness.scenarios import DEFAULT_ROOT, load_suite
from harness.senders.base import SendAction, SenderDriver, SendReport, TestMessage
from harness.senders.reference import RoutedSMTP
from lab.backends.base import RunningLab
from lab.backends.local import LocalBackend
from lab.evidence_store import EvidenceStore, read_messages
from lab.receiver import STORE_FAILED_REPLY

pytestmark = pytest.mark.integration
pytest_plugins = ["pytester"]

SUITE = """\
title: a full reports disk
description: the first cell is stored, then the reports disk is full
receivers: [no-starttls, tls12]
senders: [ses-default, paubox]
cells:
  no-starttls:
    ses-default: {outcome: delivered, tls: plaintext}
    paubox:      {outcome: fallback}
  tls12:
    ses-default: {outcome: delivered, tls: TLSv1.2}
    paubox:      {outcome: delivered, tls: TLSv1.2}
"""
ONE_ROW = SUITE.replace("receivers: [no-starttls, tls12]", "receivers: [no-starttls]").split(
    "  tls12:"
)[0]
LEDGER_PAGES = 1  # each receiver's fault ledger: one page, allocated when it starts
STORED_PAGES = 3  # one stored message: its .eml, messages.jsonl and sessions.jsonl
READ_ONLY = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
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


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a certificate folder shared by this module's runs."""
    return tmp_path_factory.mktemp("certs")


def run_folder(reports: Path) -> Path:
    """Return the one run folder under a reports folder."""
    (run,) = [p for p in reports.iterdir() if p.is_dir() and not p.is_symlink()]
    return run


def first_cell_is_stored(run: Path) -> None:
    """Assert the first cell's message, recorded before the disk filled, is still on disk."""
    evidence = run / "evidence" / "no-starttls"
    (stored,) = read_messages(evidence)
    assert stored["message_id"].startswith("<no-starttls-ses-default.")
    assert (evidence / stored["eml"]).read_bytes().startswith(b"Received: from ")


# ---------------------------------------------------------------- a full reports disk (root)


def test_a_full_reports_disk_is_a_lab_error_and_exit_2_with_the_evidence_kept(
    tmp_path: Path, certs: Path
) -> None:
    root = make_root(tmp_path, {"disk": SUITE})
    with small_tmpfs(tmp_path) as mount:
        fill(mount, leave_pages=2 * LEDGER_PAGES + STORED_PAGES)  # then the first cell fills it
        ran = tlslab(
            "run", "--suite", "disk", "--scenarios", root, "--reports", mount,
            "--certs", certs, "--jobs", "1",
        )  # fmt: skip
        run = run_folder(mount)
        line = assert_usage_error(ran, str(run), "No space left on device", "stays on disk")
        assert "field `(folder)`" in line
        first_cell_is_stored(run)
    cells = {row.split()[1]: row for row in ran.out.splitlines() if row.startswith("[")}
    assert cells["no-starttls-ses-default"].split()[2:4] == ["delivered", "plaintext"]
    for cell in ("no-starttls-paubox", "tls12-ses-default", "tls12-paubox"):
        assert cells[cell].split()[2:4] == ["error", "ERROR"], ran.out  # never deferred (FAIL)
    portal = ran.out.split("no-starttls-paubox", 1)[1].split("[3/4]", 1)[0]
    assert "lab failure: mx.no-starttls.lab.test: receiver does not offer STARTTLS" in portal
    assert "cannot write the portal copy" in portal
    assert "No space left on device" in portal  # the lab's outbox is on the full disk too
    store = ran.out.split("[3/4]", 1)[1]
    assert store.count("lab failure: the receiver's evidence store failed") == 2, store
    assert STORE_FAILED_REPLY.split(",")[0][4:] in store  # the lab's own 451 reached the sender


CRASHING_CONFTEST = """
import os
from harness.plugin import RUNS_KEY

class CrashingSender:
    id = "paubox"

    def send(self, message):
        raise RuntimeError("driver bug")

    def close(self):
        pass

def pytest_runtest_setup(item):
    if item.name == "no-starttls-paubox":  # this column's driver has a bug
        for _, run in item.config.stash[RUNS_KEY].values():
            run.drivers["paubox"] = CrashingSender()

def pytest_runtest_teardown(item):
    if item.name == "no-starttls-paubox" and {freed}:  # the disk frees before the report
        os.unlink({filler!r})
"""


@pytest.mark.parametrize("freed", [False, True], ids=["stays-full", "freed-after-the-crash"])
def test_under_pytest_a_crashed_cell_is_reported_and_a_full_disk_is_exit_2(
    pytester: pytest.Pytester, certs: Path, freed: bool
) -> None:
    make_root(pytester.path, {"disk": ONE_ROW})
    with small_tmpfs(pytester.path) as mount:
        filler = fill(mount, leave_pages=LEDGER_PAGES + STORED_PAGES)
        pytester.makeconftest(CRASHING_CONFTEST.format(filler=str(filler), freed=freed))
        result = pytester.runpytest(
            "scenarios/suites/disk.yaml", *QUIET, "--lab-reports", str(mount),
            "--lab-certs", str(certs),
        )  # fmt: skip
        result.assert_outcomes(passed=1, failed=1)
        result.stdout.fnmatch_lines(
            ["*LAB ERROR no-starttls-paubox", "*lab failure: the harness crashed in this cell:"]
        )
        run = run_folder(mount)
        first_cell_is_stored(run)
        errors = [line for line in result.errlines if line.startswith("tlslab: error: ")]
        if not freed:
            assert result.ret == 2
            assert len(errors) == 1, result.errlines
            assert str(run) in errors[0]
            assert "No space left on device" in errors[0]
            return
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        assert errors == []
        data = json.loads((run / "results.json").read_text())
    cells = {c["sender"]: c for c in data["results"]}
    assert set(cells) == {"ses-default", "paubox"}, "the crashed cell is in results.json"
    crashed = cells["paubox"]
    assert (crashed["outcome"], crashed["verdict"]) == ("error", "error")
    assert "Traceback (most recent call last)" in crashed["detail"]
    assert "RuntimeError: driver bug" in crashed["detail"]
    assert cells["ses-default"]["verdict"] == "pass"


# ---------------------------------------------------------------- a crash inside one cell


class CrashingSender:
    """A user-defined sender driver whose bug raises inside the cell."""

    id = "ses-default"

    def send(self, message: TestMessage) -> SendReport:
        raise RuntimeError(f"driver bug while sending {message.message_id}")

    def close(self) -> None:
        """Nothing to release."""


class LyingSender:
    """A sender that talks to tls12, sends nothing, and blames the lab in its account."""

    id = "ses-default"

    def __init__(self, lab: RunningLab, phantom: bool = False) -> None:
        """Talk to `lab`; with `phantom`, also claim a connection the receiver never saw."""
        self.lab, self.phantom = lab, phantom

    def send(self, message: TestMessage) -> SendReport:
        endpoint = self.lab.endpoint("tls12")
        with RoutedSMTP((endpoint.host, endpoint.port), "liar.lab.test") as smtp:
            smtp.connect(endpoint.mx_host, endpoint.port)
            attempts = (smtp.local_endpoint(),) + ((("127.0.0.1", 1),) if self.phantom else ())
            smtp.ehlo()
        reply = f"{STORE_FAILED_REPLY} (ENOSPC); 421 4.3.0 Lab receiver error: OSError"
        return SendReport(SendAction.DEFERRED, f"receiver answered {reply}", attempts)

    def close(self) -> None:
        """Nothing to release."""


class FaultDuringSend:
    """Wraps a driver: while it sends, the receiver's store notes a fault (another cell's)."""

    def __init__(self, inner: SenderDriver, store: EvidenceStore) -> None:
        """Send through `inner`; note the fault in `store`'s ledger first."""
        self.inner, self.store, self.id = inner, store, inner.id

    def send(self, message: TestMessage) -> SendReport:
        self.store.faults.record("0123456789AB.eml", OSError(errno.ENOSPC, "No space left"))
        return self.inner.send(message)

    def close(self) -> None:
        """Close the wrapped driver."""
        self.inner.close()


@contextlib.contextmanager
def lab_run(tmp_path: Path, certs: Path) -> Iterator[LabRun]:
    """Start the disk suite's receivers on the local backend and yield a LabRun on them."""
    root = make_root(tmp_path, {"disk": SUITE})
    with open_run(load_suite("disk", root), LocalBackend(), certs, tmp_path / "reports") as run:
        yield run


@pytest.mark.parametrize("jobs", [1, 3])
def test_a_crash_inside_one_cell_is_an_error_cell_and_the_run_goes_on(
    tmp_path: Path, certs: Path, jobs: int
) -> None:
    cells = [("no-starttls", "ses-default"), ("tls12", "paubox"), ("tls12", "ses-default")]
    with lab_run(tmp_path, certs) as run:
        run.drivers["ses-default"] = CrashingSender()
        finished: list[str] = []
        run.run_cells(cells, jobs, lambda result: finished.append(result.id))
        report = run.report()
    assert sorted(finished) == sorted(f"{r}-{s}" for r, s in cells)
    results = {r.id: r for r in report.results}
    assert results["tls12-paubox"].verdict is Verdict.PASS  # the healthy cell, same run
    for cell in ("no-starttls-ses-default", "tls12-ses-default"):
        crashed = results[cell]
        assert (crashed.outcome, crashed.verdict) == (Outcome.ERROR, Verdict.ERROR)
        assert crashed.detail.startswith("lab failure: the harness crashed in this cell:\n")
        assert "Traceback (most recent call last)" in crashed.detail
        assert "RuntimeError: driver bug while sending <" + cell in crashed.detail
        assert crashed.expected is Outcome.DELIVERED


def test_a_sender_claiming_a_lab_fault_still_gets_its_own_verdict(
    tmp_path: Path, certs: Path
) -> None:
    with lab_run(tmp_path, certs) as run:
        run.drivers["ses-default"] = LyingSender(run.lab)
        lied = run.run_cell("tls12", "ses-default")
        honest = run.run_cell("tls12", "paubox")
    assert (lied.outcome, lied.verdict) == (Outcome.DEFERRED, Verdict.FAIL), lied.detail
    assert len(lied.sessions) == 1, "the receiver recorded the session the sender opened"
    assert honest.verdict is Verdict.PASS


def test_a_store_fault_blames_only_the_cells_whose_evidence_is_incomplete(
    tmp_path: Path, certs: Path
) -> None:
    with lab_run(tmp_path, certs) as run:
        tls12 = EvidenceStore(run.lab.evidence_root, "tls12")
        no_tls = EvidenceStore(run.lab.evidence_root, "no-starttls")
        run.drivers["paubox"] = FaultDuringSend(run._driver("paubox"), no_tls)
        recorded = run.run_cell("no-starttls", "paubox")  # its one session is recorded
        run.drivers["ses-default"] = LyingSender(run.lab, phantom=True)
        unfaulted = run.run_cell("tls12", "ses-default")  # the control: no fault
        run.drivers["ses-default"] = FaultDuringSend(LyingSender(run.lab, phantom=True), tls12)
        faulted = run.run_cell("tls12", "ses-default")
    assert (recorded.outcome, recorded.verdict) == (Outcome.FALLBACK, Verdict.PASS)
    assert (unfaulted.outcome, unfaulted.verdict) == (Outcome.DEFERRED, Verdict.FAIL)
    assert unfaulted.detail.endswith("receiver recorded 1 of 2 sessions"), unfaulted.detail
    assert (faulted.outcome, faulted.verdict) == (Outcome.ERROR, Verdict.ERROR)
    assert faulted.detail.startswith(
        "lab failure: the receiver's evidence store failed (0123456789AB.eml: ENOSPC: "
    ), faulted.detail


# ---------------------------------------------------------------- unwritable reports folders


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """Make `folder` read-only for this process: a read-only bind mount as root, else chmod."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_run_into_a_read_only_reports_folder_is_exit_2_naming_it(
    tmp_path: Path, certs: Path
) -> None:
    root = make_root(tmp_path, {"disk": ONE_ROW})
    reports = tmp_path / "reports"
    reports.mkdir()
    with read_only(reports):
        ran = tlslab(
            "run", "--suite", "disk", "--scenarios", root, "--reports", reports, "--certs", certs
        )
    line = assert_usage_error(ran, str(reports), "field `(folder)`", READ_ONLY)
    assert "pass a writable reports folder" in line


def test_run_into_a_reports_path_under_a_file_is_exit_2_naming_it(
    tmp_path: Path, certs: Path
) -> None:
    root = make_root(tmp_path, {"disk": ONE_ROW})
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the reports folder should go\n")
    ran = tlslab(
        "run", "--suite", "disk", "--scenarios", root, "--reports", blocker / "reports",
        "--certs", certs,
    )  # fmt: skip
    assert_usage_error(ran, str(blocker), "Not a directory")


def test_report_into_a_read_only_run_folder_is_exit_2_and_keeps_the_results(
    tmp_path: Path, certs: Path
) -> None:
    root = make_root(tmp_path, {"disk": ONE_ROW})
    reports = tmp_path / "reports"
    first = tlslab(
        "run", "--suite", "disk", "--scenarios", root, "--reports", reports, "--certs", certs
    )
    assert first.status == 0, first.out + first.err
    run = run_folder(reports)
    before = (run / "results.json").read_bytes()
    with read_only(run):
        ran = tlslab("report", run)
    assert_usage_error(ran, str(run), "field `(folder)`", READ_ONLY)
    assert (run / "results.json").read_bytes() == before
    first_cell_is_stored(run)
    again = tlslab("report", run)  # the negative control: writable again, re-rendered
    assert again.status == 0, again.err
    assert again.out.splitlines()[-1] == f"Re-rendered {run}"


def test_under_pytest_an_unwritable_reports_folder_is_exit_2_naming_it(
    pytester: pytest.Pytester, certs: Path
) -> None:
    make_root(pytester.path, {"disk": ONE_ROW})
    blocker = pytester.path / "not-a-folder"
    blocker.write_text("a file where the reports folder should go\n")
    result = pytester.runpytest(
        "scenarios/suites/disk.yaml", *QUIET, "--lab-reports", str(blocker / "reports"),
        "--lab-certs", str(certs),
    )  # fmt: skip
    assert result.ret == 2
    output = result.outlines + result.errlines
    errors = [line for line in output if "tlslab: error: " in line]
    assert len(errors) == 1, output  # pytest's own stop line: "! ...Exit: tlslab: error: ... !"
    assert str(blocker) in errors[0]
    assert "Not a directory" in errors[0]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert blocker.read_text() == "a file where the reports folder should go\n"
