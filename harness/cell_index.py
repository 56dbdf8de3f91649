"""Per-run lookups built once per results tuple: a run's cells grouped by receiver or sender."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from harness.model import CellResult

Axis = Literal["receiver", "sender"]
_GROUPS: list[tuple[Sequence[CellResult], Axis, dict[str, list[CellResult]]]] = []
GROUPS_KEPT = 4  # (results, axis) groupings kept; each holds its results: identities stay unique


def cells_by(results: Sequence[CellResult], axis: Axis) -> dict[str, list[CellResult]]:
    """Return the results grouped by receiver or sender id, each group in results order.

    Built once per results tuple (by identity), so a renderer asking for every row and column
    reads the results once instead of once per row and per column.
    """
    for indexed, kind, groups in list(_GROUPS):
        if indexed is results and kind == axis:
            return groups
    groups = {}
    for cell in results:
        groups.setdefault(cell.receiver if axis == "receiver" else cell.sender, []).append(cell)
    _GROUPS.insert(0, (results, axis, groups))
    del _GROUPS[GROUPS_KEPT:]
    return groups


def cells_of(results: Sequence[CellResult], axis: Axis, key: str) -> list[CellResult]:
    """Return the cells of one receiver row or sender column, in results order."""
    return cells_by(results, axis).get(key, [])


__all__ = ["cells_by", "cells_of"]
