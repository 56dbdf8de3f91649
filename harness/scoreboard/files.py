"""scoreboard.json (with its schema), index.html and scoreboard.md; `reports/scoreboard` link."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.report_files import (
    ReportError,
    atomic_write,
    closed_schema,
    error_field,
    point_symlink,
    unwritable_as_report_error,
)
from harness.scoreboard.model import SCHEMA_ID, Scoreboard
from harness.scoreboard.page import render_page
from harness.scoreboard.text import render_markdown

BOARD_JSON, BOARD_HTML, BOARD_MD = "scoreboard.json", "index.html", "scoreboard.md"
LINK = "scoreboard"  # reports/scoreboard -> the latest complete scoreboard's run folder
SCHEMA_PATH = Path(__file__).with_name("scoreboard.schema.json")


def board_document(board: Scoreboard) -> dict[str, Any]:
    """Return the scoreboard.json content: the schema id, then every field."""
    return {"schema": SCHEMA_ID, **board.model_dump(mode="json")}


def board_schema() -> dict[str, Any]:
    """Return the JSON Schema of scoreboard.json, generated from Scoreboard (every key emitted)."""
    return closed_schema(Scoreboard, SCHEMA_ID)


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    """Write the JSON Schema of scoreboard.json (default: next to this module)."""
    atomic_write(path, json.dumps(board_schema(), indent=2) + "\n")
    return path


def write_board(board: Scoreboard, run_dir: Path) -> list[Path]:
    """Write scoreboard.json, index.html and scoreboard.md into the run folder."""
    files = {
        BOARD_JSON: json.dumps(board_document(board), indent=2, ensure_ascii=False) + "\n",
        BOARD_HTML: render_page(board),
        BOARD_MD: render_markdown(board),
    }
    with unwritable_as_report_error(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            atomic_write(run_dir / name, text)
    return [run_dir / name for name in files]


def point_link(reports: Path, run_dir: Path) -> Path:
    """Point `reports/scoreboard` at the run folder (relative symlink, swapped atomically)."""
    return point_symlink(reports, LINK, run_dir)


def is_board(path: Path) -> bool:
    """Return True when `path` is a scoreboard.json, or a folder holding one."""
    file = path / BOARD_JSON if path.is_dir() else path
    if path.is_dir():
        return file.is_file()
    try:
        with file.open("rb") as handle:
            head = handle.read(200).decode("utf-8", "replace")
    except OSError:
        return False
    return f'"schema": "{SCHEMA_ID}"' in head


def load_board(path: Path) -> Scoreboard:
    """Read a scoreboard.json (or the one in a folder); raise ReportError naming the field."""
    file = path / BOARD_JSON if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(
            file, "(file)", "no such file; pass a scoreboard.json or its folder"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(file, "(file)", f"cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        why = f"not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"
        raise ReportError(file, "(json)", f"{why}; re-run `make scoreboard`") from None
    if not isinstance(data, dict) or data.pop("schema", None) != SCHEMA_ID:
        raise ReportError(file, "schema", f"expected {SCHEMA_ID!r}: not a scoreboard.json")
    try:
        return Scoreboard.model_validate(data)
    except ValidationError as exc:
        raise ReportError(
            file, error_field(exc), f"{exc.errors()[0]['msg']}; re-run the scoreboard"
        ) from None


__all__ = ["board_schema", "is_board", "load_board", "point_link", "write_board", "write_schema"]
