"""The one registry of sender drivers: the YAML `driver` -> profile model, factory, visibility.

Adding a driver is one entry in DRIVERS: its profile model (validated from the sender YAML), the
factory that opens it for one run, and whether the lab can look inside it (`watch` is None) or
only watch the receivers and the bounce mailbox from outside for `watch(profile)` seconds after
a submission. A run opens each driver once and closes it when the run ends (harness.runner).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, PlainValidator, field_validator
from pydantic_core import PydanticCustomError

from harness.model import (
    PostfixSenderProfile,
    ReferenceSenderProfile,
    RelaySenderProfile,
    RfcSenderProfile,
    SenderProfileBase,
    SesSenderProfile,
)
from harness.senders.base import SenderDriver
from harness.senders.exim_profile import EximSenderProfile
from lab.backends.base import RunningLab, SenderContainer

# each driver's module is imported when a run opens it: a run pays only for its own senders

P = TypeVar("P", bound=SenderProfileBase)


@dataclasses.dataclass(frozen=True)
class Driver(Generic[P]):
    """One sender driver: its profile model, its factory, and how the lab observes it."""

    profile: type[P]
    open: Callable[[P, RunningLab, Path], SenderDriver]
    watch: Callable[[P], float] | None = None  # None: the lab reads the sender's own account
    # the sender containers `open` will ask a lab for, given the certificates and the outbox
    containers: Callable[[P, Path, Path], tuple[SenderContainer, ...]] | None = None

    def start(self, profile: SenderProfileBase, lab: RunningLab, outbox: Path) -> SenderDriver:
        """Open this driver for `profile` (a profile of this driver's model) in `lab`."""
        assert isinstance(profile, self.profile), (profile.driver, self.profile)
        return self.open(profile, lab, outbox)

    def watch_seconds(self, profile: SenderProfileBase) -> float | None:
        """Return how long the lab watches from outside after a submission; None: it looks in."""
        if self.watch is None:
            return None
        assert isinstance(profile, self.profile), (profile.driver, self.profile)
        return self.watch(profile)


def _reference(profile: ReferenceSenderProfile, lab: RunningLab, outbox: Path) -> SenderDriver:
    """Return the reference sender: in-process locally, in a sender container otherwise."""
    if lab.sender_host is not None:
        from harness.senders.remote import RemoteReferenceSender

        return RemoteReferenceSender(profile, lab, outbox)
    from harness.senders.reference import ReferenceSender

    return ReferenceSender(profile, lab, outbox)


def _reference_containers(
    profile: ReferenceSenderProfile, certs: Path, outbox: Path
) -> tuple[SenderContainer, ...]:
    """Return the one container every reference profile of a run delivers from."""
    from harness.senders.remote import container_spec

    return (container_spec(certs, outbox),)


def _postfix(profile: PostfixSenderProfile, lab: RunningLab, outbox: Path) -> SenderDriver:
    """Return Postfix in its sender container."""
    from harness.senders.postfix import PostfixSender

    return PostfixSender(profile, lab, outbox)


def _exim(profile: EximSenderProfile, lab: RunningLab, outbox: Path) -> SenderDriver:
    """Return Exim in its sender container."""
    from harness.senders.exim import EximSender

    return EximSender(profile, lab, outbox)


def _ses(profile: SesSenderProfile, lab: RunningLab, outbox: Path) -> SenderDriver:
    """Return the Amazon SES driver (it sends through the service, not from the lab)."""
    from harness.senders.ses import SesSender

    return SesSender(profile)


def _relay(profile: RelaySenderProfile, lab: RunningLab, outbox: Path) -> SenderDriver:
    """Return the driver that submits to an outside relay."""
    from harness.senders.relay import RelaySender

    return RelaySender(profile, lab, outbox)


def _rfc(profile: RfcSenderProfile, lab: RunningLab, outbox: Path) -> SenderDriver:
    """Return the RFC oracle with MTA-STS from the lab's DNS and policy host wired into its seam."""
    from harness.senders.rfc import RfcSender

    if lab.dns is None:
        return RfcSender(profile, lab, outbox)  # refuses it: BackendError, what the lab lacks
    from harness.senders.sts_source import LabStsSource

    return RfcSender(profile, lab, outbox, LabStsSource.of_lab(lab))


def _observe_timeout(profile: RelaySenderProfile | SesSenderProfile) -> float:
    """Return the profile's `observe_timeout_seconds`."""
    return profile.observe_timeout_seconds


DRIVERS: dict[str, Driver[Any]] = {
    "reference": Driver(ReferenceSenderProfile, _reference, containers=_reference_containers),
    "postfix": Driver(PostfixSenderProfile, _postfix),
    "exim": Driver(EximSenderProfile, _exim),
    # external services: the lab cannot look inside, it watches the receivers and bounces
    "ses": Driver(SesSenderProfile, _ses, _observe_timeout),
    "relay": Driver(RelaySenderProfile, _relay, _observe_timeout),
    # the RFC 7672 / RFC 8461 oracle: validates DNSSEC itself against the lab DNS, either backend
    "rfc": Driver(RfcSenderProfile, _rfc),
}


def driver_of(profile: SenderProfileBase) -> Driver[Any]:
    """Return the registry entry of a profile's driver."""
    return DRIVERS[profile.driver]


def sender_containers(
    profiles: Iterable[SenderProfileBase], certs: Path, outbox: Path
) -> tuple[SenderContainer, ...]:
    """Return the distinct sender containers the profiles' drivers will ask a lab for."""
    wanted: list[SenderContainer] = []
    for profile in profiles:
        containers = driver_of(profile).containers
        if containers is not None:
            wanted += containers(profile, certs, outbox)
    return tuple(dict.fromkeys(wanted))


def open_driver(profile: SenderProfileBase, lab: RunningLab, outbox: Path) -> SenderDriver:
    """Open the profile's driver for one run in `lab` (the caller closes it)."""
    return driver_of(profile).start(profile, lab, outbox)


class _DriverField(BaseModel):
    """The `driver` field alone, which selects the profile model from DRIVERS."""

    model_config = ConfigDict(defer_build=True, extra="ignore")

    driver: str = "reference"

    @field_validator("driver")
    @classmethod
    def _known(cls, value: str) -> str:
        """Reject a driver DRIVERS does not have, listing every one it has."""
        if value not in DRIVERS:
            allowed = ", ".join(f"'{name}'" for name in DRIVERS)
            raise PydanticCustomError(
                "literal_error", "Input should be one of {allowed}", {"allowed": allowed}
            )
        return value


def _profile_for_driver(data: Any) -> SenderProfileBase:
    """Validate `data` as the profile model its `driver` names (errors keep YAML field names)."""
    if isinstance(data, SenderProfileBase):
        return data
    model: type[SenderProfileBase] = DRIVERS[_DriverField.model_validate(data).driver].profile
    return model.model_validate(data)


SenderProfile = Annotated[SenderProfileBase, PlainValidator(_profile_for_driver)]
"""A sender profile, its model chosen by `driver` (default `reference`) from DRIVERS."""
