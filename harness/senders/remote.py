"""Run the reference sender inside a lab sender container; `python -m harness.senders.remote`.

The host side (`RemoteReferenceSender`) keeps long-lived workers in the container
(`--serve`: one JSON job per line in, one SendReport per line out; harness.senders.worker_pool),
so a cell costs no interpreter start. The container side resolves MX through the lab DNS and
delivers. Without `--serve` it runs the one job in $TLSLAB_JOB and prints its report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, Any, ClassVar

from harness.model import ReferenceSenderProfile
from harness.senders.base import SendAction, SendReport, TestMessage
from harness.senders.mta import needs_docker
from harness.senders.reference import ReferenceSender
from harness.senders.worker_pool import WorkerFailed, WorkerPool
from lab.backends.base import Mount, RunningLab, SenderContainer, SenderHost

CONTAINER_CERTS = Path("/certs")
CONTAINER_OUTBOX = Path("/outbox")


class DnsRouter:
    """Resolves MX and A records through the system resolver (the lab DNS in a container)."""

    def mx_hosts(self, domain: str) -> list[str]:
        """Return the MX hosts of `domain`, most preferred first ([] when it has none)."""
        import dns.exception
        import dns.resolver

        try:
            answer = dns.resolver.resolve(domain, "MX", lifetime=5)
        except dns.exception.DNSException:
            return []
        ordered = sorted(answer, key=lambda record: record.preference)
        return [str(record.exchange).rstrip(".") for record in ordered]

    def mx_for(self, domain: str) -> str | None:
        """Return the most preferred MX host of `domain`, or None when it has none."""
        hosts = self.mx_hosts(domain)
        return hosts[0] if hosts else None

    def address_of(self, mx_host: str) -> tuple[str, int]:
        """Return the first IPv4 address of `mx_host` and the SMTP port."""
        info = socket.getaddrinfo(mx_host, 25, socket.AF_INET, socket.SOCK_STREAM)
        return str(info[0][4][0]), 25


def report_to_dict(report: SendReport) -> dict[str, Any]:
    """Return a SendReport as JSON-ready data."""
    data = dataclasses.asdict(report)
    data["action"] = report.action.value
    data["portal_path"] = str(report.portal_path) if report.portal_path else None
    return data


def report_to_json(report: SendReport) -> str:
    """Serialise a SendReport as one JSON line."""
    return json.dumps(report_to_dict(report))


def report_from_dict(data: dict[str, Any], outbox: Path) -> SendReport:
    """Read a worker's report, mapping its container portal path into the host's outbox.

    Raise ValueError (a lab failure) for a malformed report or a portal path outside /outbox.
    """
    portal = data.get("portal_path")
    host_portal = None
    if portal:
        inside = Path(portal).relative_to(CONTAINER_OUTBOX)
        if ".." in inside.parts:
            raise ValueError(f"portal path outside the outbox: {portal!r}")
        host_portal = outbox / inside
    return SendReport(
        action=SendAction(data["action"]),
        reason=str(data["reason"]),
        attempts=tuple((str(ip), int(port)) for ip, port in data["attempts"]),
        tls_version=data.get("tls_version"),
        portal_path=host_portal,
        lab_fault=bool(data.get("lab_fault")),
    )


def report_from_json(text: str, outbox: Path) -> SendReport:
    """Parse a SendReport line, mapping a container portal path into the host's outbox."""
    data: dict[str, Any] = json.loads(text)
    return report_from_dict(data, outbox)


WORKER_ARGV = ["python", "-m", "harness.senders.remote", "--serve"]
# each worker is an interpreter in the container: starting one costs far more than a cell
WORKERS_PER_SENDER = 2
# a cell takes 0.01-0.1 s once a worker is up: a second interpreter only for a cell kept waiting
WORKER_PATIENCE = 0.3
CONTAINER_ROLE = "reference"  # one container of every reference profile of a run


def container_spec(certs: Path, outbox: Path) -> SenderContainer:
    """Return the reference sender's container: the lab CA, the portal outbox, a warm worker."""
    mounts = (
        Mount(certs, str(CONTAINER_CERTS)),
        Mount(outbox, str(CONTAINER_OUTBOX), writable=True),
    )
    return SenderContainer(role=CONTAINER_ROLE, mounts=mounts, warm=tuple(WORKER_ARGV))


