"""The shared report-file mechanics: the `latest`/`scoreboard` link and the closed schema."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from harness.report_files import ReportError, closed_schema, point_symlink


def test_point_symlink_moves_the_link_to_the_newest_run(tmp_path: Path) -> None:
    """A second call repoints the relative link; nothing temporary is left in the folder."""
    first, second = tmp_path / "run-1", tmp_path / "run-2"
    first.mkdir()
    second.mkdir()
    point_symlink(tmp_path, "latest", first)
    link = point_symlink(tmp_path, "latest", second)
    assert link.is_symlink()
    assert link.readlink() == Path("run-2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "run-1", "run-2"]


def test_point_symlink_refuses_to_replace_a_real_folder(tmp_path: Path) -> None:
    """A folder where the link belongs is named in the error and kept with its contents."""
    run = tmp_path / "run-1"
    run.mkdir()
    (tmp_path / "latest").mkdir()
    (tmp_path / "latest" / "keep.txt").write_text("mine")
    with pytest.raises(ReportError, match="is not a symlink") as raised:
        point_symlink(tmp_path, "latest", run)
    assert raised.value.path == tmp_path / "latest"
    assert (tmp_path / "latest" / "keep.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


class _Record(BaseModel):
    name: str
    note: str | None = None


def test_closed_schema_requires_every_property_and_the_schema_id() -> None:
    """Optional fields are still emitted, so the schema requires them; `schema` comes first."""
    schema = closed_schema(_Record, "lab/test/v1")
    assert schema["$id"] == "lab/test/v1"
    assert schema["required"] == ["schema", "name", "note"]
    assert next(iter(schema["properties"])) == "schema"
    assert closed_schema(_Record, "other/v2")["properties"]["schema"]["const"] == "other/v2"
