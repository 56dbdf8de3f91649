"""The file mechanics every report writer shares: one-line errors, atomic writes, schemas, links."""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
