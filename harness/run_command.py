"""`tlslab run`: run every cell of a suite with progress, write its report, compare a baseline."""

from __future__ import annotations

import argparse
import sys

from harness import console
from harness.diff import report_drift
from harness.interrupts import stop_name
from harness.paths import certs_dir, reports_dir
from harness.provenance import prefetch_lab_commit
from harness.report import load_results, write_report
from harness.runner import backend_named, open_run
from harness.scenarios import LoadedSuite, ScenarioError, load_suite


def cmd_run(args: argparse.Namespace) -> int:
    """Run every cell of a suite with progress, write the report; exit 1 on a non-pass or drift."""
    loaded = load_suite(args.suite, args.scenarios)
    baseline = load_results(args.baseline) if args.baseline else None  # before `latest` moves
    backend = backend_named(args.backend)
    reports = reports_dir(args.reports)
    cells = _cells_of(loaded, args.receivers)
    total = len(cells)
    print(f"Suite {loaded.suite.id}: {total} cells on the {backend.name} backend")
    prefetch_lab_commit()  # the report's provenance: git runs while the receivers start
    with open_run(loaded, backend, certs_dir(args.certs), reports) as run:
        done = iter(range(1, total + 1))
        stopped = ""
        try:
            run.run_cells(
                cells, args.jobs, lambda result: console.progress(next(done), total, result)
            )
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
    print()
    print(console.matrix(report))
    print(console.totals(report))
    print(f"Report: {run_dir}")
    drift = baseline is not None and report_drift(baseline, args.baseline, report)
    return 0 if console.all_passed(report) and not drift else 1


def _cells_of(loaded: LoadedSuite, wanted: str | None) -> list[tuple[str, str]]:
    """Return the suite's cells, or those of the comma-separated receivers asked for."""
    if not wanted:
        return loaded.suite.cell_ids
    rows = [w.strip() for w in wanted.split(",") if w.strip()]
    for row in rows:
        if row not in loaded.suite.receivers:
            raise ScenarioError(
                loaded.path, "--receivers", f"'{row}' is not a receiver of this suite",
                f"use some of {list(loaded.suite.receivers)}",
            )  # fmt: skip
    return [(r, s) for r, s in loaded.suite.cell_ids if r in rows]
