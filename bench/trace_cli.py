"""`python -m bench.trace_cli MARKS.json ARGS...`: run `tlslab ARGS` with timestamps per phase.

The same `harness.cli.main` as the `tlslab` script, in a fresh interpreter, with wall-clock marks
(time.time(), comparable with the parent's) around each phase; the marks go to MARKS.json just
before the interpreter exits, so the parent can attribute the whole command's wall time.
"""

from __future__ import annotations

import time

MARKS: dict[str, float] = {"child_start": time.time()}

import contextlib  # noqa: E402  (imports are what the marks measure)
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

from harness import cli, run_command, run_output, run_start, runner  # noqa: E402
from lab.backends.local import LocalBackend  # noqa: E402

MARKS["imported"] = time.time()


def _around(owner: Any, attribute: str, name: str) -> None:
    """Wrap owner.attribute to mark `<name>_start` and `<name>_end` (skip it when gone)."""
    original: Callable[..., Any] | None = getattr(owner, attribute, None)
    if original is None:
        return

    @functools.wraps(original)
    def marked(*args: Any, **kwargs: Any) -> Any:
        MARKS[f"{name}_start"] = time.time()
        try:
            return original(*args, **kwargs)
        finally:
            MARKS[f"{name}_end"] = time.time()

    setattr(owner, attribute, marked)


def _mark_backend() -> None:
    """Mark the local backend's start (until ready) and stop (until the child exited)."""
    original = LocalBackend.start

    @contextlib.contextmanager
    def start(self: LocalBackend, *args: Any, **kwargs: Any) -> Iterator[Any]:
        MARKS["receivers_start_start"] = time.time()
        with original(self, *args, **kwargs) as lab:
            MARKS["receivers_start_end"] = time.time()
            try:
                yield lab
            finally:
                MARKS["receivers_stop_start"] = time.time()
        MARKS["receivers_stop_end"] = time.time()

    LocalBackend.start = start  # type: ignore[method-assign]


def main() -> int:
    """Run the command with marks, write them, return its exit status."""
    out, argv = sys.argv[1], sys.argv[2:]
    _around(run_command, "load_suite", "load_suite")
    _around(run_start, "ensure_certs", "certificates")
    _around(runner.LabRun, "run_cells", "cells")
    _around(run_output, "write_report", "report")
    _mark_backend()
    status = cli.main(argv)
    MARKS["main_end"] = time.time()
    with open(out, "w", encoding="utf-8") as file:
        json.dump(MARKS, file)
    return status


if __name__ == "__main__":
    sys.exit(main())
