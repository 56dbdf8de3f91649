"""Durable evidence: one `.eml` per accepted message, one JSON line per SMTP session."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SESSIONS_FILE = "sessions.jsonl"


def write_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename, so readers never see half."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry so a rename survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EvidenceStore:
    """Stores what one receiver saw under `<root>/<receiver>/`; safe to share between threads."""

    def __init__(self, root: Path, receiver: str) -> None:
        """Create the receiver's evidence directory if needed."""
        self.directory = root / receiver
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def store_message(self, queue_id: str, data: bytes) -> Path:
        """Durably store one accepted message as `<queue_id>.eml` and return its path."""
        path = self.directory / f"{queue_id}.eml"
        write_durably(path, data)
        return path

    def append_session(self, record: dict[str, Any]) -> None:
        """Durably append one session record as a JSON line."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(
                self.directory / SESSIONS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


def read_sessions(directory: Path) -> Iterator[dict[str, Any]]:
    """Yield the complete session records stored in a receiver's evidence directory."""
    path = directory / SESSIONS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written by another process
        if isinstance(record, dict):
            yield record
