"""`tlslab up` as a real process: a live log no client can write control characters into, and
one `up` per evidence folder (a second is refused by name; a killed one blocks nothing).

Output is read as bytes: a text-mode reader would turn a raw CR into a line break and hide it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest

from harness.up_public import session_line
from lab.session_facts import SessionFacts

PROJECT = Path(__file__).resolve().parents[1]
TIMEOUT = 30.0
ESC, CR, BIDI = "\x1b", "\r", "\u202e"
RAW_CONTROLS = [bytes([b]) for b in [*range(0x20), 0x7F]]
RAW_UNICODE = [c.encode() for c in ["\u202e", "\u2066", "\u2028", "\u2029", "\x85", "\x9b"]]


def tlslab_up(*args: str | Path) -> subprocess.Popen[bytes]:
    """Start `python -m harness.cli up ARGS` with byte pipes."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "up", *map(str, args)],
        cwd=PROJECT,
        env={**clean, "PYTHONUNBUFFERED": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _pump(stream: IO[bytes] | None, lines: list[bytes]) -> None:
    """Append each raw line (split on LF only) of `stream` to `lines` until it closes."""
    assert stream is not None
    for line in stream:
        lines.append(line)


@dataclasses.dataclass
class Up:
    """A running `tlslab up` and the raw lines it printed."""

    process: subprocess.Popen[bytes]
    evidence: Path
    out: list[bytes] = dataclasses.field(default_factory=list)
    err: list[bytes] = dataclasses.field(default_factory=list)

    def wait_for(self, found: Callable[[list[bytes]], bool], what: str) -> None:
        """Wait (bounded) until `found(stdout lines)` holds; fail showing both streams."""
        deadline = time.monotonic() + TIMEOUT
        while not found(self.out):
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"no {what}; stdout={self.out} stderr={self.err}")
            time.sleep(0.02)  # the pause between polls of a bounded condition wait

    def ready(self) -> dict[str, int]:
        """Wait for the ready line; return receiver -> port from `lab.json`."""
        self.wait_for(lambda lines: any(b"receivers ready" in line for line in lines), "ready")
        lab = json.loads((self.evidence / "lab.json").read_text())
        return {e["receiver"]: int(e["port"]) for e in lab["endpoints"]}


