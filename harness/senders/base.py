"""What every sender driver takes (a test message, the running lab) and returns (a SendReport)."""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Protocol, runtime_checkable

from lab.backends.base import RunningLab


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
    """Sends one test message to the lab the way a particular sender would."""

    id: str

    def send(self, message: TestMessage, lab: RunningLab, outbox: Path) -> SendReport:
        """Send `message` to its recipient's MX in `lab`; fallback copies go under `outbox`."""
        ...


@runtime_checkable
class ExternalSender(Protocol):
    """A sender the lab cannot look inside: after SUBMITTED it watches `observe_seconds` for it."""

    id: str
    observe_seconds: float

    def send(self, message: TestMessage, lab: RunningLab, outbox: Path) -> SendReport:
        """Hand `message` to the external service; return SUBMITTED, or why it was not accepted."""
        ...
