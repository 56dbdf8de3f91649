"""Compare two runs cell by cell (outcome, TLS version, verdict, added, removed); print drift."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from harness.labels import outcome_label, tls_label
from harness.model import CellResult, Outcome, RunReport, Verdict, cell_id

KINDS = ("outcome", "tls", "verdict", "added", "removed")
KIND_NAMES = {"tls": "TLS version"}
ABSENT = "-"


class Fact(NamedTuple):
    """One changed fact of a cell: its kind (see KINDS), the old value and the new one."""

    kind: str
    old: str
    new: str

    def text(self) -> str:
        """Return the fact as `outcome refused -> delivered`, `added: only in the new run`, ..."""
        if self.kind == "added":
            return "added: only in the new run"
        if self.kind == "removed":
            return "removed: only in the old run"
        return f"{KIND_NAMES.get(self.kind, self.kind)} {self.old} -> {self.new}"


@dataclasses.dataclass(frozen=True)
class CellChange:
    """One cell that differs between two runs: its old and new result and every changed fact."""

    receiver: str
    sender: str
    old: CellResult | None
    new: CellResult | None
    facts: tuple[Fact, ...]

    @property
    def id(self) -> str:
        """Return the cell id `<receiver>-<sender>`."""
        return cell_id(self.receiver, self.sender)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Return the kinds of the changed facts, e.g. ('outcome', 'verdict')."""
        return tuple(f.kind for f in self.facts)

    @property
    def what(self) -> str:
        """Return every changed fact as one line, `; `-separated."""
        return "; ".join(f.text() for f in self.facts)


def _facts(old: CellResult | None, new: CellResult | None) -> tuple[Fact, ...]:
    """Return what changed between two results of one cell (either may be missing)."""
    if old is None or new is None:
        kind = "added" if old is None else "removed"
        return (Fact(kind, label(old), label(new)),)
    facts = []
    if old.outcome is not new.outcome:
        facts.append(Fact("outcome", old.outcome.value, new.outcome.value))
    elif old.outcome is Outcome.DELIVERED and tls_label(old) != tls_label(new):
        facts.append(Fact("tls", tls_label(old), tls_label(new)))
    if old.verdict is not new.verdict:
        facts.append(Fact("verdict", old.verdict.value, new.verdict.value))
    return tuple(facts)


def _by_cell(report: RunReport) -> dict[tuple[str, str], CellResult]:
    """Return a run's results keyed by (receiver, sender), in the run's order."""
    return {(c.receiver, c.sender): c for c in report.results}


def diff_runs(old: RunReport, new: RunReport) -> list[CellChange]:
    """Return every cell whose outcome, TLS version or verdict changed, or that only one run has."""
    before, after = _by_cell(old), _by_cell(new)
    changes = []
    for key in [*after, *(k for k in before if k not in after)]:
        facts = _facts(before.get(key), after.get(key))
        if facts:
            changes.append(CellChange(key[0], key[1], before.get(key), after.get(key), facts))
    return changes


def cells_compared(old: RunReport, new: RunReport) -> int:
    """Return how many distinct cells the two runs have between them."""
    return len(_by_cell(old).keys() | _by_cell(new).keys())


def label(cell: CellResult | None) -> str:
    """Return a cell's outcome label (`delivered TLSv1.2`, `refused`), or `-` when absent."""
    return ABSENT if cell is None else outcome_label(cell)


def render_table(changes: Iterable[CellChange]) -> str:
    """Return the changes as an aligned text table: cell, old, new, what changed."""
    rows = [["cell", "old", "new", "what changed"]]
    rows += [[c.id, label(c.old), label(c.new), c.what] for c in changes]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_line(changes: list[CellChange], compared: int) -> str:
    """Return `no cell changed (N cells compared)` or `K of N cells changed: 1 outcome, ...`."""
    if not changes:
        return f"no cell changed ({compared} cells compared)"
    counts = {k: sum(k in c.kinds for c in changes) for k in KINDS}
    parts = ", ".join(f"{n} {KIND_NAMES.get(k, k)}" for k, n in counts.items() if n)
    noun = "cell" if compared == 1 else "cells"
    return f"{len(changes)} of {compared} {noun} changed: {parts}"


def diff_document(changes: list[CellChange], old: str, new: str, compared: int) -> dict[str, Any]:
    """Return the diff as a JSON-ready object: both paths, counts and every changed cell."""
    return {
        "old": old,
        "new": new,
        "compared": compared,
        "changed": len(changes),
        "cells": [
            {
                "cell": c.id,
                "receiver": c.receiver,
                "sender": c.sender,
                "old": None if c.old is None else label(c.old),
                "new": None if c.new is None else label(c.new),
                "old_verdict": None if c.old is None else c.old.verdict.value,
                "new_verdict": None if c.new is None else c.new.verdict.value,
                "changes": [f._asdict() for f in c.facts],
                "what": c.what,
            }
            for c in changes
        ],
    }


def report_drift(baseline: RunReport, path: Path, report: RunReport) -> bool:
    """Print how a run differs from a stored baseline run; return True when any cell changed."""
    changes = diff_runs(baseline, report)
    print()
    print(f"Baseline {path}: {summary_line(changes, cells_compared(baseline, report))}")
    if baseline.suite != report.suite:
        print(f"note: the baseline is a run of suite {baseline.suite}, this is {report.suite}")
    if not changes:
        return False
    print(render_table(changes))
    passed = all(r.verdict is Verdict.PASS for r in report.results)
    because = " even though every verdict passed" if passed else ""
    print(f"Drift against the baseline: exit 1{because}")
    return True


__all__ = ["CellChange", "Fact", "diff_runs", "render_table", "report_drift", "summary_line"]
