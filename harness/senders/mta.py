"""What the real-MTA drivers share: their container, bounded commands, log and sessions.

Each MTA runs in its own sender container started from a SenderContainer spec; its `ctl.sh`
(lab/docker/<mta>/ctl.sh on top of lab/docker/mta/common.sh) answers `ready`, `size`, `await`,
`idle` and `submit`. The host reads the MTA's log from a byte offset, waits for lines in the
container (bounded), and finds a cell's SMTP connections in the receiver's own records.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

from harness.proxy_evidence import front_connections
from harness.senders.base import TestMessage
from harness.senders.worker_pool import WorkerFailed, WorkerPool
from lab.backends.base import BackendError, RunningLab, SenderContainer, SenderHost
from lab.endpoints import ReceiverEndpoint
from lab.evidence_store import write_durably
from lab.evidence_watch import wait_until

CONTAINER_CA = "/etc/tlslab/lab-ca.pem"
READY_SECONDS = 60
STATUS_SECONDS = 30
IDLE_SECONDS = 5
SESSION_SECONDS = 5.0
EXEC_SECONDS = 15  # every other command run in the container (submit, queue commands)
TIMED_OUT = 124  # the exit status of coreutils' timeout when it had to stop the command
# one long-lived command server per concurrent lane (lab.command_server), not a docker exec each
COMMAND_SERVER = ["python", "-m", "lab.command_server"]
COMMAND_BOUND = READY_SECONDS + 30.0  # the longest command's own bound, plus its kill grace


class MtaTrouble(Exception):
    """The lab could not observe what the MTA did (not a verdict on the MTA)."""


def ere(text: str) -> str:
    """Return `text` as a POSIX extended regular expression that matches it literally."""
    return re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", text)


def endpoint_for(lab: RunningLab, rcpt: str) -> ReceiverEndpoint | None:
    """Return the lab receiver that serves the recipient's domain, or None."""
    domain = rcpt.rpartition("@")[2].lower()
    return next((e for e in lab.endpoints.values() if e.domain == domain), None)


def needs_docker(lab: RunningLab, what: str) -> None:
    """Raise BackendError unless the lab can start sender containers (the docker backend)."""
    if lab.sender_host is None:
        raise BackendError(
            f"the {what} needs the docker backend", "run with --backend docker / BACKEND=docker"
        )


class MtaHost:
    """One real MTA's sender container, driven through its `ctl.sh`; every wait is bounded."""

    def __init__(self, host: SenderHost, ctl: str, software: str, log_dir: Path) -> None:
        """Wrap a started container whose control script is `ctl`; keep cell logs in `log_dir`."""
        self.host, self.ctl, self.software, self.log_dir = host, ctl, software, log_dir
        self.commands = WorkerPool(host, COMMAND_SERVER, job_seconds=COMMAND_BOUND)

    @classmethod
    def start(
        cls, lab: RunningLab, spec: SenderContainer, ctl: str, software: str, log_dir: Path
    ) -> MtaHost:
        """Start the container `spec` describes and wait (bounded) until the MTA runs."""
        needs_docker(lab, f"{software} driver")
        assert lab.sender_host is not None
        mta = cls(lab.sender_host(spec), ctl, software, log_dir)
        status, output = mta.exec([ctl, "ready", str(READY_SECONDS)], None, READY_SECONDS + 5)
        if status != 0:
            raise BackendError(
                f"{software} in {mta.host.name} did not start: {output[-300:]} {mta.host.logs(10)}",
                f"check lab/docker/{spec.target}/run.sh and the container's capabilities",
            )
        return mta

    @property
    def address(self) -> str:
        """Return the container's address on the lab network."""
        return self.host.address

    def exec(
        self, argv: list[str], env: dict[str, str] | None = None, seconds: float = EXEC_SECONDS
    ) -> tuple[int, str]:
        """Run a command in the container, killed after `seconds`; engine errors are returned."""
        bounded = ["timeout", "-k", "2", f"{seconds:g}", *argv]
        job = {"argv": bounded, "env": env or {}, "seconds": seconds + 5}
        try:
            reply = self.commands.run(job)
            status, output = int(reply["status"]), str(reply["output"])
        except (WorkerFailed, KeyError, TypeError, ValueError) as error:
            return -1, f"{type(error).__name__}: {error}"  # the engine's or the channel's fault
        if status == TIMED_OUT:
            output += f" (killed after {seconds:g} s: {' '.join(argv[:3])} ...)"
        return status, output

    def close(self) -> None:
        """End the container's command servers (the container itself goes with the lab)."""
        self.commands.close()

    def log_size(self) -> int:
        """Return the MTA log's current size in bytes: where this cell's lines begin."""
        status, output = self.exec([self.ctl, "size"])
        if status != 0 or not output.strip().isdigit():
            raise MtaTrouble(f"cannot read the {self.software} log: {output.strip()[-200:]}")
        return int(output.strip())

    def submit(self, message: TestMessage) -> None:
        """Hand the message (Unix line ends) to the MTA's sendmail interface in the container."""
        data = message.data.replace(b"\r\n", b"\n")
        env = {"TLSLAB_MESSAGE": base64.b64encode(data).decode()}
        status, output = self.exec([self.ctl, "submit", message.mail_from, message.rcpt], env)
        if status != 0:
            raise MtaTrouble(f"submission failed ({status}): {output.strip()[-200:]}")

    def await_lines(self, pattern: str, offset: int, count: int, what: str) -> str:
        """Wait (bounded, in the container) for `count` matching log lines; return the log since."""
        argv = [self.ctl, "await", str(STATUS_SECONDS), str(offset), str(count), pattern]
        status, output = self.exec(argv, None, STATUS_SECONDS + 5)
        if status != 0:
            raise MtaTrouble(
                f"no {what} within {STATUS_SECONDS} s; log: {' | '.join(output.splitlines()[-6:])}"
            )
        return output

    def session_keys(self, evidence: Path) -> set[tuple[str, int]]:
        """Return (ip, port) of the connections this container already made to an MX."""
        return {peer for peer, _ in front_connections(evidence, self.host.address)}

    def attempts(
        self, receiver: ReceiverEndpoint, known: set[tuple[str, int]], anchor: str | None
    ) -> tuple[tuple[str, int], ...]:
        """Return this cell's SMTP connections: the receiver's new sessions from this container."""
        for mx in receiver.mx:  # every MX host of the receiver (the MTA may have tried each)
            self.exec([self.ctl, "idle", str(IDLE_SECONDS), mx.host], None, IDLE_SECONDS + 5)

        def connections() -> list[tuple[tuple[str, int], set[str]]]:
            found = front_connections(receiver.evidence_dir, self.host.address)
            return [(peer, ids) for peer, ids in found if peer not in known]

        def complete(found: list[tuple[tuple[str, int], set[str]]]) -> bool:
            return anchor is None or anchor in set().union(*(ids for _, ids in found))

        found = wait_until([receiver.evidence_dir], connections, complete, SESSION_SECONDS)
        return tuple(peer for peer, _ in found)

    def keep_log(self, message: TestMessage, log: str) -> None:
        """Keep this cell's MTA log lines next to the report."""
        name = re.sub(r"[^A-Za-z0-9._-]", "_", message.message_id.strip("<>"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        write_durably(self.log_dir / f"{name}.log", log.encode())
