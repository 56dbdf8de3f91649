"""Cells of a sender watched from outside (the relay driver) are submitted, then watched together.

A real relay driver submits over SMTP to a loopback relay (aiosmtpd, a stand-in for a service
the lab cannot look inside) that accepts and never delivers. With `--jobs 1`, every submission
has reached the relay before the first cell's watch ends; the control, the same cells one at a
time through `run_cell`, reaches the relay once per finished cell.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from test_external_observation import free_port

from harness.model import CellResult, Outcome, Verdict
from harness.run_start import open_run
from harness.runner import LabRun
from harness.scenarios import DEFAULT_ROOT, load_suite
from lab.backends.local import LocalBackend
from lab.pki import LabPki

pytestmark = pytest.mark.integration

RECEIVERS = ("tls12", "tls13", "no-starttls")
WINDOW = 3.0  # observe_timeout_seconds: far longer than a loopback submission


class BlackHole:
    """Accept every message, deliver none; count them."""

    def __init__(self) -> None:
        """Start with nothing accepted."""
        self.accepted = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Take the message and drop it."""
        self.accepted += 1
        return "250 2.0.0 accepted, never delivered"


@pytest.fixture
def relay() -> Iterator[tuple[int, BlackHole]]:
    """Run the black-hole relay on loopback; yield its port and handler."""
    handler = BlackHole()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


def suite_root(base: Path, port: int) -> Path:
    """Write three receivers, a relay profile on `port` and their suite; return the suite."""
    root = base / "scenarios"
    (root / "receivers").mkdir(parents=True)
    for receiver in RECEIVERS:
        shutil.copy(DEFAULT_ROOT / "receivers" / f"{receiver}.yaml", root / "receivers")
    (root / "senders").mkdir()
    (root / "senders" / "hole.yaml").write_text(
        f"driver: relay\nhost: 127.0.0.1\nport: {port}\nsecurity: none\n"
        f"observe_timeout_seconds: {WINDOW}\n"
    )
    cells = "".join(f"  {r}: {{hole: {{outcome: not-observed}}}}\n" for r in RECEIVERS)
    (root / "suites").mkdir()
    suite = root / "suites" / "hole.yaml"
    suite.write_text(f"receivers: [{', '.join(RECEIVERS)}]\nsenders: [hole]\ncells:\n{cells}")
    return suite


@pytest.mark.parametrize("together", [True, False], ids=["run_cells", "control-run_cell"])
def test_submitted_cells_are_watched_together_whatever_jobs_is(
    tmp_path: Path, lab_pki: LabPki, relay: tuple[int, BlackHole], together: bool
) -> None:
    port, handler = relay
    loaded = load_suite(suite_root(tmp_path, port))
    seen_at_result: list[int] = []  # messages the relay had when each cell reported

    def on_result(result: CellResult) -> None:
        seen_at_result.append(handler.accepted)
        assert (result.outcome, result.verdict) == (Outcome.NOT_OBSERVED, Verdict.PASS), result

    with open_run(loaded, LocalBackend(), lab_pki.root, tmp_path / "reports") as run:
        assert isinstance(run, LabRun)
        if together:
            run.run_cells(list(loaded.suite.cell_ids), jobs=1, on_result=on_result)
        else:
            for receiver, sender in loaded.suite.cell_ids:
                on_result(run.run_cell(receiver, sender))
    assert len(seen_at_result) == len(RECEIVERS)
    if together:
        assert seen_at_result[0] == len(RECEIVERS), "every submission before the first watch ended"
    else:
        assert seen_at_result == [1, 2, 3], "one at a time: one submission per finished watch"
