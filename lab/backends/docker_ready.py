"""Wait for a lab container's ready line by following its output: a block, not a poll."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

from lab.backends.base import BackendError

READY_LINE = b'"ready": true'  # what lab.serve and lab.dns print once they listen
KEEP = 4096  # the end of the output kept while following it (a ready line is short)


def await_ready_line(container: Any, what: str, seconds: float) -> None:
    """Block until the container prints its ready line; BackendError on exit or after `seconds`.

    The engine streams the container's standard output as it is written (`logs(follow=True)`),
    so nothing wakes while the container is quiet; a timer closes the stream at the deadline.
    """
    stream = container.logs(stream=True, follow=True, stdout=True, stderr=False)
    timer = threading.Timer(seconds, stream.close)
    timer.daemon = True
    timer.start()
    seen = b""
    try:
        for chunk in stream:
            seen = (seen + chunk)[-KEEP:]
            if READY_LINE in seen:
                return
    except Exception:  # the stream closed by the timer, or the engine dropped it
        pass
    finally:
        timer.cancel()
        _close(stream)
    container.reload()
    if container.status == "exited":
        raise BackendError(f"{what} container exited: {log_tail(container)}", "see the log above")
    raise BackendError(
        f"{what} container not ready after {seconds:.0f} s: {log_tail(container)}",
        "check the engine's load; the log tail is above",
    )


def _close(stream: Any) -> None:
    """Close a followed log stream: its socket, the HTTP response and the reading generator."""
    for close in (stream.close, stream._response.close, stream._stream.close):
        with contextlib.suppress(Exception):
            close()


def log_tail(container: Any, tail: int = 8) -> str:
    """Return the container's last log lines on one line."""
    try:
        text = container.logs(tail=tail).decode("utf-8", "replace")
    except Exception as error:
        return f"(no logs: {error})"
    return " | ".join(text.strip().splitlines()) or "(empty log)"
