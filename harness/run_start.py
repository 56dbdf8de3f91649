"""Start a run's lab: its id, its backend, its certificates and receivers, then its LabRun.

Kept apart from `harness.runner` (which runs the cells) so that `tlslab run` can start the
receivers before importing the code that runs cells, judges and reports: the receivers boot
while that is imported (`meanwhile`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from harness.report_files import unwritable_as_report_error
from harness.scenarios import LoadedSuite
from harness.senders.registry import sender_containers
from lab.backends import BACKENDS, Backend, BackendError
from lab.backends.base import SenderContainer, nothing
from lab.pki import ensure_certs

if TYPE_CHECKING:
    from harness.runner import LabRun


def new_run_id(suite: str, backend: str) -> str:
    """Return a sortable, unique run id: `<UTC time>-<suite>-<backend>`."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{suite}-{backend}-{secrets.token_hex(2)}"


def backend_named(name: str) -> Backend:
    """Return a backend instance by name, or raise BackendError listing the known ones."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend '{name}'", f"use one of {sorted(BACKENDS)}")
    return BACKENDS[name]()


@contextlib.contextmanager
def open_run(
    loaded: LoadedSuite,
    backend: Backend,
    certs: Path,
    reports: Path,
    run_id: str | None = None,
    meanwhile: Callable[[], None] = nothing,
) -> Iterator[LabRun]:
    """Make certificates, start the suite's receivers and yield a LabRun; always stop them.

    `meanwhile` runs once the receivers were told to start, before they are awaited.
    """
    run_id = run_id or new_run_id(loaded.suite.id, backend.name)
    run_dir = reports / run_id
    with unwritable_as_report_error(reports):
        run_dir.mkdir(parents=True, exist_ok=True)
    specs = list(loaded.receivers.values())
    pki = ensure_certs(specs, certs)

    def senders() -> tuple[SenderContainer, ...]:  # asked for only by a backend that runs them
        return sender_containers(loaded.senders.values(), pki.root, run_dir)

    with (
        contextlib.ExitStack() as after_the_lab,
        backend.start(specs, pki, run_dir / "evidence", senders, meanwhile) as lab,
    ):
        from harness.runner import LabRun  # imported by now when `meanwhile` imported it

        run = LabRun(loaded, lab, run_dir, run_id)
        after_the_lab.callback(run.close)  # the drivers' host resources go once the lab stopped
        yield run
