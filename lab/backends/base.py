"""The Backend protocol: start receivers somewhere and hand the harness a RunningLab."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from lab.endpoints import ReceiverEndpoint
from lab.pki import LabPki
from lab.spec import ReceiverSpec

if TYPE_CHECKING:  # the signed lab DNS (dnspython) is imported only by runs that serve it
    from lab.dns_zones import LabDns


def nothing() -> None:
    """Do nothing: the default work a caller does while its lab boots."""


class BackendError(Exception):
    """The lab itself failed to start or run receivers; never the sender's fault."""

    def __init__(self, message: str, hint: str = "") -> None:
        """Keep the message and a hint on how to fix it."""
        super().__init__(message + (f" (hint: {hint})" if hint else ""))
        self.hint = hint


@dataclasses.dataclass(frozen=True)
class Mount:
    """A host file or folder a sender container sees at `target` (read-only unless `writable`)."""

    source: Path
    target: str
    writable: bool = False


@dataclasses.dataclass(frozen=True)
class SenderContainer:
    """What a sender container runs: image target, command, privileges, environment, mounts.

    By default it runs as the lab's unprivileged user with every capability dropped but
    NET_BIND_SERVICE; `root` with `capabilities` is for real MTAs whose master starts as root.
    `warm` is a long-lived command (argv) the backend may start as soon as the container runs:
    the host's first `open_channel` with that argv and no environment is handed that process.
    """

    role: str
    target: str = "lab"
    command: tuple[str, ...] = ("sleep", "infinity")
    root: bool = False
    capabilities: tuple[str, ...] = ("NET_BIND_SERVICE",)
    environment: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    warm: tuple[str, ...] = ()


class LineChannel(Protocol):
    """A long-lived process in a sender host: lines to its stdin, lines from its stdout."""

    def write_line(self, line: str) -> None:
        """Send one line to the process; raise an exception when it cannot take it."""
        ...

    def read_line(self, seconds: float) -> str:
        """Return the next line the process wrote; raise TimeoutError after `seconds`."""
        ...

    def ended(self) -> bool:
        """Return whether the process is known to have ended (without waiting)."""
        ...

    def stderr_tail(self) -> str:
        """Return the end of what the process wrote on standard error, on one line."""
        ...

    def close_input(self) -> None:
        """Close the process's standard input: it reads EOF."""
        ...

    def close(self, seconds: float = 0.0) -> bool:
        """Send EOF, wait up to `seconds` for the process to end, release; return if it ended."""
        ...


class SenderHost(Protocol):
    """A machine inside the lab network where sender software runs (a container on Docker)."""

    name: str
    address: str

    def exec(self, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run a command there; return (exit status, combined output)."""
        ...

    def logs(self, tail: int) -> str:
        """Return the last `tail` lines the host's main process printed, on one line."""
        ...

    def open_channel(self, argv: list[str], env: dict[str, str] | None = None) -> LineChannel:
        """Start a long-lived command there, attached to its standard input and output."""
        ...


@dataclasses.dataclass(frozen=True)
class RunningLab:
    """Receivers that are up: endpoints, PKI, evidence folder, and where senders can run.

    `sender_host` is None when senders run on this machine (local backend); otherwise it starts
    the sender host a SenderContainer describes inside the lab network.
    """

    backend: str
    endpoints: Mapping[str, ReceiverEndpoint]
    pki: LabPki
    evidence_root: Path
    sender_host: Callable[[SenderContainer], SenderHost] | None = None
    dns: LabDns | None = None  # the signed lab DNS, when a receiver publishes DANE or MTA-STS
    policy_host: tuple[str, int] | None = None  # where every MTA-STS policy host listens

    def endpoint(self, receiver: str) -> ReceiverEndpoint:
        """Return one receiver's endpoint."""
        return self.endpoints[receiver]

    def routes(self) -> dict[str, tuple[str, int]]:
        """Return the route map senders use: MX host name -> (address, port), every MX host."""
        return {m.mx_host: (m.host, m.port) for e in self.endpoints.values() for m in e.mx}

    def address_of(self, mx_host: str) -> tuple[str, int]:
        """Return where an MX host of the lab listens."""
        return self.routes()[mx_host]

    def mx_for(self, domain: str) -> str | None:
        """Return the most preferred MX host of a lab domain, or None when the lab has none."""
        hosts = self.mx_hosts(domain)
        return hosts[0] if hosts else None

    def mx_hosts(self, domain: str) -> list[str]:
        """Return the MX hosts of a lab domain, most preferred first; [] when it has none."""
        for endpoint in self.endpoints.values():
            if endpoint.domain == domain:
                return [m.mx_host for m in endpoint.mx]
        return []


class Backend(Protocol):
    """Runs receivers; `start` is a context manager that always stops what it started."""

    name: str

    def start(
        self,
        specs: Sequence[ReceiverSpec],
        pki: LabPki,
        evidence_root: Path,
        senders: Callable[[], Sequence[SenderContainer]] = tuple,
        meanwhile: Callable[[], None] = nothing,
    ) -> AbstractContextManager[RunningLab]:
        """Start one receiver per spec and yield the running lab; stop everything on exit.

        `senders` returns the sender containers the run will ask for: a backend that runs them
        may start them while the receivers boot (the lab's `sender_host` then hands them out).
        `meanwhile` is the caller's own work: called once, after the receivers were told to
        start and before they are awaited.
        """
        ...


def stop_child(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Stop a lab service child (SIGTERM, then SIGKILL after `timeout` s); close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
