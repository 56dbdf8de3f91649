"""`pytest --lab-baseline PATH`: fail the session when a cell changed against a stored run."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from harness.diff import cells_compared, diff_runs, render_table, summary_line
from harness.model import RunReport
from harness.report import ReportError, load_results
from harness.runner import LabRun

SECTION = "Sender TLS Lab baseline"


def comparable(
    baseline: RunReport, report: RunReport, suite_cells: Iterable[tuple[str, str]]
) -> RunReport:
    """Return the baseline without the suite's cells this run skipped (deselected with -k)."""
    ran = {(c.receiver, c.sender) for c in report.results}
    skipped = set(suite_cells) - ran
    kept = tuple(c for c in baseline.results if (c.receiver, c.sender) not in skipped)
    return baseline.model_copy(update={"results": kept})


class BaselineCheck:
    """A pytest plugin object: diffs each suite the session ran with one stored run."""

    def __init__(
        self, path: Path, baseline: RunReport, runs: Callable[[], Iterable[LabRun]]
    ) -> None:
        """Keep the stored run and a way to reach the session's suite runs."""
        self.path, self.baseline, self.runs = path, baseline, runs
        self.lines: list[str] = []

    @classmethod
    def load(cls, path: Path, runs: Callable[[], Iterable[LabRun]]) -> BaselineCheck:
        """Read the stored run now, before the session moves `latest`; bad input: usage error."""
        try:
            return cls(path, load_results(path), runs)
        except ReportError as error:
            raise pytest.UsageError(f"--lab-baseline: {error}") from None

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Diff every suite run with the baseline; set exit status 1 when any cell changed."""
        drift = False
        for run in self.runs():
            if not run.results:
                continue
            report = run.report()
            old = comparable(self.baseline, report, run.loaded.suite.cell_ids)
            changes = diff_runs(old, report)
            summary = summary_line(changes, cells_compared(old, report))
            self.lines.append(f"Baseline {self.path} vs suite {report.suite}: {summary}")
            if self.baseline.suite != report.suite:
                self.lines.append(f"note: the baseline is a run of suite {self.baseline.suite}")
            if changes:
                drift = True
                self.lines += render_table(changes).splitlines()
        if drift:
            self.lines.append("Drift against the baseline: the session fails (exit status 1)")
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """Print the comparison with the baseline after the test results."""
        if self.lines:
            terminalreporter.section(SECTION)
            for line in self.lines:
                terminalreporter.write_line(line)


__all__ = ["BaselineCheck", "comparable"]
