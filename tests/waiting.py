"""Bounded condition waits for tests: poll a probe until it yields a value or time runs out."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")
POLL = 0.01


def eventually(probe: Callable[[], T | None], what: str, timeout: float) -> T:
    """Return probe()'s first non-None value, polled until `timeout` s; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(POLL)  # the pause between polls of a bounded condition wait
