"""Incomplete runs say so everywhere: a subset (--receivers) and a run stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import PROJECT, tlslab
from test_cli import make_root
from test_report import make_report

from harness.model import CellRef
from harness.report import write_report

HANG_SUITE = """\
receivers: [tls10, tls12]
senders: [ses-default, hanging-relay]
cells:
  tls10:
    ses-default: {outcome: delivered, tls: TLSv1.0, study: true}
    hanging-relay: {outcome: not-delivered, study: true}
  tls12:
    ses-default: {outcome: delivered, tls: TLSv1.2, study: true}
    hanging-relay: {outcome: not-delivered}
"""


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def incomplete(report_dir: Path) -> tuple[dict[str, Any], str, str]:
    return (
        read_json(report_dir / "results.json"),
        (report_dir / "summary.md").read_text(encoding="utf-8"),
        (report_dir / "report.html").read_text(encoding="utf-8"),
    )


# unit: what an incomplete RunReport renders ---------------------------------------------------


def test_a_subset_report_says_incomplete_in_every_file(tmp_path: Path) -> None:
    missing = (
        CellRef(receiver="tls12", sender="ses-default", study=True),
        CellRef(receiver="tls12", sender="ses-require-tls", study=False),
    )
    report = make_report().model_copy(update={"complete": False, "not_run": missing})
    data, text, page = incomplete(write_report(report, tmp_path))
    assert data["complete"] is False
    assert data["not_run"] == [
        {"receiver": "tls12", "sender": "ses-default", "study": True},
        {"receiver": "tls12", "sender": "ses-require-tls", "study": False},
    ]
    banner = "Incomplete run (a subset of the suite): 8 of 10 cells run"
    assert f"> **{banner} (not run: tls12-ses-default, tls12-ses-require-tls)." in text
    assert f'<p class="banner" role="alert">{banner}' in page
    assert "6 of 7 study cells run, 5 reproduced" in text
    assert "6 of 7 study cells run, 5 reproduced" in page
    assert "Study cells reproduced" not in text, "the complete-run wording is not used"
    assert (tmp_path / "latest").is_symlink(), "a subset run is still the latest run"


def test_a_complete_report_has_no_banner(tmp_path: Path) -> None:
    data, text, page = incomplete(write_report(make_report(), tmp_path))
    assert data["complete"] is True
    assert data["not_run"] == []
    assert "Incomplete run" not in text
    assert 'class="banner"' not in page
    assert "Study cells reproduced: 5/6" in text


def test_an_interrupted_report_leaves_latest_on_the_last_complete_run(tmp_path: Path) -> None:
    first = write_report(make_report("run-1"), tmp_path)
    stopped = make_report("run-2").model_copy(update={"complete": False, "stopped_by": "SIGTERM"})
    second = write_report(stopped, tmp_path)
    assert (second / "results.json").is_file(), "the interrupted run is written"
    assert (tmp_path / "latest").resolve() == first.resolve()
    _, text, _ = incomplete(second)
    assert "> **Incomplete run (interrupted by SIGTERM): 8 of 8 cells run." in text
    write_report(stopped, tmp_path, move_latest=True)
    assert (tmp_path / "latest").resolve() == second.resolve(), "unless asked"


# integration: tlslab run --receivers and SIGTERM ---------------------------------------------


@pytest.mark.integration
def test_run_with_receivers_is_marked_incomplete(tmp_path: Path) -> None:
    reports = tmp_path / "r"
    ran = tlslab(
        "run", "--suite", "ses-2025", "--receivers", "tls10",
        "--reports", reports, "--certs", tmp_path / "c",
    )  # fmt: skip
    assert ran.status == 0, ran.out + ran.err
    assert "Suite ses-2025: 3 cells on the local backend" in ran.out
    assert "2 of 14 study cells run, 2 reproduced" in ran.out
    data, text, page = incomplete(reports / "latest")
    assert data["complete"] is False
    assert data["stopped_by"] == ""
    assert read_json(reports / "latest" / "tlsrpt.json")["complete"] is False
    assert len(data["not_run"]) == 24
    assert {c["receiver"] for c in data["not_run"]} == set(data["receivers"]) - {"tls10"}
    assert "2 of 14 study cells run, 2 reproduced" in text
    assert "Incomplete run (a subset of the suite): 3 of 27 cells run" in text
    assert 'data-cell="tls13-ses-default" data-outcome="not-run"' in page


@pytest.mark.integration
def test_run_with_an_unknown_receiver_is_a_usage_error(tmp_path: Path) -> None:
    ran = tlslab(
        "run", "--suite", "ses-2025", "--receivers", "tls99",
        "--reports", tmp_path / "r", "--certs", tmp_path / "c",
    )  # fmt: skip
    assert ran.status == 2, ran.err
    assert "field '--receivers': 'tls99' is not a receiver of this suite" in ran.err
    assert "Traceback" not in ran.err


@pytest.mark.integration
def test_sigterm_writes_an_incomplete_run_exits_143_and_keeps_latest(tmp_path: Path) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never greets: the relay hangs
    silent.settimeout(30)
    root = make_root(tmp_path, {"hang": HANG_SUITE})
    (root / "senders" / "hanging-relay.yaml").write_text(
        "driver: relay\nhost: 127.0.0.1\n"
        f"port: {silent.getsockname()[1]}\nsecurity: none\nobserve_timeout_seconds: 1\n"
    )
    reports = tmp_path / "r"
    reports.mkdir()
    (reports / "earlier").mkdir()
    (reports / "latest").symlink_to("earlier")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    args = ["run", "--suite", "hang", "--scenarios", root, "--reports", reports, "--jobs", "1"]
    command = [sys.executable, "-m", "harness.cli", *map(str, args), "--certs", str(tmp_path / "c")]
    with subprocess.Popen(
        command, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            held, _ = silent.accept()  # the second cell is stuck waiting for a greeting
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            held.close()
        finally:
            proc.kill()
            silent.close()
    assert proc.returncode == 143, out + err
    assert "Traceback" not in err
    assert (reports / "latest").resolve() == (reports / "earlier").resolve(), "latest kept"
    (run_dir,) = [p for p in reports.iterdir() if p.name not in ("earlier", "latest")]
    assert f"partial report is in {run_dir}; {reports / 'latest'} still points at the last" in err
    data, text, page = incomplete(run_dir)
    assert data["complete"] is False
    assert data["stopped_by"] == "SIGTERM"
    assert json.loads((run_dir / "tlsrpt.json").read_text())["complete"] is False
    assert [(c["receiver"], c["sender"]) for c in data["results"]] == [("tls10", "ses-default")]
    assert [(c["receiver"], c["sender"]) for c in data["not_run"]] == [
        ("tls10", "hanging-relay"), ("tls12", "ses-default"), ("tls12", "hanging-relay"),
    ]  # fmt: skip
    assert "Incomplete run (interrupted by SIGTERM): 1 of 4 cells run" in text
    assert "1 of 3 study cells run, 1 reproduced" in text
    assert "Incomplete run (interrupted by SIGTERM)" in page


@pytest.mark.integration
def test_sigterm_to_pytest_writes_an_incomplete_run_and_keeps_latest(tmp_path: Path) -> None:
    silent = socket.create_server(("127.0.0.1", 0))
    silent.settimeout(30)
    root = make_root(tmp_path, {"hang": HANG_SUITE})
    (root / "senders" / "hanging-relay.yaml").write_text(
        "driver: relay\nhost: 127.0.0.1\n"
        f"port: {silent.getsockname()[1]}\nsecurity: none\nobserve_timeout_seconds: 1\n"
    )
    reports = tmp_path / "r"
    reports.mkdir()
    (reports / "earlier").mkdir()
    (reports / "latest").symlink_to("earlier")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    command = [
        sys.executable, "-m", "pytest", str(root / "suites" / "hang.yaml"),
        "-p", "no:cacheprovider", "--lab-reports", str(reports), "--lab-certs", str(tmp_path / "c"),
    ]  # fmt: skip
    with subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        try:
            held, _ = silent.accept()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
            held.close()
        finally:
            proc.kill()
            silent.close()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out + err
    assert (reports / "latest").resolve() == (reports / "earlier").resolve(), "latest kept"
    (run_dir,) = [p for p in reports.iterdir() if p.name not in ("earlier", "latest")]
    assert f"Sender TLS Lab report: {run_dir}" in out
    data, text, _ = incomplete(run_dir)
    assert (data["complete"], data["stopped_by"]) == (False, "SIGTERM")
    assert [(c["receiver"], c["sender"]) for c in data["results"]] == [("tls10", "ses-default")]
    assert "Incomplete run (interrupted by SIGTERM): 1 of 4 cells run" in text
