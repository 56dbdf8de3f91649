"""Durable evidence: per accepted message an `.eml` and a JSON line; per session a JSON line."""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SESSIONS_FILE = "sessions.jsonl"
MESSAGES_FILE = "messages.jsonl"
FAULTS_FILE = "store-faults.bin"
FAULT_SLOTS = 16  # 16 x 256 bytes: one page
FAULT_SLOT_BYTES = 256
_NO_LOCKS = {errno.ENOLCK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EINVAL}
_NO_HARD_LINKS = {errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK}


def write_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file, fsync and rename, so readers never see half.

    The temporary name is unique, so writers of one path (two MX containers of one receiver
    sharing its evidence folder) never rename each other's file away.
    """
    _replace_with(path, data, synced=True)
    _fsync_dir(path.parent)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file and rename, flushing nothing to the disk."""
    _replace_with(path, data, synced=False)


def _replace_with(path: Path, data: bytes, synced: bool) -> None:
    """Write a uniquely named temporary file (fsynced if `synced`) and rename it onto `path`."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        _write_synced(tmp, data, os.O_TRUNC, synced)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind (frees its space)
        raise


def write_new_durably(path: Path, data: bytes) -> None:
    """Like write_durably, but raise FileExistsError instead of replacing an existing `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        _write_synced(tmp, data, os.O_EXCL)
    except FileExistsError:
        raise  # another writer's temporary file: not ours to remove
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
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


def _write_synced(path: Path, data: bytes, mode: int, synced: bool = True) -> None:
    """Create `path` (open flags `mode` added), write all of `data` and fsync it if `synced`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o644)
    try:
        _write_all(fd, data)
        if synced:
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte of `data` to `fd`, continuing after short writes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    """Flush a directory's entries so a rename survives a crash (concurrent callers share one)."""
    with _DIR_SYNCS_LOCK:
        syncer = _DIR_SYNCS.setdefault(str(directory), _GroupSync())
    syncer.sync(lambda: _fsync_path(directory))


def _fsync_path(path: Path) -> None:
    """Open `path` read-only and fsync it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _GroupSync:
    """Group commit of one flush: a caller returns after a flush that began after it asked."""

    def __init__(self) -> None:
        """Start with nothing asked and nothing flushed."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._asked = 0
        self._done = 0

    def sync(self, flush: Callable[[], None]) -> None:
        """Flush, unless a flush that started after this call's request has already succeeded.

        A failed flush raises for its caller; the others asking with it flush again themselves.
        """
        with self._lock:
            self._asked += 1
            mine = self._asked
        with self._flush_lock:
            if self._done >= mine:
                return
            with self._lock:
                target = self._asked
            flush()
            self._done = target


_DIR_SYNCS: dict[str, _GroupSync] = {}
_DIR_SYNCS_LOCK = threading.Lock()


class JsonLines:
    """An append-only JSON-lines file; each append is one write, on disk when it returns.

    Group commit: appends from concurrent threads each write their line under one lock, then
    share fsyncs; one fsync makes every line written before it durable, so N sessions storing
    at once cost one disk flush, not N. No append returns before an fsync that covers its line.
    """

    def __init__(self, path: Path) -> None:
        """Append to `path` (created on first append)."""
        self.path = path
        self._lock = threading.Lock()  # the file's writes and the bookkeeping below
        self._sync_lock = threading.Lock()  # one fsync at a time
        self._written = 0  # lines written so far (sequence numbers from 1)
        self._synced = 0  # lines known durable
        self._cut: dict[int, OSError] = {}  # lines a failed fsync cut away: their appends raise
        self._unsynced: collections.deque[tuple[int, int]] = collections.deque()  # (seq, start)

    def append(self, record: dict[str, Any]) -> None:
        """Durably append `record` as one line, or raise and leave the file as it was before.

        A torn tail (a crash mid-write) is first ended with a newline, so a record is never
        glued to a fragment; appends from many threads or processes never interleave.
        """
        mine, fd = self._write(record)
        try:
            self._sync(mine, fd)
        finally:
            os.close(fd)

    def _sync(self, mine: int, fd: int) -> None:
        """Return once line `mine` is durable: covered by another fsync, or by one on `fd`."""
        with self._sync_lock:
            self._raise_if_cut(mine)
            if self._synced >= mine:
                return  # another append's fsync covered this line
            with self._lock:
                target = self._written
            try:
                os.fsync(fd)  # the descriptor the line went through: one open per append
            except OSError as error:
                self._cut_unsynced(error)
                self._raise_if_cut(mine)  # this append's own line is among those cut
                raise
            with self._lock:
                self._synced = target
                while self._unsynced and self._unsynced[0][0] <= target:
                    self._unsynced.popleft()

    def _write(self, record: dict[str, Any]) -> tuple[int, int]:
        """Write the record's line (not yet durable); return its sequence number and open fd."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                # a process appending here (two MX hosts of one receiver share its folder)
                # holds the lock while it writes: its line is never taken for a torn tail
                locked = _lock_file(fd)
                start = os.fstat(fd).st_size
                if start and os.pread(fd, 1, start - 1) != b"\n":
                    line = b"\n" + line
                try:
                    _write_all(fd, line)
                except BaseException:
                    _cut_back(fd, start)
                    raise
                finally:
                    if locked:
                        fcntl.flock(fd, fcntl.LOCK_UN)
            except BaseException:
                os.close(fd)
                raise
            self._written += 1
            self._unsynced.append((self._written, start))
            return self._written, fd

    def _raise_if_cut(self, mine: int) -> None:
        """Raise the fsync error that cut this append's line away, if one did."""
        with self._lock:
            failure = self._cut.pop(mine, None)
        if failure is not None:
            raise OSError(failure.errno, failure.strerror, str(self.path))

    def _cut_unsynced(self, error: OSError) -> None:
        """After a failed fsync, cut every line not yet durable away; their appends raise."""
        with self._lock:
            if self._unsynced:
                with contextlib.suppress(OSError):
                    fd = os.open(self.path, os.O_RDWR)
                    try:
                        _cut_back(fd, self._unsynced[0][1])
                    finally:
                        os.close(fd)
            self._cut.update((seq, error) for seq, _ in self._unsynced)
            self._unsynced.clear()


def _lock_file(fd: int) -> bool:
    """Take an exclusive flock on `fd`; False where the file system offers no locks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as error:
        if error.errno not in _NO_LOCKS:
            raise
        return False  # as before locks: one process's appends still never interleave
    return True


def _cut_back(fd: int, size: int) -> None:
    """Truncate a failed append away (freeing its space); best effort, the write error wins."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, size)
        os.fsync(fd)


class FaultLedger:
    """A fixed-size file, allocated when the store opens, recording the store's write failures.

    It is overwritten in place, which needs no new disk space, so it still works on a full disk.
    """

    def __init__(self, path: Path) -> None:
        """Create (or reuse) the ledger at `path`, its slots allocated now."""
        self.path = path
        self._lock = threading.Lock()
        self._next = sum(1 for _ in read_faults(path.parent))
        self._name_synced = False  # another process may have made it without flushing its name
        if not path.exists() or path.stat().st_size != FAULT_SLOTS * FAULT_SLOT_BYTES:
            # written (its space taken) but not flushed: an empty ledger lost in a crash is
            # simply made again, and the first fault flushes the file and its name
            write_atomically(path, bytes(FAULT_SLOTS * FAULT_SLOT_BYTES))

    def record(self, where: str, error: OSError) -> None:
        """Note that writing `where` failed with `error`; the newest faults fill the last slot."""
        entry = {"at": time.time(), "file": where[:80], "error": error_name(error)[:120]}
        data = (json.dumps(entry, sort_keys=True) + "\n").encode()
        if len(data) > FAULT_SLOT_BYTES:  # escapes made it longer than a slot: keep the facts
            entry.update(file=where.encode("ascii", "ignore").decode()[:20], error=str(error.errno))
            data = (json.dumps(entry, sort_keys=True) + "\n").encode()
        with self._lock, contextlib.suppress(OSError):
            slot = min(self._next, FAULT_SLOTS - 1)
            fd = os.open(self.path, os.O_WRONLY)
            try:
                os.pwrite(fd, data.ljust(FAULT_SLOT_BYTES, b"\0"), slot * FAULT_SLOT_BYTES)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._next += 1
            if not self._name_synced:
                _fsync_path(self.path.parent)
                self._name_synced = True


def error_name(error: OSError) -> str:
    """Return `ENOSPC: No space left on device`, or the exception's text."""
    name = errno.errorcode.get(error.errno or 0)
    return f"{name}: {error.strerror}" if name else f"{type(error).__name__}: {error}"


class EvidenceStore:
    """Stores what one receiver saw under `<root>/<receiver>/`; safe to share between threads."""

    def __init__(self, root: Path, receiver: str) -> None:
        """Create the receiver's evidence directory if needed."""
        self.directory = root / receiver
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sessions = JsonLines(self.directory / SESSIONS_FILE)
        self._messages = JsonLines(self.directory / MESSAGES_FILE)
        self.faults = FaultLedger(self.directory / FAULTS_FILE)

    def store_message(self, queue_id: str, data: bytes) -> Path:
        """Durably store a message as `<queue_id>.eml`; FileExistsError if that name is taken."""
        path = self.directory / f"{queue_id}.eml"
        write_new_durably(path, data)
        return path

    def commit_message(self, queue_id: str, data: bytes, record: dict[str, Any]) -> Path:
        """Durably store the `.eml`, then its record in messages.jsonl; return the `.eml` path.

        On a write failure nothing of the message stays, the fault is in the ledger, and the
        OSError is raised (the message must not be acknowledged).
        """
        path = self.directory / f"{queue_id}.eml"
        try:
            write_new_durably(path, data)
        except FileExistsError:
            raise
        except OSError as error:
            self.faults.record(path.name, error)
            raise
        try:
            self._messages.append(record)
        except OSError as error:
            path.unlink(missing_ok=True)
            self.faults.record(MESSAGES_FILE, error)
            raise
        return path

    def append_session(self, record: dict[str, Any]) -> None:
        """Durably append one session record as a JSON line; a failure is noted in the ledger."""
        try:
            self._sessions.append(record)
        except OSError as error:
            self.faults.record(SESSIONS_FILE, error)
            raise


def read_sessions(directory: Path) -> Iterator[dict[str, Any]]:
    """Yield the complete session records stored in a receiver's evidence directory."""
    return _read_json_lines(directory / SESSIONS_FILE)


def read_messages(directory: Path) -> Iterator[dict[str, Any]]:
    """Yield the complete per-message records stored in a receiver's evidence directory."""
    return _read_json_lines(directory / MESSAGES_FILE)


def read_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each complete JSON object line of a JSON-lines evidence file (none if missing)."""
    return _read_json_lines(path)


def read_faults(directory: Path) -> Iterator[dict[str, Any]]:
    """Yield the store's recorded write failures (`at`, `file`, `error`), oldest first."""
    try:
        data = (directory / FAULTS_FILE).read_bytes()[: FAULT_SLOTS * FAULT_SLOT_BYTES]
    except FileNotFoundError:
        return
    for start in range(0, len(data), FAULT_SLOT_BYTES):
        slot = data[start : start + FAULT_SLOT_BYTES].split(b"\0", 1)[0]
        record = _parse_line(slot)
        if record is not None:
            yield record


def _read_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """Yield each complete JSON object line of `path`; none if it is absent.

    JsonLines ends a torn tail before it appends, so every complete record has a line of its
    own; a torn or still-being-written line is skipped, never parsed in part.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    yield from parse_json_lines(data)


def parse_json_lines(data: bytes) -> Iterator[dict[str, Any]]:
    """Yield the JSON object of each line of `data` that holds one whole (others are skipped)."""
    for line in data.split(b"\n"):
        record = _parse_line(line) if line.strip() else None
        if record is not None:
            yield record


def _parse_line(line: bytes) -> dict[str, Any] | None:
    """Return the JSON object a whole line holds, or None (torn, not an object, not text)."""
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None
