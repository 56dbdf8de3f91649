"""Run the reference sender inside a lab sender container; `python -m harness.senders.remote`.

The host side (`RemoteReferenceSender`) passes the job as JSON in $TLSLAB_JOB; the container side
resolves MX through the lab DNS, delivers, and prints the SendReport as one JSON line.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

from harness.model import ReferenceSenderProfile
from harness.senders.base import SendAction, SendReport, TestMessage
from harness.senders.mta import needs_docker
from harness.senders.reference import ReferenceSender
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


def report_to_json(report: SendReport) -> str:
    """Serialise a SendReport as one JSON line."""
    data = dataclasses.asdict(report)
    data["action"] = report.action.value
    data["portal_path"] = str(report.portal_path) if report.portal_path else None
    return json.dumps(data)


def report_from_json(text: str, outbox: Path) -> SendReport:
    """Parse a SendReport line, mapping a container portal path into the host's outbox."""
    data: dict[str, Any] = json.loads(text)
    portal = data.get("portal_path")
    host_portal = outbox / Path(portal).relative_to(CONTAINER_OUTBOX) if portal else None
    return SendReport(
        action=SendAction(data["action"]),
        reason=str(data["reason"]),
        attempts=tuple((str(ip), int(port)) for ip, port in data["attempts"]),
        tls_version=data.get("tls_version"),
        portal_path=host_portal,
        lab_fault=bool(data.get("lab_fault")),
    )


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

    def close(self) -> None:
        """Nothing to release here: the container goes with the lab."""

    def send(self, message: TestMessage) -> SendReport:
        """Deliver from inside the lab network and return the container's SendReport."""
        job = {
            "profile": self.profile.model_dump(mode="json"),
            "message": {**dataclasses.asdict(message), "data": message.data.decode()},
        }
        status, output = self.host.exec(
            ["python", "-m", "harness.senders.remote"], env={"TLSLAB_JOB": json.dumps(job)}
        )
        lines = output.strip().splitlines()
        if status != 0 or not lines:
            return SendReport(
                SendAction.FAILED, f"sender container failed ({status}): {output[-300:]}",
                lab_fault=True,
            )  # fmt: skip
        return report_from_json(lines[-1], self.outbox)


def main() -> int:
    """Container side: read $TLSLAB_JOB, deliver through the lab DNS, print the report."""
    job = json.loads(os.environ["TLSLAB_JOB"])
    profile = ReferenceSenderProfile.model_validate(job["profile"])
    raw = job["message"]
    message = TestMessage(raw["message_id"], raw["mail_from"], raw["rcpt"], raw["data"].encode())
    ca_cert = CONTAINER_CERTS / "ca" / "lab-ca.pem"
    report = ReferenceSender(profile).deliver(message, DnsRouter(), ca_cert, CONTAINER_OUTBOX)
    print(report_to_json(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
