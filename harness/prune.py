"""`tlslab prune --keep N`: remove all but the newest N run folders, never the `latest` one."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from harness.paths import reports_dir
from harness.report import LATEST, RESULTS

SubParsers = argparse._SubParsersAction  # argparse has no public name for it


def add_prune_command(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Add `tlslab prune` to the parser."""
    prune = sub.add_parser("prune", help="remove old run folders, keeping the newest N")
    prune.add_argument("--keep", type=int, required=True, metavar="N", help="runs to keep (>= 0)")
    prune.add_argument("--reports", type=Path, help="reports folder (default: reports/)")
    prune.set_defaults(handler=cmd_prune)


def run_folders(reports: Path) -> list[Path]:
    """Return the run folders (those holding a results.json), oldest first by run id."""
    if not reports.is_dir():
        return []
    runs = [p for p in reports.iterdir() if p.is_dir() and not p.is_symlink()]
    return sorted((p for p in runs if (p / RESULTS).is_file()), key=lambda p: p.name)


def prune(reports: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` run folders and never `latest`'s; return those removed."""
    latest = (reports / LATEST).resolve() if (reports / LATEST).is_symlink() else None
    runs = run_folders(reports)
    old = runs[: max(0, len(runs) - keep)]
    removed = []
    for folder in old:
        if latest is not None and folder.resolve() == latest:
            continue
        shutil.rmtree(folder)
        removed.append(folder)
    return removed


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune the reports folder and say what was removed."""
    if args.keep < 0:
        print("tlslab: error: argument --keep: must be 0 or more", file=sys.stderr)
        return 2
    reports = reports_dir(args.reports)
    removed = prune(reports, args.keep)
    for folder in removed:
        print(f"removed {folder}")
    print(f"removed {len(removed)} runs; {len(run_folders(reports))} left in {reports}")
    return 0


__all__ = ["add_prune_command", "prune", "run_folders"]
