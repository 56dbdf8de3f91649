"""Receiver states as frozen, validated data: TLS versions, certificate states, receiver specs."""

from __future__ import annotations

import dataclasses
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
from lab.dane_spec import DaneSpec
from lab.sts_spec import StsSpec

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
        return _RANKS[self]

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
_RANKS = {version: index for index, version in enumerate(TlsVersion)}  # oldest first


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


MX_LIMIT = 5  # MX hosts one receiver state may publish
OWN_MX = "mx"  # the label of the receiver's own MX host, the one its certificate names


class MxHost(BaseModel):
    """One MX record of a receiver's domain: host `<name>.<domain>`, its preference, STARTTLS."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # a DNS label
    preference: Annotated[StrictInt, within(0, 65_535)] = 10
    starttls: StrictBool | None = None  # None: as the receiver's `starttls`


class Greylist(BaseModel):
    """Greylisting: answer 451 4.7.1 to the first `first_attempts` attempts of each message."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    first_attempts: Annotated[StrictInt, within(0, 10)] = 1


@dataclasses.dataclass(frozen=True)
class MxRoute:
    """One MX host of a receiver as resolved from its spec: full name, preference, STARTTLS."""

    host: str
    preference: int
    starttls: bool


class ProxyVector(enum.StrEnum):
    """What the man in the middle in front of a receiver does to the sender's session."""

    NONE = "none"  # relays unchanged: the negative control of every vector
    STRIP_STARTTLS = "strip-starttls"
    STARTTLS_454 = "starttls-454"
    STARTTLS_501 = "starttls-501"
    STARTTLS_BROKEN = "starttls-broken"
    STARTTLS_INJECTION = "starttls-injection"
    TLS_INTERCEPT = "tls-intercept"


class ProxySpec(BaseModel):
    """A man in the middle the MX host name resolves to, relaying to the receiver behind it."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    vector: ProxyVector


class ReceiverSpec(BaseModel):
    """One receiving MTA pinned to one TLS state; `id` is the YAML file's stem."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

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
    # MX records of the domain; empty: one MX, `mx.<domain>`, preference 10 (see MxHost)
    mx: tuple[MxHost, ...] = Field(default=(), max_length=MX_LIMIT)
    greylist: Greylist | None = None
    proxy: ProxySpec | None = None  # a man in the middle in front of this receiver
    dane: DaneSpec | None = None  # its own DNSSEC subzone with TLSA records (lab.dane_spec)
    sts: StsSpec | None = None  # MTA-STS records and policy host of its domain (lab.sts_spec)

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

    @model_validator(mode="after")
    def _mx_consistent(self) -> ReceiverSpec:
        """Reject MX lists without the own host, with repeated names or preferences."""
        if not self.mx:
            return self
        names = [host.name for host in self.mx]
        preferences = [host.preference for host in self.mx]
        if OWN_MX not in names:
            raise ValueError(
                f"mx does not list the receiver's own host; add an entry with name: {OWN_MX}"
            )
        if len(set(names)) < len(names) or len(set(preferences)) < len(preferences):
            raise ValueError(
                "mx names and preferences are not unique; give each MX host its own name and "
                "preference (one try order)"
            )
        for host in self.mx:
            offers = self.starttls if host.starttls is None else host.starttls
            if host.name != OWN_MX and offers:
                raise ValueError(
                    f"mx host {host.name} offers STARTTLS without a certificate (only {OWN_MX} "
                    "has one); set starttls: false for it"
                )
        return self

    @property
    def mx_routes(self) -> list[MxRoute]:
        """Return every MX host of this receiver, most preferred first."""
        hosts = self.mx or (MxHost(name=OWN_MX),)
        routes = [
            MxRoute(
                f"{h.name}.{self.domain}",
                h.preference,
                self.starttls if h.starttls is None else h.starttls,
            )
            for h in hosts
        ]
        return sorted(routes, key=lambda route: route.preference)

    @model_validator(mode="after")
    def _proxied_receiver_offers_tls(self) -> ReceiverSpec:
        """Reject a proxy in front of a receiver without STARTTLS: every vector attacks TLS."""
        if self.proxy is not None and not self.starttls:
            raise ValueError("a proxy needs a receiver with starttls: true behind it")
        return self

    @property
    def domain(self) -> str:
        """Return the recipient domain this receiver is the MX for."""
        return f"{self.id}.{self.zone}"

    @property
    def mx_host(self) -> str:
        """Return the receiver's own MX host name (the one its certificate names)."""
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
