"""pytest plugin: suite YAML files are test files, cells `<receiver>-<sender>` are test items."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.baseline import BaselineCheck
from harness.model import CellResult, Verdict
from harness.paths import certs_dir, reports_dir
from harness.report import ReportError, expected_label, outcome_label, write_report
from harness.run_start import backend_named, open_run
from harness.runner import LabRun
from harness.scenarios import LoadedSuite, ScenarioError, load_suite
from lab.backends import BackendError
from lab.pki import CertificateError

REPORT_WRITE_FAILED = 2  # the exit status tlslab gives an unwritable reports folder, too
RUNS_KEY = pytest.StashKey[dict[Path, tuple[contextlib.ExitStack, LabRun]]]()
SIGTERM_KEY = pytest.StashKey[Any]()  # the SIGTERM handler to restore after the session
TERMINATED_KEY = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the lab's options: backend, reports and certificate folders."""
    group = parser.getgroup("tlslab", "Sender TLS Lab")
    group.addoption("--lab-backend", default="local", help="where receivers run (local)")
    group.addoption("--lab-reports", type=Path, default=None, help="reports folder")
    group.addoption("--lab-certs", type=Path, default=None, help="certificate folder")
    group.addoption(
        "--lab-no-report", action="store_true", help="do not write a report for suite runs"
    )
    group.addoption(
        "--lab-baseline", type=Path, default=None, help="stored run: fail when a cell changed"
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker cells carry and prepare the per-session registry of running labs."""
    config.addinivalue_line("markers", "integration: uses real sockets, TLS handshakes, processes")
    config.stash[RUNS_KEY] = {}
    if baseline := config.getoption("--lab-baseline", None):
        runs = config.stash[RUNS_KEY]
        check = BaselineCheck.load(baseline, lambda: [run for _, run in runs.values()])
        config.pluginmanager.register(check, "tlslab-baseline")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect YAML files that live in a `suites` folder as suites of cells."""
    if file_path.suffix in (".yaml", ".yml") and file_path.parent.name == "suites":
        collector: SuiteFile = SuiteFile.from_parent(parent, path=file_path)
        return collector
    return None


class SuiteFile(pytest.File):
    """A suite file: one test item per cell, in row-major order."""

    def collect(self) -> Iterator[CellItem]:
        """Load and validate the suite, then yield its cells."""
        try:
            loaded = load_suite(self.path)
        except ScenarioError as error:
            raise self.CollectError(str(error)) from None
        for receiver, sender in loaded.suite.cell_ids:
            yield CellItem.from_parent(
                self, name=f"{receiver}-{sender}", loaded=loaded, receiver=receiver, sender=sender
            )


class CellFailed(Exception):
    """A cell's observed outcome differs from its expectation, or the lab broke."""

    def __init__(self, result: CellResult) -> None:
        """Keep the result for the failure report."""
        super().__init__(result.id)
        self.result = result


class CellItem(pytest.Item):
    """One cell: send through the sender to the receiver and judge what arrived."""

    def __init__(self, *, loaded: LoadedSuite, receiver: str, sender: str, **kwargs: Any) -> None:
        """Bind the item to its suite and cell."""
        super().__init__(**kwargs)
        self.loaded, self.receiver, self.sender = loaded, receiver, sender
        self.add_marker(pytest.mark.integration)

    def runtest(self) -> None:
        """Run the cell on the session's lab for this suite; fail unless the verdict is pass."""
        result = _lab_run(self.config, self.loaded).run_cell(self.receiver, self.sender)
        self.user_properties.append(("outcome", outcome_label(result)))
        if result.verdict is not Verdict.PASS:
            raise CellFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        """Show expected vs actual and the nearest evidence instead of a traceback."""
        if isinstance(excinfo.value, CellFailed):
            return failure_text(excinfo.value.result)
        if isinstance(excinfo.value, BackendError | CertificateError | ReportError):
            return f"lab error (not the sender's fault): {excinfo.value}"
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Path, int, str]:
        """Name the suite file and the cell in pytest's report."""
        return self.path, 0, f"cell {self.name}"


def failure_text(result: CellResult) -> str:
    """Return expected vs actual plus the evidence lines of a cell."""
    label = "LAB ERROR" if result.verdict is Verdict.ERROR else "FAIL"
    lines = [
        f"{label} {result.id}",
        f"  expected: {expected_label(result)}",
        f"  observed: {outcome_label(result)}",
        f"  detail:   {result.detail}",
        f"  sender:   {result.sender_report}",
        f"  received: {result.received or '(no message arrived)'}",
    ]
    lines += [f"  session:  {s.model_dump_json()}" for s in result.sessions]
    return "\n".join(lines)


def _on_sigterm(config: pytest.Config, signum: int, frame: object) -> None:
    """Note the SIGTERM, then interrupt the session the way Ctrl-C does (labs stop, reports)."""
    config.stash[TERMINATED_KEY] = True
    raise KeyboardInterrupt


def _catch_sigterm(config: pytest.Config) -> None:
    """While suite cells run, turn SIGTERM into an interrupt; sessionfinish restores the old one."""
    if SIGTERM_KEY in config.stash or threading.current_thread() is not threading.main_thread():
        return
    config.stash[SIGTERM_KEY] = signal.signal(
        signal.SIGTERM, functools.partial(_on_sigterm, config)
    )


def _lab_run(config: pytest.Config, loaded: LoadedSuite) -> LabRun:
    """Return the running lab for a suite, starting it on first use in this session."""
    runs = config.stash[RUNS_KEY]
    _catch_sigterm(config)
    if loaded.path not in runs:
        stack = contextlib.ExitStack()
        backend = backend_named(config.getoption("--lab-backend"))
        try:
            run = stack.enter_context(
                open_run(
                    loaded,
                    backend,
                    certs_dir(config.getoption("--lab-certs")),
                    reports_dir(config.getoption("--lab-reports")),
                )
            )
        except CertificateError as error:  # no cell can run: stop as `tlslab` does, status 2
            stack.close()
            pytest.exit(f"tlslab: error: {error}", returncode=2)
        except ReportError as error:  # no cell can run without a writable reports folder
            stack.close()
            pytest.exit(f"tlslab: error: {error}", returncode=REPORT_WRITE_FAILED)
        runs[loaded.path] = (stack, run)
    return runs[loaded.path][1]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Stop every lab this session started and write a report for each suite run.

    A session interrupted (Ctrl-C) writes its reports marked so and leaves `latest` alone.
    """
    runs = session.config.stash.get(RUNS_KEY, {})
    stopped = ""
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        stopped = "SIGTERM" if session.config.stash.get(TERMINATED_KEY, False) else "SIGINT"
    if SIGTERM_KEY in session.config.stash:
        signal.signal(signal.SIGTERM, session.config.stash[SIGTERM_KEY])
        del session.config.stash[SIGTERM_KEY]
    for stack, run in runs.values():
        with stack:
            if run.results and not session.config.getoption("--lab-no-report"):
                try:
                    folder = write_report(run.report(stopped), run.run_dir.parent)
                except ReportError as error:  # e.g. a full or read-only reports folder
                    print(f"tlslab: error: {error}", file=sys.stderr)
                    session.exitstatus = REPORT_WRITE_FAILED
                    continue
                session.config.stash.setdefault(REPORTS_KEY, []).append(folder)
    runs.clear()


REPORTS_KEY = pytest.StashKey[list[Path]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Point at the reports written in this session."""
    for folder in config.stash.get(REPORTS_KEY, []):
        terminalreporter.write_line(f"Sender TLS Lab report: {folder}")


__all__ = ["CellItem", "SuiteFile"]
