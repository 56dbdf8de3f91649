"""Read append-only JSON-lines evidence incrementally: each complete line is parsed once.

A reader remembers how far it has read and the records parsed so far; the next read parses only
the lines appended since. The last line, until it ends with a newline, is parsed on every read
and never remembered, so what a read returns is exactly what a read of the whole file returns
(lab.evidence_store's reader). A file that is replaced, shrinks, or whose already read end
changed is read again from the start.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from lab.evidence_store import parse_json_lines

__all__ = ["LineIndex", "indexed_records"]

T = TypeVar("T")
GUARD_BYTES = 64  # of the read part's end, compared on every read: a rewrite starts over
MAX_FILES = 512  # readers kept per process, least recently used dropped first


class LineIndex(Generic[T]):
    """The parsed records of one append-only JSON-lines file, caught up on every read."""

    def __init__(self, path: Path, convert: Callable[[dict[str, Any]], T | None]) -> None:
        """Read `path`; `convert` turns one line's object into a record, or None to skip it."""
        self.path, self._convert = path, convert
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, identity: tuple[int, int] | None) -> None:
        """Forget everything read: the next read starts at the file's beginning."""
        self._identity = identity
        self._offset = 0  # just after the last complete line read
        self._guard = b""  # the bytes just before _offset, as read
        self._records: list[T] = []

    def records(self) -> list[T]:
        """Return every record of the file as it is now, in stored order (none when missing)."""
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                self._reset(None)
                return []
            try:
                return self._read(fd)
            finally:
                os.close(fd)

    def _read(self, fd: int) -> list[T]:
        """Parse what was appended since the last read; return all records and the unended line."""
        stat = os.fstat(fd)
        identity = (stat.st_dev, stat.st_ino)
        if identity != self._identity or stat.st_size < self._offset or not self._guard_holds(fd):
            self._reset(identity)
        data = _pread_all(fd, stat.st_size - self._offset, self._offset)
        ended = data.rfind(b"\n") + 1
        if ended:
            self._records.extend(self._parsed(data[:ended]))
            self._offset += ended
            kept = self._guard + data[:ended]
            self._guard = kept[-GUARD_BYTES:]
        return self._records + self._parsed(data[ended:])

    def _guard_holds(self, fd: int) -> bool:
        """Return whether the end of the part already read is still as it was read."""
        if not self._guard:
            return True
        start = self._offset - len(self._guard)
        return _pread_all(fd, len(self._guard), start) == self._guard

    def _parsed(self, data: bytes) -> list[T]:
        """Return the records of the lines in `data`, skipping what `convert` refuses."""
        converted = (self._convert(raw) for raw in parse_json_lines(data))
        return [record for record in converted if record is not None]


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    """Return up to `size` bytes at `offset` (fewer only at the end of the file)."""
    parts, left = [], size
    while left > 0:
        part = os.pread(fd, left, offset + size - left)
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


_INDEXES: collections.OrderedDict[tuple[str, str], LineIndex[Any]] = collections.OrderedDict()
_INDEXES_LOCK = threading.Lock()


def indexed_records(
    kind: str, path: Path, convert: Callable[[dict[str, Any]], T | None]
) -> list[T]:
    """Return the records of `path` through this process's reader of it for `kind` of record."""
    key = (kind, str(path))
    with _INDEXES_LOCK:
        index = _INDEXES.get(key)
        if index is None:
            index = _INDEXES[key] = LineIndex(path, convert)
            while len(_INDEXES) > MAX_FILES:
                _INDEXES.popitem(last=False)
        _INDEXES.move_to_end(key)
    records: list[T] = index.records()
    return records
