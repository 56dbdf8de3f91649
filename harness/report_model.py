"""Report records besides cells (senders, receivers, sessions, provenance) and headline queries."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lab.spec import CertState, TlsVersion

ID_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
# every Outcome value plus `not-delivered` (tests keep the two lists equal)
QueryOutcome = Literal[
    "delivered", "refused", "deferred", "fallback", "not-observed", "error", "not-delivered"
]


class Frozen(BaseModel):
    """Base for every record here: immutable, unknown fields rejected."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")


class Risk(enum.StrEnum):
    """What a cell's delivery means for the message, derived from the receiver's facts."""

    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    LEGACY = "legacy"
    DOWNGRADED = "downgraded"
    PLAINTEXT = "plaintext"
    NOT_DELIVERED = "not-delivered"
    NOT_OBSERVED = "not-observed"
    ERROR = "error"


class SessionSummary(Frozen):
    """What the receiver recorded about one SMTP session the sender opened for this cell."""

    peer: str
    starttls: bool
    handshake: str
    version: str | None = None
    cipher: str | None = None
    alert: str | None = None
    sni: str | None = None
    message_ids: tuple[str, ...] = ()
    ended_by: str | None = None  # how the session ended (lab.session_facts.EndedBy)
    group: str | None = None  # key-exchange group (TLS 1.3; ECDHE before)
    signature_scheme: str | None = None  # how the receiver signed (TLS 1.2 and 1.3)
    resumed: bool | None = None
    alert_sent: str | None = None  # the TLS alert the receiver sent
    offered_versions: tuple[str, ...] = ()  # what the client's ClientHello offered
    offered_ciphers: tuple[str, ...] = ()  # IANA names (code points when unnamed)
    ja4: str | None = None  # JA4 fingerprint of the client's ClientHello
    session_id: str = ""  # the receiver's id of the session (links a downgrade's two)


class EvidenceLink(Frozen):
    """A file of a cell's evidence, as a path relative to the run folder."""

    kind: Literal["message", "sessions", "portal"]
    path: str


class SenderInfo(Frozen):
    """How a report describes one sender column."""

    id: str
    driver: str
    description: str = ""
    models: str = ""


class ReceiverInfo(Frozen):
    """How a report describes one receiver row: the facts its risk and TLS-RPT results rest on."""

    id: str
    description: str = ""
    certificate: CertState
    tls_min: TlsVersion
    tls_max: TlsVersion
    starttls: bool
    policy: Literal["no-policy-found", "sts", "tlsa"] = "no-policy-found"
    domain: str = Field(default="", description="its recipient domain; empty: <id>.lab.test")
    proxy: str | None = Field(default=None, description="a man in the middle's vector, if any")
    policy_txt: str = Field(default="", description="its _mta-sts TXT record, if it has one")
    policy_strings: tuple[str, ...] = Field(
        default=(), description="the MTA-STS policy lines it serves with 200 (RFC 8460)"
    )
    policy_host: str = Field(default="", description="what its MTA-STS policy host serves")

    @property
    def authenticated(self) -> bool:
        """Return True when a verifying sender accepts the certificate every sender is shown.

        A man in the middle that terminates TLS shows its own certificate instead.
        """
        if self.proxy == "tls-intercept":
            return False
        return self.certificate in (CertState.VALID, CertState.WILDCARD)

    def authenticated_for(self, sni_sent: bool) -> bool:
        """Return `authenticated`, counting `sni-only` when the sender sent SNI (it then got it)."""
        if self.certificate is CertState.SNI_ONLY and self.proxy is None:
            return sni_sent
        return self.authenticated


class CellRef(Frozen):
    """A cell of the suite named by its receiver and sender, and whether it is a study cell."""

    receiver: str
    sender: str
    study: bool = False


class Provenance(Frozen):
    """Where a run's results came from: the lab, the tools, the host and the suite file."""

    lab_version: str
    lab_commit: str
    python: str
    openssl: str
    aiosmtpd: str
    backend: str
    host: str
    suite_file: str
    suite_sha256: str
    started: str
    finished: str


class HeadlineResult(Frozen):
    """A headline finding as observed in a run: its sentence, numbers and the cells counted."""

    id: str
    text: str
    count: int
    of: int | None = None
    claim: int | None = None
    cells: tuple[str, ...] = ()

    @property
    def matches_claim(self) -> bool | None:
        """Return whether the observed count equals the study's claim (None: no claim)."""
        return None if self.claim is None else self.count == self.claim


class CellQuery(Frozen):
    """Which cells a headline counts: by study flag, sender, the receiver's facts and outcome."""

    study: bool | None = None
    senders: tuple[Annotated[str, Field(pattern=ID_PATTERN, max_length=64)], ...] = ()
    unsafe: bool | None = Field(
        default=None, description="receiver lacks TLS >= 1.2 or a valid cert"
    )
    certificate: Literal["valid", "defect"] | None = None
    tls: Literal["legacy", "modern"] | None = Field(
        default=None, description="legacy: the receiver offers at most TLS 1.1"
    )
    starttls: bool | None = None
    outcome: QueryOutcome | None = None


HeadlineCount = Literal["cells", "receivers", "failure-modes"]
_PLACEHOLDER = re.compile(r"\{(count|of)\}")


class HeadlineQuery(Frozen):
    """One headline finding a suite declares: a sentence and the cells whose count fills it."""

    id: str = Field(pattern=ID_PATTERN, max_length=64)
    text: str = Field(max_length=300, description="the sentence; {count} and {of} are filled in")
    where: CellQuery
    of: CellQuery | None = Field(default=None, description="the cells {of} counts")
    count: HeadlineCount = "cells"
    claim: int | None = Field(default=None, ge=0, description="the number the study published")

    @field_validator("text")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        """Allow only the {count} and {of} placeholders in the sentence."""
        if "{" in _PLACEHOLDER.sub("", value) or "}" in _PLACEHOLDER.sub("", value):
            raise ValueError("use only {count} and {of} as placeholders in `text`")
        return value


__all__ = [
    "CellQuery",
    "CellRef",
    "EvidenceLink",
    "HeadlineQuery",
    "HeadlineResult",
    "Provenance",
    "ReceiverInfo",
    "Risk",
    "SenderInfo",
    "SessionSummary",
]
