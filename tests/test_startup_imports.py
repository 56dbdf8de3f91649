"""`tlslab run` loads neither the receivers' code (its child does) nor what local runs never use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from harness import cli
from lab.backends import BACKENDS

PROJECT = Path(__file__).resolve().parents[1]
NOT_AT_START = (
    "aiosmtpd", "asyncio", "boto3", "dns", "docker", "lab.mitm", "lab.receiver", "lab.serve",
    "lab.sts_host", "tlslite", "trustme",
)  # fmt: skip
PROBE = """
import json, sys
{before}
from harness.cli import build_parser
build_parser("run").parse_args(["run"])
import harness.run_command
print(json.dumps(sorted(m for m in {names!r} if m in sys.modules)))
"""


def loaded_at_start(before: str = "") -> list[str]:
    """Return which NOT_AT_START modules a fresh `tlslab run`'s parsing and imports load."""
    code = PROBE.format(before=before, names=NOT_AT_START)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    names: list[str] = json.loads(done.stdout)
    return names


def test_tlslab_run_loads_none_of_them_before_its_lab_starts() -> None:
    assert loaded_at_start() == []


def test_the_probe_sees_them_when_something_imports_them() -> None:
    found = loaded_at_start("import lab.serve, lab.backends.docker")
    assert {"aiosmtpd", "asyncio", "lab.receiver", "lab.serve", "tlslite"} <= set(found)


def test_the_parser_names_every_backend() -> None:
    assert tuple(sorted(BACKENDS)) == cli.BACKEND_NAMES
