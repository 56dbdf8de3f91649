"""Run `tlslab` as a subprocess and check its usage errors (shared by the newer CLI tests)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Ran:
    """What one `tlslab` invocation did."""

    status: int
    out: str
    err: str


def tlslab(*args: str | Path, cwd: Path = PROJECT, stdin: bytes | None = None) -> Ran:
    """Run `python -m harness.cli ARGS` without the lab's environment overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=120,
        check=False,
    )
    return Ran(done.returncode, done.stdout.decode(), done.stderr.decode())


def assert_usage_error(ran: Ran, *names: str) -> str:
    """Assert exit 2 and one traceback-free `tlslab: error:` line naming each of `names`."""
    assert "Traceback" not in ran.err, ran.err
    assert ran.status == 2, ran.out + ran.err
    lines = ran.err.splitlines()
    assert len(lines) == 1, ran.err
    (line,) = lines
    assert line.startswith("tlslab: error: ")
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"
    return line
