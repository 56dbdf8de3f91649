"""A crash inside one cell's driver (a stand-in): that cell is an error and the run goes on.

Fault injection, not an integration test of any driver: the crashing stand-in replaces the real
driver factory of one column, so this module stays out of the `integration` modules (which patch
none of the project's parts).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_lab_faults import SUITE, CrashingSender, make_root

from harness.cli import main
from harness.senders import SenderProfile, open_driver
from harness.senders.base import SenderDriver
from lab.backends.base import RunningLab


@pytest.fixture
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a certificate folder for the run."""
    return tmp_path_factory.mktemp("certs")


def test_tlslab_run_goes_on_after_a_crash_inside_one_cell(
    tmp_path: Path, certs: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = make_root(tmp_path, {"disk": SUITE})
    real_driver = open_driver

    def drivers(profile: SenderProfile, lab: RunningLab, outbox: Path) -> SenderDriver:
        crashing = profile.id == "ses-default"
        return CrashingSender() if crashing else real_driver(profile, lab, outbox)

    monkeypatch.setattr("harness.runner.open_driver", drivers)  # the ses-default column has a bug
    reports = tmp_path / "reports"
    status = main(
        ["run", "--suite", "disk", "--scenarios", str(root), "--reports", str(reports),
         "--certs", str(certs), "--jobs", "2"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 1, out
    assert "4 cells: 2 pass, 0 fail, 2 error" in out
    data = json.loads((reports / "latest" / "results.json").read_text())
    verdicts = {(c["receiver"], c["sender"]): c["verdict"] for c in data["results"]}
    assert verdicts == {
        ("no-starttls", "ses-default"): "error",
        ("no-starttls", "paubox"): "pass",
        ("tls12", "ses-default"): "error",
        ("tls12", "paubox"): "pass",
    }
    assert all("RuntimeError: driver bug" in c["detail"] for c in data["results"]
               if c["sender"] == "ses-default")  # fmt: skip
