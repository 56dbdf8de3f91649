"""Receiver states as frozen, validated data: TLS versions, certificate states, receiver specs."""

from __future__ import annotations

import enum
import ssl
from typing import Annotated

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lab.bounds import TEXT_MAX_LENGTH, within

LAB_ZONE = "lab.test"
BOUNCE_LOCAL_PART = "bounce"
SESSION_LIMITS = {  # field -> (lowest, highest) allowed value
    "max_sessions_per_client": (1, 10_000),
    "max_recipients": (1, 100_000),
    "max_junk_commands": (1, 100_000),
    "max_errors": (1, 1_000),
}
ZONE_PATTERN = r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$"


class TlsVersion(enum.StrEnum):
    """A TLS protocol version, written the way results.json and OpenSSL name it."""

    TLS10 = "TLSv1.0"
    TLS11 = "TLSv1.1"
    TLS12 = "TLSv1.2"
    TLS13 = "TLSv1.3"

    @property
    def ssl_version(self) -> ssl.TLSVersion:
        """Return the matching `ssl.TLSVersion` member."""
        return _SSL_VERSIONS[self]

    @property
    def is_legacy(self) -> bool:
        """Return True for TLS 1.0 and 1.1, which OpenSSL 3 only speaks at @SECLEVEL=0."""
        return self in (TlsVersion.TLS10, TlsVersion.TLS11)

    @property
    def rank(self) -> int:
        """Return an integer that orders versions from oldest to newest."""
        return list(TlsVersion).index(self)

    @classmethod
    def from_openssl(cls, name: str) -> TlsVersion:
        """Map OpenSSL's protocol name (`TLSv1`, `TLSv1.2`, ...) to a TlsVersion."""
        normalised = "TLSv1.0" if name == "TLSv1" else name
        return cls(normalised)


_SSL_VERSIONS = {
    TlsVersion.TLS10: ssl.TLSVersion.TLSv1,
    TlsVersion.TLS11: ssl.TLSVersion.TLSv1_1,
    TlsVersion.TLS12: ssl.TLSVersion.TLSv1_2,
    TlsVersion.TLS13: ssl.TLSVersion.TLSv1_3,
}


class CertState(enum.StrEnum):
    """The state of the certificate a receiver presents."""

    VALID = "valid"
    SELF_SIGNED = "self-signed"
    EXPIRED = "expired"
    MISMATCHED = "mismatched"
    UNTRUSTED_CA = "untrusted-ca"
    NOT_YET_VALID = "not-yet-valid"
    MISSING_INTERMEDIATE = "missing-intermediate"
    WEAK_KEY = "weak-key"
    SHA1_SIGNATURE = "sha1-signature"
    WRONG_EKU = "wrong-eku"
    WILDCARD = "wildcard"
    SNI_ONLY = "sni-only"


class ReceiverSpec(BaseModel):
    """One receiving MTA pinned to one TLS state; `id` is the YAML file's stem."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=63)  # a DNS label
    description: str = Field(default="", max_length=TEXT_MAX_LENGTH)
    starttls: StrictBool = True
    tls_min: TlsVersion = TlsVersion.TLS12
    tls_max: TlsVersion = TlsVersion.TLS13
    certificate: CertState = CertState.VALID
    ciphers: str | None = Field(default=None, min_length=1, max_length=200)  # TLS <= 1.2 suites
    max_message_bytes: Annotated[StrictInt, within(1, 256 * 1024 * 1024)] = 10 * 1024 * 1024
    max_sessions: Annotated[StrictInt, within(1, 10_000)] = 100
    idle_timeout_seconds: Annotated[StrictFloat, within(0.01, 86_400)] = 30.0
    command_timeout_seconds: Annotated[StrictFloat, within(0.01, 86_400)] = 60.0
    zone: str = Field(default=LAB_ZONE, pattern=ZONE_PATTERN, max_length=200)
    # Per-session limits with Postfix's defaults (lab.limits says how each is enforced).
    max_sessions_per_client: int = 50  # smtpd_client_connection_count_limit
    max_recipients: int = 1000  # smtpd_recipient_limit
    max_junk_commands: int = 100  # smtpd_junk_command_limit
    max_errors: int = 20  # smtpd_hard_error_limit

    @field_validator(*SESSION_LIMITS, mode="before")
    @classmethod
    def _limit_in_range(cls, value: object, info: ValidationInfo) -> object:
        """Reject a session limit that is not a whole number within its allowed range."""
        low, high = SESSION_LIMITS[str(info.field_name)]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise PydanticCustomError(
                "limit_range", "must be a whole number from {low} to {high}",
                {"low": low, "high": high},
            )  # fmt: skip
        return value

    @field_validator("ciphers")
    @classmethod
    def _openssl_accepts(cls, value: str | None) -> str | None:
        """Reject a cipher string from which OpenSSL selects no suite."""
        if value is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(value)
            except ssl.SSLError:
                raise PydanticCustomError(
                    "cipher_string",
                    "OpenSSL selects no cipher from '{value}'",
                    {"value": value},
                ) from None
        return value

    @model_validator(mode="after")
    def _ciphers_below_tls13(self) -> ReceiverSpec:
        """Reject `ciphers` with TLS 1.3 offered: it only governs TLS 1.2 and older suites."""
        if self.ciphers is not None and self.tls_max is TlsVersion.TLS13:
            raise ValueError(
                "ciphers governs TLS 1.2 and older only, but tls_max is TLSv1.3; "
                "set tls_max: TLSv1.2 or drop ciphers"
            )
        return self

    @model_validator(mode="after")
    def _versions_ordered(self) -> ReceiverSpec:
        """Reject a TLS range whose minimum is newer than its maximum."""
        if self.tls_min.rank > self.tls_max.rank:
            raise ValueError(
                f"tls_min {self.tls_min.value} is newer than tls_max {self.tls_max.value}; "
                "set tls_min <= tls_max"
            )
        return self

    @property
    def domain(self) -> str:
        """Return the recipient domain this receiver is the MX for."""
        return f"{self.id}.{self.zone}"

    @property
    def mx_host(self) -> str:
        """Return the MX host name senders connect to (and its certificate should name)."""
        return f"mx.{self.domain}"

    def accepts(self, address: str) -> bool:
        """Return True for this receiver's domain or the bounce mailbox `bounce[+tag]@<zone>`."""
        local, _, domain = address.rpartition("@")
        domain, local = domain.lower(), local.lower()
        if domain == self.domain:
            return True
        return domain == self.zone and local.partition("+")[0] == BOUNCE_LOCAL_PART

    @property
    def offered_versions(self) -> list[TlsVersion]:
        """Return every TLS version this receiver accepts, oldest first."""
        if not self.starttls:
            return []
        return [v for v in TlsVersion if self.tls_min.rank <= v.rank <= self.tls_max.rank]
