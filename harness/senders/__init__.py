"""Sender drivers, one module each, in an explicit registry keyed by the YAML `driver` field."""

from harness.model import SenderProfile
from harness.senders.base import SendAction, SenderDriver, SendReport, TestMessage
from harness.senders.reference import ReferenceSender

DRIVERS = {"reference": ReferenceSender}


def make_driver(profile: SenderProfile) -> SenderDriver:
    """Return the driver for a sender profile."""
    return DRIVERS[profile.driver](profile)


__all__ = ["DRIVERS", "SendAction", "SendReport", "SenderDriver", "TestMessage", "make_driver"]
