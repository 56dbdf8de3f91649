"""A cell's sessions: its sender's peers, begun once the cell sent (a source port comes again)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import runner
from harness.runner import wait_for_sessions
from lab.evidence_store import SESSIONS_FILE
from lab.session_facts import SessionKey, session_facts_where

PEER = ("127.0.0.1", 40000)


def session_line(session_id: str, started: float) -> bytes:
    """Return a valid session record line of PEER begun at `started`."""
    record = {
        "receiver": "r", "session_id": session_id, "peer_ip": PEER[0], "peer_port": PEER[1],
        "started": started, "ended": started + 0.01, "starttls_offered": True, "ended_by": "quit",
    }  # fmt: skip
    return (json.dumps(record) + "\n").encode()


def test_an_earlier_cells_session_on_the_same_port_is_not_this_cells(tmp_path: Path) -> None:
    (tmp_path / SESSIONS_FILE).write_bytes(session_line("old", 100.0) + session_line("new", 200.0))
    mine = wait_for_sessions(tmp_path, {PEER}, since=150.0)
    assert [s.session_id for s in mine] == ["new"]
    every = wait_for_sessions(tmp_path, {PEER})  # control: without a start both are the peer's
    assert [s.session_id for s in every] == ["old", "new"]


def test_the_wait_goes_on_past_the_earlier_session_until_this_cells_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / SESSIONS_FILE
    path.write_bytes(session_line("old", time.time() - 60))
    since = time.time()
    probes: list[int] = []

    def probe_then_write(directory: Path, keep: Callable[[SessionKey], bool]) -> list[Any]:
        found = session_facts_where(directory, keep)
        probes.append(len(found))
        if len(probes) == 1:  # this cell's record is written only after the first look
            with path.open("ab") as out:
                out.write(session_line("new", since + 0.1))
        return found

    monkeypatch.setattr(runner, "session_facts_where", probe_then_write)
    mine = wait_for_sessions(tmp_path, {PEER}, since)
    assert [s.session_id for s in mine] == ["new"]
    assert probes == [0, 1]  # the old record was not taken: the wait went on to the new one
