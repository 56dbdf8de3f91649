"""results.json as a stream of pieces: the same bytes as one `json.dumps`, one cell at a time."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pydantic_core

from harness.model import CellResult, RunReport

SCHEMA_ID = "sender-tls-lab/results/v1"
_RESULTS_MARK = '\n  "results": []'  # top-level keys alone sit at two spaces: the mark is unique
_CELL_INDENT = "\n    "  # a results[] item's lines, as json.dumps(indent=2) nests them


_INT64 = range(-(2**63), 2**63)


def _plain(data: Any) -> bool:
    """Return whether data is only dicts with str keys, lists, str, int, bool and None.

    Those (no floats, no subclasses) pydantic writes exactly as the json module does.
    """
    pending = [data]
    while pending:
        item = pending.pop()
        kind = type(item)
        if kind is dict:
            if not all(type(key) is str for key in item):
                return False
            pending.extend(item.values())
        elif kind is list:
            pending.extend(item)
        elif kind is int:
            if item not in _INT64:
                return False
        elif item is not None and kind is not str and kind is not bool:
            return False
    return True


def pretty_json(data: Any) -> str:
    """Return data as json.dumps(indent=2, ensure_ascii=False) writes it (no final newline).

    Plain data (_plain) is written by pydantic, several times faster than the json module,
    whose C encoder does not indent.
    """
    if _plain(data):
        return pydantic_core.to_json(data, indent=2).decode()
    return json.dumps(data, indent=2, ensure_ascii=False)


def _float_text_agrees(value: float) -> bool:
    """Return whether pydantic's JSON writes this float exactly as Python's json does."""
    if not math.isfinite(value):
        return False
    return pydantic_core.to_json(value).decode() == json.dumps(value)


def cell_json(cell: CellResult) -> str:
    """Return one cell as `pretty_json(cell.model_dump(mode="json"))` writes it.

    pydantic writes it (in Rust, several times faster than the json module with an indent) when
    its only float, `seconds`, is written the same way by both; otherwise the json module does.
    """
    if _float_text_agrees(cell.seconds):
        return cell.model_dump_json(indent=2)
    return pretty_json(cell.model_dump(mode="json"))


def _same(cell: CellResult) -> CellResult:
    """Return the cell as it is."""
    return cell


def results_chunks(
    report: RunReport, finish: Callable[[CellResult], CellResult] = _same
) -> Iterator[str]:
    """Yield the text of results.json in pieces, byte-for-byte the whole document's dump.

    Only one cell is turned into JSON at a time (after `finish`, e.g. report_view.CellFinish):
    a 10,000-cell run never holds its whole document (about 34 MB of text) in memory.
    """
    rest = report.model_dump(mode="json", exclude={"results"})
    document: dict[str, Any] = {"schema": SCHEMA_ID}
    for name in RunReport.model_fields:
        document[name] = [] if name == "results" else rest[name]
    text = pretty_json(document) + "\n"
    if not report.results:
        yield text
        return
    before, after = text.split(_RESULTS_MARK, 1)
    yield before + '\n  "results": ['
    for index, cell in enumerate(report.results):
        text = cell_json(finish(cell)).replace("\n", _CELL_INDENT)
        yield ("," if index else "") + _CELL_INDENT + text
    yield "\n  ]" + after


__all__ = ["SCHEMA_ID", "cell_json", "pretty_json", "results_chunks"]