@contextlib.contextmanager
def up(evidence: Path, certs: Path, receivers: str = "no-starttls") -> Iterator[Up]:
    """Run `tlslab up` on loopback for the body, then stop it with SIGINT and reap it."""
    process = tlslab_up("--receivers", receivers, "--evidence-dir", evidence, "--certs", certs)
    running = Up(process, evidence)
    pairs = ((process.stdout, running.out), (process.stderr, running.err))
    readers = [threading.Thread(target=_pump, args=pair, daemon=True) for pair in pairs]
    for reader in readers:
        reader.start()
    try:
        yield running
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for reader in readers:
            reader.join(TIMEOUT)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def smtp_session(port: int, commands: list[str]) -> list[bytes]:
    """Send raw command lines (CRLF-terminated, UTF-8) to 127.0.0.1:`port`; return the replies."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        reader = sock.makefile("rb")
        replies.append(reader.readline())
        for command in commands:
            sock.sendall(command.encode() + b"\r\n")
            reply = reader.readline()
            while reply[3:4] == b"-":  # a multi-line reply
                reply = reader.readline()
            replies.append(reply)
    return replies


def assert_clean(line: bytes) -> None:
    """Fail if a printed line holds any raw control, bidi or line-separator character."""
    body = line.removesuffix(b"\n")
    for raw in [*RAW_CONTROLS, *RAW_UNICODE]:
        assert raw not in body, (raw, line)


def hostile_session(port: int, ehlo: str, local_part: str) -> list[bytes]:
    """Deliver one message from a client with this EHLO name to this quoted local part."""
    rcpt = f'"{local_part}"@no-starttls.lab.test'
    commands = [f"EHLO bidi{BIDI}name", f"EHLO {ehlo}", "MAIL FROM:<a@client.test>",
                f"RCPT TO:<{rcpt}>", f"RCPT TO:<{local_part}@elsewhere.test>", "DATA",
                "Subject: hi\r\n\r\nhello\r\n.", "QUIT"]  # fmt: skip
    return smtp_session(port, commands)


@pytest.mark.integration
def test_client_control_characters_never_reach_the_operators_terminal(tmp_path: Path) -> None:
    with up(tmp_path / "evidence", tmp_path / "certs") as lab:
        port = lab.ready()["no-starttls"]
        hostile = f"evil{ESC}[2J{ESC}]0;owned\x07{CR}FAKE{ESC}[31m"
        replies = hostile_session(port, hostile, f"in{ESC}[8m{CR}box")
        assert replies[4].startswith(b"250"), replies  # the hostile recipient was accepted
        smtp_session(port, ["EHLO honest.client.test", "QUIT"])  # the negative control
        lab.wait_for(lambda out: sum(b" no-starttls " in line for line in out) >= 2, "live log")
    log = [line for line in lab.out if b" no-starttls " in line]
    attack = next(line for line in log if b"evil" in line)
    assert_clean(attack)
    assert b"evil\\x1b[2J\\x1b]0;owned\\x07\\x0dFAKE\\x1b[31m" in attack
    assert b'1 message accepted for "in\\x1b[8m\\x0dbox"@no-starttls.lab.test' in attack
    honest = next(line for line in log if b"honest.client.test" in line)
    assert b"(honest.client.test): plaintext (no STARTTLS offered); 0 messages" in honest
    for line in lab.out + lab.err:
        assert_clean(line)


def test_every_kind_of_control_character_in_a_record_is_escaped() -> None:
    nasty = "".join(chr(c) for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)])
    nasty += "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
    nasty += "\u2028\u2029\ufeff\udc80\\"
    stored = {"queue_id": "0123456789AB", "size": 1, "eml": "0123456789AB.eml", "received": "x",
              "accepted": 1.0, "rcpt_tos": [f"x{nasty}@tls12.lab.test"]}  # fmt: skip
    record = {"receiver": "tls12", "session_id": "s", "peer_ip": "127.0.0.1", "peer_port": 4242,
              "started": 1.0, "ended": 1.0, "starttls_offered": True, "ended_by": "tcp-close",
              "ehlo": nasty, "handshake": "failed", "tls_error": f"bad{ESC}[2J",
              "messages": [stored]}  # fmt: skip
    line = session_line(SessionFacts.model_validate(record))
    assert all(" " <= c <= "~" for c in line), line
    assert "(\\x00\\x01" in line
    for escaped in ("\\u202e", "\\u2066", "\\u2028", "\\x9b", "\\x85", "\\udc80", "\\x5c"):
        assert escaped in line
    assert "bad\\x1b[2J" in line
    plain = {**record, "ehlo": "mx.example.org", "tls_error": "x", "messages": []}
    text = session_line(SessionFacts.model_validate(plain))
    assert "(mx.example.org): TLS handshake failed (x); 0 messages accepted" in text


# ---------------------------------------------------------------- one `up` per evidence folder


@pytest.mark.integration
def test_a_second_up_on_the_same_evidence_folder_is_refused_by_name(tmp_path: Path) -> None:
    evidence, certs = tmp_path / "evidence", tmp_path / "certs"
    with up(evidence, certs) as first:
        first.ready()
        lab_file = (evidence / "lab.json").read_bytes()
        second = tlslab_up("--receivers", "no-starttls", "--evidence-dir", evidence,
                           "--certs", certs)  # fmt: skip
        try:
            out, err = second.communicate(timeout=TIMEOUT)
        finally:
            if second.poll() is None:  # it did not refuse: stop it before failing
                second.kill()
                second.communicate()
        lines = err.decode().splitlines()
        assert second.returncode == 2, (out, err)
        assert len(lines) == 1, lines
        assert str(evidence) in lines[0]
        assert "in use by another `tlslab up`" in lines[0]
        assert f"pid {first.process.pid}" in lines[0]
        assert "--evidence-dir" in lines[0]
        assert (evidence / "lab.json").read_bytes() == lab_file  # the first one's file stays
        # the negative control: another folder is free, while the first still runs
        with up(tmp_path / "other", certs) as other:
            other.ready()
        assert other.process.returncode == 0, other.err
        assert first.process.poll() is None
    assert first.process.returncode == 0, first.err
    assert not (evidence / "lab.json").exists()  # removed by its own `up` on the way out


@pytest.mark.integration
def test_a_stale_lab_file_from_a_killed_up_does_not_block_the_next(tmp_path: Path) -> None:
    evidence, certs = tmp_path / "evidence", tmp_path / "certs"
    with up(evidence, certs) as killed:
        killed.ready()
        killed.process.kill()  # SIGKILL: no clean-up runs
        killed.process.wait(TIMEOUT)
    stale = json.loads((evidence / "lab.json").read_text())
    assert stale["pid"] == killed.process.pid
    with up(evidence, certs) as next_up:
        port = next_up.ready()["no-starttls"]
        fresh = json.loads((evidence / "lab.json").read_text())
        assert fresh["pid"] == next_up.process.pid
        assert smtp_session(port, ["EHLO a.test", "QUIT"])[0].startswith(b"220")
    assert next_up.process.returncode == 0, next_up.err
