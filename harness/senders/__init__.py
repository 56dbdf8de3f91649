"""Sender drivers, one module each, in an explicit registry keyed by the YAML `driver` field."""

from pathlib import Path

from harness.model import SenderProfile
from harness.senders.base import SendAction, SenderDriver, SendReport, TestMessage
from harness.senders.reference import ReferenceSender
from harness.senders.remote import RemoteReferenceSender
from lab.backends.base import RunningLab


def make_driver(profile: SenderProfile, lab: RunningLab, outbox: Path) -> SenderDriver:
    """Return the driver for a profile: in-process locally, inside the lab network otherwise."""
    if lab.sender_host is not None:
        return RemoteReferenceSender(profile, lab, outbox)
    return ReferenceSender(profile)


__all__ = ["SendAction", "SendReport", "SenderDriver", "TestMessage", "make_driver"]
