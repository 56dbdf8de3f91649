"""The embedded default backend: all receivers in one local child process on loopback.

The child is the one `tlslab run`/`up` forked at start-up (lab.prestart: it imported the
receivers' code while this process imported the harness), or is forked now from this process; a
run pays no second interpreter start-up, and the child is still a process of its own (lab.forked).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

from lab.backends.base import BackendError, RunningLab, SenderContainer, nothing
from lab.backends.lab_dns import endpoint_addresses, local_dns, needs_dns
from lab.endpoints import ReceiverEndpoint, write_specs_file
from lab.forked import ForkedServe, fork_serve
from lab.pki import LabPki
from lab.prestart import take
from lab.spec import ReceiverSpec
from lab.sts_local import local_policy_host

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
Child = TypeVar("Child")
_SPAWNERS: dict[int, ThreadPoolExecutor] = {}  # per process id: one long-lived spawner thread


class LocalBackend:
    """Starts receivers as a forked `lab.serve` child process bound to 127.0.0.1."""

    name = "local"

    def __init__(self, host: str = "127.0.0.1") -> None:
        """Choose the loopback address the receivers bind."""
        self.host = host

    @contextlib.contextmanager
    def start(
        self,
        specs: Sequence[ReceiverSpec],
        pki: LabPki,
        evidence_root: Path,
        senders: Callable[[], Sequence[SenderContainer]] = tuple,
        meanwhile: Callable[[], None] = nothing,
    ) -> Iterator[RunningLab]:
        """Start the receivers, wait until each has bound, yield the lab, always stop it."""
        evidence_root.mkdir(parents=True, exist_ok=True)
        specs_file = write_specs_file(specs, evidence_root)  # argv has a size limit; files don't
        command = [
            "--specs-file", str(specs_file),
            "--certs-dir", str(pki.root),
            "--evidence-dir", str(evidence_root),
            "--host", self.host,
            "--exit-with-parent",
        ]  # fmt: skip
        log_path = evidence_root / "receivers.log"
        try:
            with log_path.open("ab") as log:
                process = fork_receivers(command, log.fileno())
                try:
                    meanwhile()  # the child starts the receivers on the other core meanwhile
                    endpoints = _read_endpoints(process, log_path)
                    with contextlib.ExitStack() as stack:
                        policy_host = stack.enter_context(
                            local_policy_host(specs, pki, evidence_root, self.host)
                        )
                        dns = None
                        if needs_dns(specs):  # DANE or MTA-STS receivers: the signed lab DNS
                            dns = stack.enter_context(local_dns(
                                specs, endpoint_addresses(endpoints), pki, evidence_root,
                                self.host, policy_host[0] if policy_host else None,
                            ))  # fmt: skip
                        yield RunningLab(
                            self.name, endpoints, pki, evidence_root, dns=dns,
                            policy_host=policy_host,
                        )  # fmt: skip
                finally:
                    _stop(process)
        finally:
            specs_file.unlink(missing_ok=True)


def spawn(command: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start a child (stdin and stdout piped) from a thread that lives as long as this process."""
    return on_spawner(
        lambda: subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=_child_env()
        )
    )


def fork_receivers(argv: list[str], log_fd: int) -> ForkedServe:
    """Start the receiver child (`lab.serve` argv): the prestarted one, or fork one now."""
    return on_spawner(lambda: take(argv, log_fd) or fork_serve(argv, log_fd))


def on_spawner(launch: Callable[[], Child]) -> Child:
    """Run `launch` (which starts a child) on the main thread or the long-lived spawner thread."""
    # Linux sends PR_SET_PDEATHSIG when the forking *thread* exits: a lab started from a worker
    # thread that ends must keep its receivers, so only the main or the spawner thread forks
    if threading.current_thread() is threading.main_thread():
        return launch()
    spawner = _SPAWNERS.get(os.getpid())  # an executor inherited through fork has no thread
    if spawner is None:
        spawner = _SPAWNERS[os.getpid()] = ThreadPoolExecutor(1, "lab-spawner")
    return spawner.submit(launch).result()


def _child_env() -> dict[str, str]:
    """Return the environment for a child interpreter, with this project importable."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _read_endpoints(process: ForkedServe, log_path: Path) -> dict[str, ReceiverEndpoint]:
    """Read endpoint lines until `{"ready": true}`, bounded by READY_TIMEOUT."""
    endpoints: dict[str, ReceiverEndpoint] = {}
    deadline = time.monotonic() + READY_TIMEOUT
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout_fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(
                    f"receivers not ready after {READY_TIMEOUT:.0f} s; log: {_tail(log_path)}",
                    f"see {log_path}",
                )
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stdout_fd, 65536)
            if not chunk:
                status = process.wait(STOP_TIMEOUT)
                raise BackendError(
                    f"receiver process exited with status {status}: {_tail(log_path)}",
                    f"see {log_path}",
                )
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                data = json.loads(line)
                if data.get("ready") is True:
                    return endpoints
                endpoint = ReceiverEndpoint.from_json(data)
                endpoints[endpoint.receiver] = endpoint


def _stop(process: ForkedServe) -> None:
    """Ask the receiver process to stop, and kill it if it does not within STOP_TIMEOUT."""
    process.signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT)
    except TimeoutError:
        process.signal(signal.SIGKILL)
        process.wait()
    finally:
        process.close_pipes()


def _tail(path: Path, lines: int = 5) -> str:
    """Return the last lines of a log file on one line."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"
