"""DANE receiver states as frozen data: the DNSSEC state of its zone and its TLSA records."""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from lab.bounds import within

TLSA_LIMIT = 4  # TLSA records one receiver state may publish


class ZoneSigning(enum.StrEnum):
    """How the receiver's own subzone `<id>.<zone>` is published."""

    SIGNED = "signed"  # signed, DS in the parent: secure
    UNSIGNED = "unsigned"  # no signatures, no DS (NSEC in the parent proves it): insecure
    MISSING_DS = "missing-ds"  # signed, but the parent has no DS: insecure
    BOGUS_TLSA = "bogus-tlsa"  # signed, DS in the parent, the TLSA RRSIG's signature corrupted
    EXPIRED_TLSA_RRSIG = "expired-tlsa-rrsig"  # signed, the TLSA RRSIG expired a day ago


class TlsaSubject(enum.StrEnum):
    """What a TLSA record's association data is computed from."""

    LEAF = "leaf"  # the receiver's own certificate
    CA = "ca"  # the lab CA that issued it
    OTHER = "other"  # an unrelated key: matches nothing the receiver presents


class TlsaRecord(BaseModel):
    """One TLSA record `usage selector matching` whose data is computed from `of`."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    usage: Annotated[StrictInt, within(0, 3)]
    selector: Annotated[StrictInt, within(0, 1)]
    matching: Annotated[StrictInt, within(0, 2)]
    of: TlsaSubject


class DaneSpec(BaseModel):
    """The DNS side of a DANE receiver: its signed (or not) subzone, TLSA records, lookup faults."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    signing: ZoneSigning = ZoneSigning.SIGNED
    tlsa: tuple[TlsaRecord, ...] = Field(default=(), max_length=TLSA_LIMIT)
    tlsa_servfail: StrictBool = False  # the lab DNS answers SERVFAIL to the TLSA query
    send_ca: StrictBool = False  # the receiver sends the lab CA after its leaf (DANE-TA needs it)

    @model_validator(mode="after")
    def _tlsa_present(self) -> DaneSpec:
        """Reject a DANE state that publishes no TLSA record and does not fail the lookup."""
        if not self.tlsa and not self.tlsa_servfail:
            raise ValueError("dane needs at least one tlsa record, or tlsa_servfail: true")
        return self
