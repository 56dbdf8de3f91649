"""`tlslab run`: run every cell of a suite with progress, write its report, compare a baseline.

The receivers are told to start before the code that runs cells and reports is imported: it is
imported while they boot (`harness.run_output`, in `open_run`'s `meanwhile`).
"""

from __future__ import annotations

import argparse
import importlib
from typing import TYPE_CHECKING

from harness.paths import certs_dir, reports_dir
from harness.provenance import prefetch_lab_commit
from harness.run_start import backend_named, open_run
from harness.scenarios import LoadedSuite, ScenarioError, load_suite

if TYPE_CHECKING:
    from harness.model import RunReport

CELL_WORK = "harness.run_output"  # runs the cells and writes the report: imported meanwhile


def cmd_run(args: argparse.Namespace) -> int:
    """Run every cell of a suite with progress, write the report; exit 1 on a non-pass or drift."""
    loaded = load_suite(args.suite, args.scenarios)
    baseline = _baseline(args)  # before `latest` moves
    backend = backend_named(args.backend)
    reports = reports_dir(args.reports)
    cells = _cells_of(loaded, args.receivers)
    print(f"Suite {loaded.suite.id}: {len(cells)} cells on the {backend.name} backend")
    prefetch_lab_commit()  # the report's provenance: git runs while the receivers start
    with open_run(
        loaded, backend, certs_dir(args.certs), reports, meanwhile=_import_cell_work
    ) as run:
        from harness.run_output import run_with_progress

        report, run_dir = run_with_progress(run, cells, args.jobs, reports)
    from harness.run_output import print_outcome

    return print_outcome(report, run_dir, baseline, args.baseline)


def _import_cell_work() -> None:
    """Import the code that runs the cells and writes the report (the receivers boot meanwhile)."""
    importlib.import_module(CELL_WORK)


def _baseline(args: argparse.Namespace) -> RunReport | None:
    """Return the `--baseline` run's report, or None without one."""
    if not args.baseline:
        return None
    from harness.report import load_results  # only a run compared with a baseline reads one

    return load_results(args.baseline)


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
