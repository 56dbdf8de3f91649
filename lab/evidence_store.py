"""Durable evidence: per accepted message an `.eml` and a JSON line; per session a JSON line."""

from __future__ import annotations

import errno
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SESSIONS_FILE = "sessions.jsonl"
MESSAGES_FILE = "messages.jsonl"
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


def write_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename, so readers never see half."""
    tmp = path.with_name(f".{path.name}.tmp")
    _write_synced(tmp, data, os.O_TRUNC)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def write_new_durably(path: Path, data: bytes) -> None:
    """Like write_durably, but raise FileExistsError instead of replacing an existing `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    _write_synced(tmp, data, os.O_EXCL)
    try:
        try:
            os.link(tmp, path)  # unlike rename, never replaces an existing file
        except OSError as error:
            if error.errno not in _NO_HARD_LINKS:  # including EEXIST: the name is taken
                raise
            if path.exists():
                raise FileExistsError(errno.EEXIST, "already stored", str(path)) from None
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _write_synced(path: Path, data: bytes, mode: int) -> None:
    """Create `path` (open flags `mode` added), write all of `data` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd`, continuing after short writes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry so a rename survives a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonLines:
    """An append-only JSON-lines file; each append is one write, on disk when it returns."""

    def __init__(self, path: Path) -> None:
        """Append to `path` (created on first append)."""
        self.path = path
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        """Durably append `record` as one line; appends from many threads never interleave."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                _write_all(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)


class EvidenceStore:
    """Stores what one receiver saw under `<root>/<receiver>/`; safe to share between threads."""

    def __init__(self, root: Path, receiver: str) -> None:
        """Create the receiver's evidence directory if needed."""
        self.directory = root / receiver
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sessions = JsonLines(self.directory / SESSIONS_FILE)
        self._messages = JsonLines(self.directory / MESSAGES_FILE)

    def store_message(self, queue_id: str, data: bytes) -> Path:
        """Durably store a message as `<queue_id>.eml`; FileExistsError if that name is taken."""
        path = self.directory / f"{queue_id}.eml"
        write_new_durably(path, data)
        return path

    def commit_message(self, queue_id: str, data: bytes, record: dict[str, Any]) -> Path:
        """Durably store the `.eml`, then its record in messages.jsonl; return the `.eml` path."""
        path = self.store_message(queue_id, data)
        self._messages.append(record)
        return path

    def append_session(self, record: dict[str, Any]) -> None:
        """Durably append one session record as a JSON line."""
        self._sessions.append(record)


def read_sessions(directory: Path) -> Iterator[dict[str, Any]]:
    """Yield the complete session records stored in a receiver's evidence directory."""
    return _read_json_lines(directory / SESSIONS_FILE)


def read_messages(directory: Path) -> Iterator[dict[str, Any]]:
    """Yield the complete per-message records stored in a receiver's evidence directory."""
    return _read_json_lines(directory / MESSAGES_FILE)


def read_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each complete JSON object line of a JSON-lines evidence file (none if missing)."""
    return _read_json_lines(path)


def _read_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each complete JSON object line of `path`; nothing when it does not exist."""
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
