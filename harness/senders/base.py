"""What every sender driver takes (a test message) and returns (a SendReport), and its protocol."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Protocol


class SendAction(enum.StrEnum):
    """What the sender says it did with the message."""

    DELIVERED = "delivered"
    REFUSED = "refused"
    DEFERRED = "deferred"
    FALLBACK = "fallback"
    FAILED = "failed"
    SUBMITTED = "submitted"  # handed to a service we cannot look inside; the lab watches for it


@dataclasses.dataclass(frozen=True)
class TestMessage:
    """One uniquely identified synthetic message for one cell."""

    __test__ = False  # not a pytest class

    message_id: str
    mail_from: str
    rcpt: str
    data: bytes


@dataclasses.dataclass(frozen=True)
class SendReport:
    """The sender's own account: what it did, why, and which TCP connections it opened."""

    action: SendAction
    reason: str
    attempts: tuple[tuple[str, int], ...] = ()
    tls_version: str | None = None
    portal_path: Path | None = None
    lab_fault: bool = False


class SenderDriver(Protocol):
    """Sends one test message the way a particular sender would; made for one run, closed by it.

    A driver is constructed with everything it needs (its profile, the running lab, the run's
    outbox); `close()` releases what it holds on this machine once the run's lab has stopped.
    """

    id: str

    def send(self, message: TestMessage) -> SendReport:
        """Send `message` to its recipient's MX in the lab; fallback copies go to the outbox."""
        ...

    def close(self) -> None:
        """Release the driver's host resources (temporary folders); the lab removes containers."""
        ...
