"""Timing probes wrapped around the harness's own functions, only inside the bench process."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import harness.runner as runner
import harness.senders.reference as reference
from harness.model import CellResult
from harness.scenarios import LoadedSuite
from harness.senders import SenderDriver, SendReport, TestMessage
from lab.backends.base import RunningLab

RUNNER_PROBES = ("build_message", "wait_for_sessions", "find_arrivals", "classify", "judge")
SMTP_PROBES = {
    "connect": "smtp connect + banner",
    "ehlo": "smtp EHLO",
    "starttls": "STARTTLS + TLS handshake",
    "sendmail": "smtp MAIL/RCPT/DATA",
    "__exit__": "smtp QUIT + close",
}


class Probes:
    """Thread-safe accumulator of named durations (seconds)."""

    def __init__(self) -> None:
        """Start with no samples."""
        self._lock = threading.Lock()
        self.samples: dict[str, list[float]] = {}
        self.patched: list[str] = []

    def add(self, name: str, seconds: float) -> None:
        """Record one duration under `name`."""
        with self._lock:
            self.samples.setdefault(name, []).append(seconds)

    def total(self, name: str) -> float:
        """Return the summed seconds of one probe (0 when it never fired)."""
        with self._lock:
            return sum(self.samples.get(name, []))

    def count(self, name: str) -> int:
        """Return how often one probe fired."""
        with self._lock:
            return len(self.samples.get(name, []))

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        """Return `function` timed under `name`."""

        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - began)

        return timed


@contextlib.contextmanager
def instrumented(probes: Probes) -> Iterator[None]:
    """Patch timing probes onto the runner's helpers and the reference sender's SMTP client."""
    with contextlib.ExitStack() as stack:
        for name in RUNNER_PROBES:
            if hasattr(runner, name):
                original = getattr(runner, name)
                stack.enter_context(mock.patch.object(runner, name, probes.wrap(name, original)))
                probes.patched.append(f"harness.runner.{name}")
        client_context = getattr(reference, "client_context", None)
        if client_context is not None:
            timed_context = probes.wrap("client_context", client_context)
            stack.enter_context(mock.patch.object(reference, "client_context", timed_context))
            probes.patched.append("harness.senders.reference.client_context")
        smtp_class = getattr(reference, "RoutedSMTP", None)
        for method in SMTP_PROBES if smtp_class is not None else ():
            original = getattr(smtp_class, method)
            timed = probes.wrap(f"smtp.{method}", original)
            stack.enter_context(mock.patch.object(smtp_class, method, timed))
            probes.patched.append(f"RoutedSMTP.{method}")
        yield


class TimedDriver:
    """A sender driver whose `send` is timed."""

    def __init__(self, inner: SenderDriver, probes: Probes) -> None:
        """Wrap a driver."""
        self.inner, self.probes = inner, probes
        self.id = inner.id

    def send(self, message: TestMessage) -> SendReport:
        """Send through the wrapped driver, recording the time it took."""
        began = time.perf_counter()
        try:
            return self.inner.send(message)
        finally:
            self.probes.add("send", time.perf_counter() - began)

    def close(self) -> None:
        """Close the wrapped driver."""
        self.inner.close()


class TimedLabRun(runner.LabRun):
    """LabRun that records the time of every cell and of every driver's send."""

    def __init__(
        self, loaded: LoadedSuite, lab: RunningLab, run_dir: Path, run_id: str, probes: Probes
    ) -> None:
        """Bind the run as LabRun does, plus the probes."""
        super().__init__(loaded, lab, run_dir, run_id)
        self.probes = probes
        self._timed: dict[str, TimedDriver] = {}
        self._timed_lock = threading.Lock()

    def run_cell(self, receiver: str, sender: str) -> CellResult:
        """Run one cell as LabRun does, timed."""
        began = time.perf_counter()
        try:
            return super().run_cell(receiver, sender)
        finally:
            self.probes.add("run_cell", time.perf_counter() - began)

    def _driver(self, sender: str) -> SenderDriver:
        """Return the sender's driver wrapped so its sends are timed."""
        inner = super()._driver(sender)
        with self._timed_lock:
            if sender not in self._timed:
                self._timed[sender] = TimedDriver(inner, self.probes)
            return self._timed[sender]
