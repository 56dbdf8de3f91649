"""The receivers' event loop: uvloop's, or asyncio's own when TLSLAB_EVENT_LOOP=asyncio."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.serve import EVENT_LOOP_VARIABLE, run_event_loop


def test_receivers_run_on_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EVENT_LOOP_VARIABLE, raising=False)
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    assert run_event_loop(main()) == "uvloop"
    assert seen == ["uvloop"]


def test_the_switch_runs_asyncios_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    # negative control: the variable really changes the loop the coroutine runs on
    monkeypatch.setenv(EVENT_LOOP_VARIABLE, "asyncio")
    seen: list[str] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()).__module__)

    assert run_event_loop(main()) == "asyncio"
    assert seen == ["asyncio.unix_events"]


PROJECT = Path(__file__).resolve().parents[1]
PRESTART_PROBE = """
import json, socket, sys, time
from pathlib import Path
from lab import prestart
real, out = socket.recv_fds, Path(sys.argv[1])

def recv(*args, **kwargs):  # the child, about to wait for its hand-over
    out.with_suffix(".part").write_text(json.dumps("uvloop" in sys.modules))
    out.with_suffix(".part").rename(out)  # whole, or not there: the parent waits for it
    return real(*args, **kwargs)

socket.recv_fds = recv
prestart.prestart()
deadline = time.monotonic() + 30
while not out.exists() and time.monotonic() < deadline:
    time.sleep(0.01)
prestart.discard()
"""


def loop_imported_before_hand_over(tmp_path: Path, loop: str | None) -> object:
    """Return whether a prestarted receiver child had uvloop loaded when it began to wait."""
    env = {k: v for k, v in os.environ.items() if k != EVENT_LOOP_VARIABLE}
    if loop is not None:
        env[EVENT_LOOP_VARIABLE] = loop
    out = tmp_path / f"seen-{loop}.json"
    subprocess.run(
        [sys.executable, "-c", PRESTART_PROBE, str(out)],
        cwd=PROJECT,
        env=env,
        timeout=60,
        check=True,
    )
    return json.loads(out.read_text())


def test_a_prestarted_child_imports_uvloop_before_its_hand_over(tmp_path: Path) -> None:
    assert loop_imported_before_hand_over(tmp_path, None) is True
    assert loop_imported_before_hand_over(tmp_path, "asyncio") is False  # control
