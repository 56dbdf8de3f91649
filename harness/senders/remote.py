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
import traceback
from pathlib import Path
from typing import IO, Any

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


class RemoteReferenceSender:
    """Host side: runs a reference profile in a sender container inside the lab network."""

    def __init__(self, profile: ReferenceSenderProfile, lab: RunningLab, outbox: Path) -> None:
        """Start (once) the container the profile's deliveries come from."""
        needs_docker(lab, "remote reference sender")
        assert lab.sender_host is not None
        self.profile, self.id, self.outbox = profile, profile.id, outbox
        mounts = (
            Mount(lab.pki.root, str(CONTAINER_CERTS)),
            Mount(outbox, str(CONTAINER_OUTBOX), writable=True),
        )
        spec = SenderContainer(role=f"reference-{profile.id}", mounts=mounts)
        self.host: SenderHost = lab.sender_host(spec)
        self.workers = WorkerPool(
            self.host, WORKER_ARGV, most=WORKERS_PER_SENDER, patience=WORKER_PATIENCE
        )

    def close(self) -> None:
        """End the container's workers (EOF, then SIGKILL if one hangs); the lab removes it."""
        self.workers.close()

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
