"""Compare two scoreboards: cells whose outcome, TLS, risk or verdict changed; version changes."""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.diff import ABSENT, Fact
from harness.scoreboard.model import BoardCell, Scoreboard

KINDS = ("outcome", "tls", "risk", "verdict", "added", "removed")


def _tls(cell: BoardCell) -> str:
    """Return a delivery's TLS version, or `plaintext`."""
    return cell.tls.version.value if cell.tls else "plaintext"


def label(cell: BoardCell | None) -> str:
    """Return `delivered TLSv1.3`, `deferred`, or `-` when absent."""
    if cell is None:
        return ABSENT
    return f"delivered {_tls(cell)}" if cell.outcome.value == "delivered" else cell.outcome.value


def _verdict(cell: BoardCell) -> str:
    """Return the verdict, or `observed-only`."""
    return cell.verdict.value if cell.verdict else "observed-only"


@dataclasses.dataclass(frozen=True)
class BoardChange:
    """One cell that differs between two scoreboards and every fact that changed."""

    old: BoardCell | None
    new: BoardCell | None
    facts: tuple[Fact, ...]

    @property
    def id(self) -> str:
        """Return the cell id."""
        cell = self.new or self.old
        assert cell is not None
        return cell.id

    @property
    def what(self) -> str:
        """Return every changed fact as one line."""
        return "; ".join(f.text() for f in self.facts)


def _facts(old: BoardCell | None, new: BoardCell | None) -> tuple[Fact, ...]:
    """Return what changed in one cell between two scoreboards."""
    if old is None or new is None:
        return (Fact("added" if old is None else "removed", label(old), label(new)),)
    facts = []
    if old.outcome is not new.outcome:
        facts.append(Fact("outcome", old.outcome.value, new.outcome.value))
    elif label(old) != label(new):  # both delivered, over different TLS (or plaintext)
        facts.append(Fact("tls", _tls(old), _tls(new)))
    if old.risk is not new.risk:
        facts.append(Fact("risk", old.risk.value, new.risk.value))
    if _verdict(old) != _verdict(new):
        facts.append(Fact("verdict", _verdict(old), _verdict(new)))
    return tuple(facts)


def diff_boards(old: Scoreboard, new: Scoreboard) -> list[BoardChange]:
    """Return every cell that changed, or that only one scoreboard has."""
    before = {(c.receiver, c.sender): c for c in old.cells}
    after = {(c.receiver, c.sender): c for c in new.cells}
    changes = []
    for key in [*after, *(k for k in before if k not in after)]:
        facts = _facts(before.get(key), after.get(key))
        if facts:
            changes.append(BoardChange(before.get(key), after.get(key), facts))
    return changes


def version_changes(old: Scoreboard, new: Scoreboard) -> list[str]:
    """Return `Postfix 3.7.11 -> 3.8.6` for every software whose version changed or appeared."""
    before = {v.software: v.version for v in old.versions}
    after = {v.software: v.version for v in new.versions}
    return [
        f"{name} {before.get(name, ABSENT)} -> {after.get(name, ABSENT)}"
        for name in dict.fromkeys([*before, *after])
        if before.get(name) != after.get(name)
    ]


def compared(old: Scoreboard, new: Scoreboard) -> int:
    """Return how many distinct cells the two scoreboards have between them."""
    return len({c.id for c in old.cells} | {c.id for c in new.cells})


def render(changes: list[BoardChange], total: int, versions: list[str]) -> str:
    """Return the versions that changed, the table of changed cells and a summary line."""
    lines = [f"version: {v}" for v in versions]
    if changes:
        rows = [["cell", "old", "new", "what changed"]]
        rows += [[c.id, label(c.old), label(c.new), c.what] for c in changes]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        table = [
            "  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        table.insert(1, "  ".join("-" * w for w in widths))
        lines += table
        counts = {k: sum(k in [f.kind for f in c.facts] for c in changes) for k in KINDS}
        parts = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        lines.append(f"{len(changes)} of {total} cells changed: {parts}")
    else:
        lines.append(f"no cell changed ({total} cells compared)")
    return "\n".join(lines)


def document(
    changes: list[BoardChange], old: str, new: str, total: int, versions: list[str]
) -> dict[str, Any]:
    """Return the diff as a JSON-ready object."""
    return {
        "old": old,
        "new": new,
        "compared": total,
        "changed": len(changes),
        "versions": versions,
        "cells": [
            {
                "cell": c.id,
                "old": None if c.old is None else label(c.old),
                "new": None if c.new is None else label(c.new),
                "changes": [f._asdict() for f in c.facts],
                "what": c.what,
            }
            for c in changes
        ],
    }


__all__ = ["BoardChange", "compared", "diff_boards", "document", "render", "version_changes"]
