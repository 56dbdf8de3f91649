"""`tlslab run` loads neither the receivers' code (its child does) nor what local runs never use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import cli
from lab.backends import BACKENDS
from lab.prestart import SHARED

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


WHOLE_RUN = """
import contextlib, io, json, sys
{before}
from harness.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    status = main(["run", "--suite", "ses-2025", "--reports", sys.argv[1], "--certs", sys.argv[2]])
names = ("cryptography", "tlslite", "aiosmtpd", "lab.serve", "lab.receiver")
print(json.dumps([status, sorted(m for m in names if m in sys.modules)]))
"""


def run_probe(code: str, tmp_path: Path) -> tuple[int, list[Any]]:
    """Run a probe of `tlslab run` in a fresh process; return its status and what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "reports"), str(tmp_path / "certs")],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    status, found = json.loads(done.stdout.splitlines()[-1])
    return int(status), list(found)


def whole_run(tmp_path: Path, before: str = "") -> tuple[int, list[str]]:
    """Run `tlslab run` in a fresh process; return its status and which of the names it loaded."""
    return run_probe(WHOLE_RUN.format(before=before), tmp_path)


@pytest.mark.integration
def test_a_whole_local_run_with_checked_certs_loads_no_receiver_or_certificate_code(
    tmp_path: Path,
) -> None:
    assert whole_run(tmp_path) == (0, ["cryptography"])  # the first run issues the certificates
    assert whole_run(tmp_path) == (0, [])  # the child imports the receivers; the pass is recorded
    control = whole_run(tmp_path, "import lab.pki_check, lab.serve")
    assert control == (0, ["aiosmtpd", "cryptography", "lab.receiver", "lab.serve", "tlslite"])


def test_what_both_processes_import_before_the_fork_holds_no_receiver_only_code() -> None:
    found = loaded_at_start(f"import importlib; [importlib.import_module(m) for m in {SHARED!r}]")
    assert found == []
    assert set(SHARED) <= set(json.loads(imported_by("import lab.serve")))  # the child's too
    run_and_cells = "import harness.run_command, harness.run_output"
    assert set(SHARED) <= set(json.loads(imported_by(run_and_cells)))  # control


def imported_by(code: str) -> str:
    """Return, as JSON, the modules a fresh interpreter has loaded after running `code`."""
    probe = f"import json, sys; {code}; print(json.dumps(sorted(sys.modules)))"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=PROJECT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


HANDOVER = """
import contextlib, io, json, sys
{before}
import lab.backends.local as local
from harness.cli import main
take, seen = local.take, []

def watched_take(*args, **kwargs):
    seen.append(sorted(m for m in ("harness.runner", "harness.run_output") if m in sys.modules))
    return take(*args, **kwargs)

local.take = watched_take
with contextlib.redirect_stdout(io.StringIO()):
    status = main(["run", "--suite", "ses-2025", "--reports", sys.argv[1], "--certs", sys.argv[2]])
print(json.dumps([status, seen]))
"""


def loaded_at_handover(tmp_path: Path, before: str = "") -> tuple[int, list[list[str]]]:
    """Run `tlslab run` in a fresh process; return its status and the cell code loaded at take()."""
    return run_probe(HANDOVER.format(before=before), tmp_path)


@pytest.mark.integration
def test_the_receivers_are_handed_over_before_the_cell_code_is_imported(tmp_path: Path) -> None:
    assert loaded_at_handover(tmp_path) == (0, [[]])  # it is imported while they boot
    control = loaded_at_handover(tmp_path, "import harness.run_output")
    assert control == (0, [["harness.run_output", "harness.runner"]])
