"""Read append-only JSON-lines evidence incrementally: each complete line is validated once.

An index remembers how far it has read and, per valid line, a small key and where the line is;
the next read validates only the lines appended since. Only the records a caller selects by key
are parsed again in full (memory stays small: keys, not records). The last line, until it ends
with a newline, is validated on every read and never remembered, so a selection is exactly what
a read of the whole file would select (lab.evidence_store's reader). A file that is replaced,
shrinks, or whose already read end changed is read again from the start.
"""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from lab.evidence_store import parse_json_lines

__all__ = ["LineIndex", "forget_folder", "index_of"]

K = TypeVar("K")
T = TypeVar("T")
GUARD_BYTES = 64  # of the read part's end, compared on every read: a rewrite starts over
MAX_FILES = 512  # indexes kept per process, least recently used dropped first
Entry = tuple[Any, int, int]  # (key, start, length) of one valid line


class LineIndex(Generic[K, T]):
    """The keys of the valid records of one append-only JSON-lines file, caught up on each read."""

    def __init__(
        self, path: Path, parse: Callable[[dict[str, Any]], T | None], key: Callable[[T], K]
    ) -> None:
        """Index `path`: `parse` makes one line's record (None: not valid), `key` its key."""
        self.path, self._parse, self._key = path, parse, key
        self._lock = threading.Lock()
        self._reset(None)

    def _reset(self, identity: tuple[int, int] | None) -> None:
        """Forget everything read: the next read starts at the file's beginning."""
        self._identity = identity
        self._offset = 0  # just after the last complete line read
        self._guard = b""  # the bytes just before _offset, as read
        self._entries: list[Entry] = []

    def keys(self) -> list[K]:
        """Return the key of every valid record of the file as it is now, in stored order."""
        with self._opened() as fd:
            with self._lock:
                entries = self._caught_up(fd)
            return [key for key, _, _ in entries]

    def where(self, keep: Callable[[K], bool]) -> list[T]:
        """Return the records whose key `keep` accepts, in stored order (parsed again now).

        Only the catching up holds the index's lock; `keep` and the reads run outside it.
        """
        with self._opened() as fd:
            with self._lock:
                entries = self._caught_up(fd)  # a new list: appends after this do not touch it
            chosen = [entry for entry in entries if keep(entry[0])]
            records = (self._record(_pread_all(fd, length, start)) for _, start, length in chosen)
            return [record for record in records if record is not None]

    def _opened(self) -> _Descriptor:
        """Return the file opened for reading (-1 when it is missing)."""
        return _Descriptor(self.path)

    def _caught_up(self, fd: int) -> list[Entry]:
        """Index lines appended since the last read; return all entries, the unended line's too."""
        if fd < 0:
            self._reset(None)
            return []
        stat = os.fstat(fd)
        identity = (stat.st_dev, stat.st_ino)
        if identity != self._identity or stat.st_size < self._offset or not self._guard_holds(fd):
            self._reset(identity)
        data = _pread_all(fd, stat.st_size - self._offset, self._offset)
        ended = data.rfind(b"\n") + 1
        if ended:
            self._entries.extend(self._indexed(data[:ended], self._offset))
            self._guard = (self._guard + data[:ended])[-GUARD_BYTES:]
            self._offset += ended
        return self._entries + list(self._indexed(data[ended:], self._offset))

    def _guard_holds(self, fd: int) -> bool:
        """Return whether the end of the part already read is still as it was read."""
        if not self._guard:
            return True
        start = self._offset - len(self._guard)
        return _pread_all(fd, len(self._guard), start) == self._guard

    def _indexed(self, data: bytes, at: int) -> Iterator[Entry]:
        """Yield (key, start, length) of each valid record line in `data`, read at offset `at`."""
        start = at
        for line in data.split(b"\n"):
            record = self._record(line)
            if record is not None:
                yield self._key(record), start, len(line)
            start += len(line) + 1

    def _record(self, line: bytes) -> T | None:
        """Return the record one line holds, or None (blank, torn, not valid)."""
        for raw in parse_json_lines(line):
            return self._parse(raw)
        return None


class _Descriptor:
    """A file opened read-only for one `with` block; its descriptor is -1 when it is missing."""

    def __init__(self, path: Path) -> None:
        """Remember the path."""
        self.path, self.fd = path, -1

    def __enter__(self) -> int:
        """Open the file; return its descriptor, or -1 when there is no such file."""
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self.fd = -1
        return self.fd

    def __exit__(self, *exc: object) -> None:
        """Close the descriptor if one was opened."""
        if self.fd >= 0:
            os.close(self.fd)


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


_INDEXES: collections.OrderedDict[tuple[str, str], LineIndex[Any, Any]] = collections.OrderedDict()
_INDEXES_LOCK = threading.Lock()


def index_of(
    kind: str, path: Path, parse: Callable[[dict[str, Any]], T | None], key: Callable[[T], K]
) -> LineIndex[K, T]:
    """Return this process's index of `path` for one `kind` of record, made on first use."""
    with _INDEXES_LOCK:
        index = _INDEXES.get((kind, str(path)))
        if index is None:
            index = _INDEXES[(kind, str(path))] = LineIndex(path, parse, key)
            while len(_INDEXES) > MAX_FILES:
                _INDEXES.popitem(last=False)
        _INDEXES.move_to_end((kind, str(path)))
    found: LineIndex[K, T] = index
    return found


def forget_folder(folder: Path) -> None:
    """Drop this process's indexes of the files in `folder` (a later read starts over)."""
    with _INDEXES_LOCK:
        for kind, name in [k for k in _INDEXES if Path(k[1]).parent == folder]:
            del _INDEXES[(kind, name)]
