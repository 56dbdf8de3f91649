"""Sender drivers, one module each, in an explicit registry keyed by the YAML `driver` field."""

from pathlib import Path

from harness.model import (
    PostfixSenderProfile,
    RelaySenderProfile,
    SenderProfile,
    SesSenderProfile,
)
from harness.senders.base import SendAction, SenderDriver, SendReport, TestMessage
from harness.senders.postfix import PostfixSender
from harness.senders.reference import ReferenceSender
from harness.senders.relay import RelaySender
from harness.senders.remote import RemoteReferenceSender
from harness.senders.ses import SesSender
from harness.senders.sts_sender import StsReferenceSender
from lab.backends.base import BackendError, RunningLab


def make_driver(profile: SenderProfile, lab: RunningLab, outbox: Path) -> SenderDriver:
    """Return the driver for a profile: in-process locally, inside the lab network otherwise."""
    if isinstance(profile, SesSenderProfile):
        return SesSender(profile)  # an external service: it must reach the lab's public MX hosts
    if isinstance(profile, RelaySenderProfile):
        return RelaySender(profile, lab, outbox)  # a submission service that delivers to the lab
    if isinstance(profile, PostfixSenderProfile):
        if lab.sender_host is None:
            raise BackendError(
                "the postfix driver needs the docker backend",
                "run with --backend docker / BACKEND=docker",
            )
        return PostfixSender(profile, lab, outbox)
    if lab.sender_host is not None:
        return RemoteReferenceSender(profile, lab, outbox)
    if profile.mta_sts:
        return StsReferenceSender(profile)
    return ReferenceSender(profile)


__all__ = ["SendAction", "SendReport", "SenderDriver", "TestMessage", "make_driver"]
