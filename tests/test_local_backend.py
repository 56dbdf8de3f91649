"""Tests of the local backend's receiver child: specs off the command line, dies with its parent."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from receiver_procs import lab_serve_pids
from waiting import eventually

from lab.backends.local import LocalBackend
from lab.bounds import TEXT_MAX_LENGTH
from lab.pki import LabPki
from lab.serve import write_specs_file
from lab.spec import ReceiverSpec

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]
GONE_WITHIN = 15.0  # seconds a receiver child gets to stop listening once its parent is gone
HOLDER = """
import json, sys
from pathlib import Path
from lab.backends.local import LocalBackend
from lab.pki import load_certs
from lab.spec import ReceiverSpec
spec = ReceiverSpec.model_validate_json(Path(sys.argv[1]).read_text())
pki = load_certs([spec], Path(sys.argv[2]))
with LocalBackend().start([spec], pki, Path(sys.argv[3])) as lab:
    print(json.dumps({"port": lab.endpoints[spec.id].port}), flush=True)
    sys.stdin.read()  # until the test kills this process
"""


def banner(port: int) -> bytes:
    """Connect to a receiver on loopback and return its greeting line."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        return sock.recv(512)


def refuses(port: int) -> bool | None:
    """Return True once nothing accepts connections on the port, else None."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return None  # e.g. a reset from the dying process: not gone yet
    return None


@pytest.fixture
def orphans(tmp_path: Path) -> Iterator[Path]:
    """Yield an evidence folder; afterwards kill any receiver child still serving it."""
    evidence = tmp_path / "evidence"
    yield evidence
    for pid in lab_serve_pids(evidence):
        os.kill(pid, signal.SIGKILL)


def test_specs_travel_in_a_file_not_on_the_child_command_line(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, orphans: Path
) -> None:
    long_text = "d" * TEXT_MAX_LENGTH  # many such specs once passed 128 KiB: E2BIG
    spec = receiver_specs["tls12"].model_copy(update={"description": long_text})
    with LocalBackend().start([spec], lab_pki, orphans) as lab:
        (pid,) = lab_serve_pids(orphans)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert banner(lab.endpoints["tls12"].port).startswith(b"220")
    assert long_text.encode() not in argv
    assert len(argv) < 4096, "the child's command line must not grow with the specs"
    assert not list(orphans.glob(".receiver-specs-*")), "the specs file is removed afterwards"


def test_receiver_child_stops_listening_when_its_parent_is_killed(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, orphans: Path, tmp_path: Path
) -> None:
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(receiver_specs["tls12"].model_dump_json())
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(spec_file), str(lab_pki.root), str(orphans)],
        cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        port = int(json.loads(holder.stdout.readline())["port"])
        assert banner(port).startswith(b"220")  # control: it serves while the parent lives
        assert len(lab_serve_pids(orphans)) == 1
    finally:
        holder.kill()  # SIGKILL: no cleanup code of the parent runs
        holder.wait(10)
        for pipe in (holder.stdin, holder.stdout):
            if pipe is not None:
                pipe.close()
    eventually(lambda: refuses(port), "the orphaned receiver to stop listening", GONE_WITHIN)
    eventually(lambda: not lab_serve_pids(orphans) or None, "the child to exit", GONE_WITHIN)


def start_serve(
    spec_file: Path, certs: Path, evidence: Path, *flags: str
) -> tuple[subprocess.Popen[str], int]:
    """Start `python -m lab.serve` with stdin piped; return it and its port once it is ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "lab.serve", "--specs-file", str(spec_file),
         "--certs-dir", str(certs), "--evidence-dir", str(evidence), *flags],
        cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    port = 0
    for line in process.stdout:
        data = json.loads(line)
        if data.get("ready") is True:
            return process, port
        port = int(data["port"])
    pytest.fail(f"lab.serve exited with {process.wait()} before it was ready")


@pytest.mark.parametrize("watched", [True, False], ids=["exit-with-parent", "control"])
def test_closing_the_parent_pipe_stops_the_child_only_when_asked(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, orphans: Path, watched: bool
) -> None:
    orphans.mkdir()
    spec_file = write_specs_file([receiver_specs["tls12"]], orphans)
    flags = ["--exit-with-parent"] if watched else []
    process, port = start_serve(spec_file, lab_pki.root, orphans, *flags)
    try:
        assert banner(port).startswith(b"220")
        assert process.stdin is not None
        process.stdin.close()  # what the kernel does when the parent dies, prctl or not
        if watched:
            assert process.wait(GONE_WITHIN) == 0  # a clean stop: SIGTERM, then drain
            assert refuses(port)
        else:
            assert banner(port).startswith(b"220")
            assert process.poll() is None
    finally:
        process.terminate()
        process.wait(GONE_WITHIN)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def test_a_lab_started_from_a_thread_that_ends_keeps_its_receivers(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, orphans: Path
) -> None:
    started: dict[str, int] = {}
    lab = LocalBackend().start([receiver_specs["tls12"]], lab_pki, orphans)

    def enter() -> None:
        started["port"] = lab.__enter__().endpoints["tls12"].port
        started["tid"] = threading.get_native_id()

    worker = threading.Thread(target=enter)
    worker.start()
    worker.join(60)
    try:
        # once the thread is gone from /proc, a parent-death signal tied to it has been sent
        tid = started["tid"]
        eventually(lambda: not Path(f"/proc/self/task/{tid}").exists() or None, "thread exit", 10)
        assert banner(started["port"]).startswith(b"220")
        assert len(lab_serve_pids(orphans)) == 1
    finally:
        lab.__exit__(None, None, None)
    assert refuses(started["port"])  # control: stopping the lab does stop the child
