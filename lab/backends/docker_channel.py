"""A line channel to one long-lived process in a container: `docker exec -i` over the engine API.

The host writes lines to the process's standard input and reads its standard output one line
at a time, every read bounded by a deadline; its standard error is kept (the last few KiB) for
the diagnosis of a failure. Closing the channel closes the process's standard input (EOF), so
a worker that reads its jobs from there ends with the channel.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from typing import Any

FRAME_HEADER = 8  # the engine's multiplexed stream: kind (1 stdout, 2 stderr), 3 zero bytes, size
STDOUT, STDERR = 1, 2
MAX_LINE = 4 << 20  # a longer line from the process is a broken channel, not a reply
KEEP_STDERR = 4096


class ChannelClosed(Exception):
    """The process ended, the engine dropped the stream, or it broke the line protocol."""


class DockerChannel:
    """One process started with `docker exec -i` (no TTY), its stdin and stdout as line streams."""

    def __init__(self, container: Any, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start `argv` in the running container, attached to its standard streams."""
        api = container.client.api
        self.api, self.container, self.argv = api, container, list(argv)
        created = api.exec_create(
            container.id, argv, stdin=True, stdout=True, stderr=True, tty=False, environment=env
        )
        self.exec_id = str(created["Id"])
        raw = api.exec_start(self.exec_id, socket=True, tty=False)
        self._keep = raw  # the SDK object owns the connection; keep it alive with the socket
        self.sock: socket.socket = getattr(raw, "_sock", raw)
        self._frames = b""
        self._out = b""
        self._err = b""
        self._eof = False
        self._lock = threading.Lock()  # write_line and close may come from different threads

    def write_line(self, line: str) -> None:
        """Send one line (a newline is added) to the process's standard input."""
        if "\n" in line:
            raise ValueError("a channel line cannot contain a newline")
        with self._lock:
            try:
                self.sock.sendall(line.encode() + b"\n")
            except OSError as error:
                raise ChannelClosed(f"cannot write to the process: {error}") from None

    def read_line(self, seconds: float) -> str:
        """Return the process's next standard output line; raise TimeoutError after `seconds`."""
        deadline = time.monotonic() + seconds
        while b"\n" not in self._out:
            if self._eof:
                raise ChannelClosed(f"the process ended{self._exit_note()}")
            if len(self._out) > MAX_LINE:
                raise ChannelClosed(f"the process wrote a line over {MAX_LINE} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line from the process within {seconds:g} s")
            self._receive(left)
        line, _, self._out = self._out.partition(b"\n")
        return line.decode("utf-8", "replace")

    def ended(self) -> bool:
        """Return whether the stream already reached its end (the process is gone), not waiting."""
        while not self._eof and self.sock.fileno() >= 0:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable:
                return False
            self._receive(0.01)
        return True

    def stderr_tail(self) -> str:
        """Return the end of what the process wrote on standard error, on one line."""
        return " | ".join(self._err.decode("utf-8", "replace").strip().splitlines()[-6:])

    def exit_code(self) -> int | None:
        """Return the process's exit status, or None while it runs (or the engine cannot say)."""
        try:
            code = self.api.exec_inspect(self.exec_id).get("ExitCode")
        except Exception:  # the container is gone: the engine's errors vary
            return None
        return None if code is None else int(code)

    def close_input(self) -> None:
        """Close the process's standard input: it reads EOF."""
        with self._lock, contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self, seconds: float = 0.0) -> bool:
        """Send EOF, wait up to `seconds` for the process to end, then drop the connection.

        Return whether the process was seen to end.
        """
        self.close_input()
        deadline = time.monotonic() + seconds
        while not self._eof and time.monotonic() < deadline:
            self._out = self._out[-MAX_LINE:]  # lines nobody will read now
            self._receive(deadline - time.monotonic())
        with self._lock:
            with contextlib.suppress(OSError):
                self.sock.close()
            with contextlib.suppress(Exception):
                self._keep.close()
        return self._eof

    def _receive(self, seconds: float) -> None:
        """Read what arrives within `seconds` and sort complete frames into stdout and stderr."""
        self.sock.settimeout(max(seconds, 0.001))
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._eof = True
            return
        self._frames += chunk
        while len(self._frames) >= FRAME_HEADER:
            kind, size = self._frames[0], int.from_bytes(self._frames[4:8], "big")
            if len(self._frames) < FRAME_HEADER + size:
                break
            payload = self._frames[FRAME_HEADER : FRAME_HEADER + size]
            self._frames = self._frames[FRAME_HEADER + size :]
            if kind == STDOUT:
                self._out += payload
            elif kind == STDERR:
                self._err = (self._err + payload)[-KEEP_STDERR:]

    def _exit_note(self) -> str:
        """Return ' (exit status N): stderr tail' for a process that ended."""
        code, tail = self.exit_code(), self.stderr_tail()
        status = f" (exit status {code})" if code is not None else ""
        return status + (f": {tail}" if tail else "")
