"""The file mechanics every report writer shares: one-line errors, atomic writes, schemas, links."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ValidationError


class ReportError(Exception):
    """A results.json (or a reports folder) that cannot be used: names the path, field and fix."""

    def __init__(self, path: Path, field: str, fix: str) -> None:
        """Keep the path, the offending field and what would fix it."""
        self.path, self.field, self.fix = path, field, " ".join(fix.split())
        super().__init__(f"{path}: field `{field}`: {self.fix}")


def closed_schema(model: type[BaseModel], schema_id: str) -> dict[str, Any]:
    """Return `model`'s JSON Schema with a `schema` const first and every property required."""
    schema = model.model_json_schema(mode="serialization")
    for node in [schema, *schema.get("$defs", {}).values()]:
        if "properties" in node:
            node["required"] = list(node["properties"])
    schema["properties"] = {
        "schema": {"const": schema_id, "type": "string"},
        **schema["properties"],
    }
    schema["required"] = ["schema", *schema["required"]]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": schema_id, **schema}


def error_field(exc: ValidationError) -> str:
    """Return the first pydantic error's location written as `results[0].outcome`."""
    field = ""
    for part in exc.errors()[0]["loc"]:
        field += f"[{part}]" if isinstance(part, int) else f".{part}" if field else str(part)
    return field or "(top level)"


def atomic_write(path: Path, text: str) -> None:
    """Write text to path through a fsynced temp file in the same folder and os.replace."""
    atomic_write_chunks(path, (text,))


def atomic_write_chunks(path: Path, chunks: Iterable[str]) -> None:
    """Write the pieces of a text to path, in order, as atomic_write does the whole text."""
    handle, tmp = _write_unsynced(path, chunks)
    _put_in_place(handle, tmp, path)


class OverlappedWrites:
    """Atomic writes of several files whose fsyncs and renames run in threads, side by side.

    Each file is written in the calling thread; its fsync and rename then overlap the next
    file's writing and each other (the disk flushes them together). Leaving the block waits
    for every one and raises the first error: nothing returns before all are durable.
    """

    def __init__(self) -> None:
        """Start with no writes pending."""
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def __enter__(self) -> OverlappedWrites:
        """Return self."""
        return self

    def write(self, path: Path, chunks: Iterable[str]) -> None:
        """Write the pieces to a temporary file now; fsync and rename it onto path in a thread."""
        handle, tmp = _write_unsynced(path, chunks)
        thread = threading.Thread(target=self._finish, args=(handle, tmp, path), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _finish(self, handle: TextIO, tmp: str, path: Path) -> None:
        """Put one written file in place, keeping its error for the waiting thread."""
        try:
            _put_in_place(handle, tmp, path)
        except BaseException as error:  # raised again in the thread that leaves the block
            self._errors.append(error)

    def __exit__(self, *exc: object) -> None:
        """Wait for every pending file; raise the first error (after the block's own, if any)."""
        for thread in self._threads:
            thread.join()
        if self._errors and exc[0] is None:
            raise self._errors[0]


def _write_unsynced(path: Path, chunks: Iterable[str]) -> tuple[TextIO, str]:
    """Write the pieces to a new temporary file beside path; return it open, and its name."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
    try:
        for chunk in chunks:
            handle.write(chunk)
        handle.flush()
    except BaseException:
        _discard(handle, tmp)
        raise
    return handle, tmp


def _put_in_place(handle: TextIO, tmp: str, path: Path) -> None:
    """Fsync and close the written temporary file, then rename it onto path."""
    try:
        os.fsync(handle.fileno())
        handle.close()
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        _discard(handle, tmp)
        raise


def _discard(handle: TextIO, tmp: str) -> None:
    """Close and remove a temporary file that will not be put in place."""
    with contextlib.suppress(OSError):
        handle.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


@contextlib.contextmanager
def unwritable_as_report_error(folder: Path) -> Iterator[None]:
    """Turn an OSError while writing under `folder` into a one-line ReportError naming the path."""
    try:
        yield
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ReportError(
            folder,
            "(folder)",
            f"cannot write the report there ({why}); free space or pass a writable reports "
            "folder (evidence recorded so far stays on disk)",
        ) from None


def point_symlink(reports: Path, name: str, run_dir: Path) -> Path:
    """Point `reports/<name>` at run_dir (relative symlink swapped in atomically); return it.

    Raise ReportError when `reports/<name>` exists and is not a symlink, or cannot be replaced.
    """
    link = reports / name
    if link.exists() and not link.is_symlink():
        raise ReportError(link, name, "is not a symlink; move it away, the report replaces it")
    tmp = reports / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with unwritable_as_report_error(reports):
        os.symlink(os.path.relpath(run_dir, reports), tmp)
        try:
            os.replace(tmp, link)
        except OSError as exc:
            tmp.unlink()
            raise ReportError(
                link, name, f"cannot replace it ({exc}); remove it, it must be a symlink"
            ) from None
    return link
