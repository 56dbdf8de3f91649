"""Missing or busy resources (a port in use, no Docker engine) exit 2 with one clear line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[1]


def tlslab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        capture_output=True, text=True, timeout=120, cwd=PROJECT, env=env, check=False,
    )  # fmt: skip


def assert_one_line_error(ran: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert ran.returncode == 2, ran.stderr
    assert "Traceback" not in ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("tlslab: error:")
    for needle in needles:
        assert needle in lines[0]


def test_port_in_use_names_the_address_and_the_fix(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ran = tlslab(
            "up", "--public", "--domain", "lab.example.org", "--bind-all", f"127.0.0.1:{port}",
            "--receivers", "tls12", "--certs", str(tmp_path / "certs"),
            "--evidence-dir", str(tmp_path / "evidence"),
        )  # fmt: skip
    assert_one_line_error(ran, f"127.0.0.1:{port}", "address already in use", "hint:")


def test_free_port_control_starts(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "up", "--json", "--public", "--domain",
         "lab.example.org", "--bind-all", f"127.0.0.1:{port}", "--receivers", "tls12",
         "--certs", str(tmp_path / "certs"), "--evidence-dir", str(tmp_path / "evidence")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT, text=True,
    ) as process:  # fmt: skip
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(2)]
            assert '"ready": true' in lines[-1], lines
            with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
                assert client.recv(100).startswith(b"220 mx.tls12.lab.example.org")
        finally:
            process.terminate()
            process.wait(10)


def test_docker_missing_names_the_engine_and_the_fix(tmp_path: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    ran = tlslab(
        "run", "--backend", "docker", "--certs", str(tmp_path / "certs"),
        "--reports", str(tmp_path / "reports"), env=env,
    )  # fmt: skip
    assert_one_line_error(ran, "no Docker engine answers", "make docker-engine", "DOCKER_HOST")
