"""Sender drivers, one module each, in the explicit DRIVERS registry keyed by the YAML `driver`."""

from harness.senders.base import SendAction, SenderDriver, SendReport, TestMessage
from harness.senders.registry import DRIVERS, Driver, SenderProfile, driver_of, open_driver

__all__ = [
    "DRIVERS",
    "Driver",
    "SendAction",
    "SendReport",
    "SenderDriver",
    "SenderProfile",
    "TestMessage",
    "driver_of",
    "open_driver",
]
