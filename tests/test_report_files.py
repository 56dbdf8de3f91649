"""The shared report-file mechanics: the `latest`/`scoreboard` link and the closed schema."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from harness.report_files import OverlappedWrites, ReportError, closed_schema, point_symlink


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


def write_all(files: dict[Path, Iterable[str]]) -> None:
    """Write each file's pieces through one OverlappedWrites block."""
    with OverlappedWrites() as writes:
        for path, chunks in files.items():
            writes.write(path, chunks)


def test_overlapped_writes_put_every_file_in_place_durably_before_the_block_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    (tmp_path / "b.txt").write_text("old")
    write_all(
        {tmp_path / "a.txt": ["one ", "piece ", "at a time\n"], tmp_path / "b.txt": ["new\n"]}
    )
    assert (tmp_path / "a.txt").read_text() == "one piece at a time\n"
    assert (tmp_path / "b.txt").read_text() == "new\n"
    assert len(synced) == 2
    assert oct((tmp_path / "a.txt").stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]  # no temp files


def test_a_failed_fsync_is_raised_and_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path / ".b.txt")):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    (tmp_path / "b.txt").write_text("old")
    with pytest.raises(OSError, match="Input/output error"):
        write_all({tmp_path / "a.txt": ["a\n"], tmp_path / "b.txt": ["new\n"]})
    assert (tmp_path / "b.txt").read_text() == "old"  # never replaced by an unflushed file
    assert (tmp_path / "a.txt").read_text() == "a\n"  # control: the other one is in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_an_error_making_a_file_stops_there_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    def broken() -> Iterator[str]:
        yield "half"
        raise ValueError("cannot render")

    files = {tmp_path / "a.txt": ["a\n"], tmp_path / "b.txt": broken(), tmp_path / "c.txt": ["c"]}
    with pytest.raises(ValueError, match="cannot render"):
        write_all(files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # written before the error
