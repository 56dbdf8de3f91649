"""The command server MTA containers run: one process answers many bounded commands in turn."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest

from lab.command_server import KILLED


class Server:
    """`python -m lab.command_server` as a real child process, spoken to over its pipes."""

    def __init__(self) -> None:
        """Start the server."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lab.command_server"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def ask(self, request: object) -> dict[str, Any]:
        """Send one line and return the parsed reply line."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        line = request if isinstance(request, str) else json.dumps(request)
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        reply = json.loads(self.process.stdout.readline())
        assert isinstance(reply, dict)
        return reply

    def close(self) -> int:
        """Send EOF and return the server's exit status."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()
        status = self.process.wait(timeout=10)
        self.process.stdout.close()
        return status


@pytest.fixture
def server() -> Any:
    """A running server, ended at EOF after the test."""
    running = Server()
    yield running
    if running.process.poll() is None:
        running.close()


def test_one_server_answers_each_command_with_its_status_and_output(server: Server) -> None:
    """Hello first; each job's exit status and combined output come back under its number."""
    hello = server.ask({"hello": 1})
    assert hello["ready"] is True
    assert hello["pid"] == server.process.pid
    job = {"argv": ["sh", "-c", "echo out; echo err >&2; exit 3"], "seconds": 10}
    assert server.ask({"seq": 1, "job": job}) == {
        "seq": 1, "report": {"status": 3, "output": "out\nerr\n"},
    }  # fmt: skip
    env_job = {"argv": ["sh", "-c", 'printf %s "$TLSLAB_X"'], "env": {"TLSLAB_X": "v"}}
    assert server.ask({"seq": 2, "job": env_job})["report"] == {"status": 0, "output": "v"}
    plain = server.ask({"seq": 3, "job": {"argv": ["sh", "-c", 'printf %s "${TLSLAB_X:-}"']}})
    assert plain["report"]["output"] == ""  # control: a variable lives for its own job only
    assert server.close() == 0


def test_a_command_past_its_bound_is_killed_and_reported_as_timed_out(server: Server) -> None:
    """The job's `seconds` bounds it: status 124 well before the command would end."""
    began = time.monotonic()
    reply = server.ask({"seq": 1, "job": {"argv": ["sleep", "30"], "seconds": 0.5}})
    assert reply["report"]["status"] == KILLED
    assert time.monotonic() - began < 10
    quick = server.ask({"seq": 2, "job": {"argv": ["sleep", "0"], "seconds": 5}})
    assert quick["report"]["status"] == 0  # control: within its bound it ends normally


def test_bad_requests_get_an_error_reply_and_the_server_goes_on(server: Server) -> None:
    """Garbage, a missing argv and an unknown program are that line's error, not the end."""
    assert "bad request line" in server.ask("not json")["error"]
    assert "argv" in server.ask({"seq": 1, "job": {"argv": []}})["error"]
    missing = server.ask({"seq": 2, "job": {"argv": ["/nonexistent/tlslab-prog"]}})
    assert missing["report"]["status"] == 127
    assert server.ask({"seq": 3, "job": {"argv": ["true"]}})["report"]["status"] == 0