class SharedContainer:
    """The reference sender's one container in a lab and its workers, shared by its profiles.

    A profile is data sent with each job (the worker builds the sender from it), and nothing
    in the container depends on which profile uses it: the HELO name, TLS context and portal
    folder all come from the job. So every reference profile of a run delivers from the same
    container, through the same workers: one container start instead of one per profile. The
    pool may grow to WORKERS_PER_SENDER workers per profile, as many as before, but starts
    another only for a job kept waiting (WORKER_PATIENCE), so a quick suite needs one.
    """

    _open: ClassVar[dict[tuple[int, Path], SharedContainer]] = {}  # (id(lab), outbox) -> in use
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, lab: RunningLab, outbox: Path) -> None:
        """Describe the container of `lab` whose portal outbox is `outbox`; start nothing yet."""
        self.lab, self.outbox, self.users = lab, outbox, 0
        self._started = threading.Lock()
        self._host: SenderHost | None = None
        self._workers: WorkerPool | None = None

    @classmethod
    def join(cls, lab: RunningLab, outbox: Path) -> SharedContainer:
        """Return the lab's shared container (started on first use), counting one more user."""
        with cls._lock:
            shared = cls._open.setdefault((id(lab), outbox), cls(lab, outbox))
            shared.users += 1
            another = shared.users > 1
        try:
            shared.start()
        except BaseException:
            shared.leave()
            raise
        if another:  # at most as many workers as the profiles had in containers of their own
            shared.workers.allow(WORKERS_PER_SENDER)
        return shared

    def start(self) -> None:
        """Start the container and its pool once; a profile arriving meanwhile waits for it."""
        with self._started:
            if self._host is not None:
                return
            sender_host = self.lab.sender_host
            assert sender_host is not None
            host = sender_host(container_spec(self.lab.pki.root, self.outbox))
            self._workers = WorkerPool(
                host, WORKER_ARGV, most=WORKERS_PER_SENDER, patience=WORKER_PATIENCE
            )
            self._host = host

    @property
    def host(self) -> SenderHost:
        """Return the started container."""
        assert self._host is not None
        return self._host

    @property
    def workers(self) -> WorkerPool:
        """Return the started container's worker pool."""
        assert self._workers is not None
        return self._workers

    def leave(self) -> None:
        """Count one user less; the last one closes the workers (the lab removes the container)."""
        with self._lock:
            self.users -= 1
            if self.users:
                return
            del self._open[(id(self.lab), self.outbox)]
        if self._workers is not None:
            self._workers.close()


class RemoteReferenceSender:
    """Host side: runs a reference profile in the lab's reference-sender container."""

    def __init__(self, profile: ReferenceSenderProfile, lab: RunningLab, outbox: Path) -> None:
        """Join (starting it if this is the first profile) the container deliveries come from."""
        needs_docker(lab, "remote reference sender")
        assert lab.sender_host is not None
        self.profile, self.id, self.outbox = profile, profile.id, outbox
        self.shared = SharedContainer.join(lab, outbox)
        self.host: SenderHost = self.shared.host
        self.workers = self.shared.workers
        self._closed = False

    def close(self) -> None:
        """Leave the container; the last profile ends its workers (EOF, then SIGKILL if hung)."""
        if not self._closed:
            self._closed = True
            self.shared.leave()

    def send(self, message: TestMessage) -> SendReport:
        """Deliver from inside the lab network; a worker that fails makes a lab-failure report."""
        job = {
            "profile": self.profile.model_dump(mode="json"),
            "message": {**dataclasses.asdict(message), "data": message.data.decode()},
        }
        try:
            return report_from_dict(self.workers.run(job), self.outbox)
        except WorkerFailed as error:
            reason = f"sender container {self.host.name}: {error}"
        except (KeyError, TypeError, ValueError) as error:
            reason = f"sender container {self.host.name}: malformed report ({error!r:.300})"
        return SendReport(SendAction.FAILED, reason, lab_fault=True)


def run_job(job: dict[str, Any]) -> SendReport:
    """Container side: deliver one job through the lab DNS and return the sender's report."""
    profile = ReferenceSenderProfile.model_validate(job["profile"])
    raw = job["message"]
    message = TestMessage(raw["message_id"], raw["mail_from"], raw["rcpt"], raw["data"].encode())
    ca_cert = CONTAINER_CERTS / "ca" / "lab-ca.pem"
    return ReferenceSender(profile).deliver(message, DnsRouter(), ca_cert, CONTAINER_OUTBOX)


def serve(jobs: IO[str], replies: IO[str]) -> int:
    """Container side: answer the hello and each job line (harness.senders.worker_pool) to EOF."""
    for line in jobs:
        request = json.loads(line)
        if "hello" in request:
            reply: dict[str, Any] = {"ready": True, "pid": os.getpid()}
        else:
            try:
                reply = {"seq": request["seq"], "report": report_to_dict(run_job(request["job"]))}
            except Exception:  # this job's failure, reported; the worker takes the next job
                reply = {"seq": request.get("seq"), "error": traceback.format_exc()[-1500:]}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


def main() -> int:
    """Container side: serve jobs on stdin (`--serve`), or run the one job in $TLSLAB_JOB."""
    if "--serve" in sys.argv[1:]:
        replies = os.fdopen(os.dup(1), "w", encoding="utf-8")  # the protocol's own stdout
        os.dup2(2, 1)  # whatever the sender code prints goes to stderr, not into the protocol
        return serve(sys.stdin, replies)
    report = run_job(json.loads(os.environ["TLSLAB_JOB"]))
    print(report_to_json(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
