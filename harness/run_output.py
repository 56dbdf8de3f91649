"""A started run's cells with progress, its report written, its summary and drift printed."""

from __future__ import annotations

import sys
from pathlib import Path

from harness import console
from harness.diff import report_drift
from harness.interrupts import stop_name
from harness.model import RunReport
from harness.report import write_report
from harness.runner import LabRun


def run_with_progress(
    run: LabRun, cells: list[tuple[str, str]], jobs: int, reports: Path
) -> tuple[RunReport, Path]:
    """Run the cells, printing each as it ends; write the report, also when stopped; return it."""
    total = len(cells)
    done = iter(range(1, total + 1))
    stopped = ""
    try:
        run.run_cells(cells, jobs, lambda result: console.progress(next(done), total, result))
    except KeyboardInterrupt as stop:
        stopped = stop_name(stop)
        raise
    except BaseException as error:
        stopped = f"a lab failure ({type(error).__name__})"
        raise
    finally:
        report = run.report(stopped)
        run_dir = write_report(report, reports)
        if stopped:
            latest = reports / "latest"
            kept = "still points at the last complete run" if latest.exists() else "not made"
            print(
                f"tlslab: run stopped by {stopped}; its partial report is in {run_dir}; "
                f"{latest} {kept}",
                file=sys.stderr,
            )
    return report, run_dir


def print_outcome(
    report: RunReport, run_dir: Path, baseline: RunReport | None, baseline_path: Path | None
) -> int:
    """Print the matrix, totals and report folder; return 0 when all passed and nothing drifted."""
    print()
    print(console.matrix(report))
    print(console.totals(report))
    print(f"Report: {run_dir}")
    drift = (
        baseline is not None
        and baseline_path is not None
        and report_drift(baseline, baseline_path, report)
    )
    return 0 if console.all_passed(report) and not drift else 1
