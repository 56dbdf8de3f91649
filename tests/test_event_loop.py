"""The receivers' event loop: uvloop's, or asyncio's own when TLSLAB_EVENT_LOOP=asyncio."""

from __future__ import annotations

import asyncio

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
