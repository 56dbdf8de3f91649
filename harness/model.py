"""The harness's vocabulary as frozen models: senders, suites, outcomes, verdicts, results."""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from harness.report_model import (
    ID_PATTERN,
    CellQuery,
    CellRef,
    EvidenceLink,
    HeadlineQuery,
    HeadlineResult,
    Provenance,
    ReceiverInfo,
    Risk,
    SenderInfo,
    SessionSummary,
)
from lab.bounds import TEXT_MAX_LENGTH, TITLE_MAX_LENGTH, within
from lab.spec import TlsVersion

ID_MAX_LENGTH = 64
Id = Annotated[str, Field(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)]
Text = Annotated[str, Field(max_length=TEXT_MAX_LENGTH)]


class Outcome(enum.StrEnum):
    """What happened to a message, as observed."""

    DELIVERED = "delivered"
    REFUSED = "refused"
    DEFERRED = "deferred"
    FALLBACK = "fallback"
    NOT_OBSERVED = "not-observed"
    ERROR = "error"


class Verdict(enum.StrEnum):
    """Observed outcome judged against the expected one; `error` means the lab broke."""

    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"


class TlsMode(enum.StrEnum):
    """Whether a sender uses TLS when it can (opportunistic) or only with TLS (required)."""

    OPPORTUNISTIC = "opportunistic"
    REQUIRED = "required"


class PolicyAction(enum.StrEnum):
    """What a sender does with a message when the receiver does not meet its TLS policy."""

    PLAINTEXT = "plaintext"
    REFUSE = "refuse"
    DEFER = "defer"
    FALLBACK = "fallback"


class Frozen(BaseModel):
    """Base for every model read from YAML: immutable, unknown fields rejected."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")


class TlsFacts(Frozen):
    """The TLS facts of one hop: normalised protocol version, cipher as written, key bits."""

    version: TlsVersion
    cipher: str
    bits: int | None = None


class SenderProfileBase(Frozen):
    """What every sender profile has; each driver's model (harness.senders.registry) extends it."""

    id: Id
    driver: str
    description: Text = ""
    models: Text = Field(default="", description="the real sender (configuration) it stands for")


class ReferenceSenderProfile(SenderProfileBase):
    """A policy model driven by the built-in reference sender; `id` is the YAML file's stem."""

    id: Id
    driver: Literal["reference"] = "reference"
    description: Text = ""
    models: Text = Field(
        default="", description="the real sender this profile is a policy model of"
    )
    tls: TlsMode = TlsMode.OPPORTUNISTIC
    min_version: TlsVersion = TlsVersion.TLS10
    verify: StrictBool = False
    on_policy_unmet: PolicyAction = PolicyAction.PLAINTEXT


class PostfixTlsLevel(enum.StrEnum):
    """The values of Postfix's `smtp_tls_security_level` the postfix driver accepts."""

    NONE = "none"
    MAY = "may"
    ENCRYPT = "encrypt"
    VERIFY = "verify"
    SECURE = "secure"
    DANE = "dane"  # needs dns_support_level: dnssec and the lab's validating resolver


POSTFIX_PROTOCOL = re.compile(r"(?:!|>=|<=)?(?:SSLv2|SSLv3|TLSv1|TLSv1\.[0-3])")


def _postfix_protocols(value: str) -> str:
    """Accept a Postfix protocol list such as '>=TLSv1.2' or '!SSLv2, !SSLv3'; reject the rest."""
    words = [w for w in re.split(r"[ ,:]+", value) if w]
    if not words or not all(POSTFIX_PROTOCOL.fullmatch(w) for w in words):
        raise ValueError("not a Postfix protocol list; write e.g. '>=TLSv1.2' or '!SSLv2, !SSLv3'")
    return value


PostfixProtocols = Annotated[str, Field(max_length=100), AfterValidator(_postfix_protocols)]


class PostfixSenderProfile(SenderProfileBase):
    """A real Postfix (Debian's, stock TLS defaults) in a sender container, with these TLS knobs."""

    id: Id
    driver: Literal["postfix"]
    description: Text = ""
    models: Text = Field(default="", description="the real sender configuration this profile is")
    security_level: PostfixTlsLevel
    mandatory_protocols: PostfixProtocols | None = Field(
        default=None, description="smtp_tls_mandatory_protocols, e.g. '>=TLSv1.2'; unset: stock"
    )
    protocols: PostfixProtocols | None = Field(
        default=None, description="smtp_tls_protocols (opportunistic TLS); unset: stock"
    )
    dns_support_level: Literal["enabled", "dnssec"] | None = Field(
        default=None,
        description="smtp_dns_support_level; dnssec resolves through the lab's validating resolver",
    )
    mta_sts: StrictBool = Field(
        default=False,
        description="smtp_tls_policy_maps from postfix-mta-sts-resolver (MTA-STS, RFC 8461)",
    )

    @model_validator(mode="after")
    def _dane_needs_dnssec(self) -> PostfixSenderProfile:
        """Reject security_level dane without DNSSEC: Postfix would silently fall back to may."""
        if self.security_level is PostfixTlsLevel.DANE and self.dns_support_level != "dnssec":
            raise ValueError("security_level dane needs dns_support_level: dnssec")
        return self


EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]


class CredentialsEnv(Frozen):
    """The names (never the values) of the environment variables holding AWS credentials."""

    access_key_id: EnvName = "AWS_ACCESS_KEY_ID"
    secret_access_key: EnvName = "AWS_SECRET_ACCESS_KEY"
    session_token: EnvName | None = Field(
        default="AWS_SESSION_TOKEN", description="read when set; null: never use a session token"
    )


class SesSenderProfile(SenderProfileBase):
    """Amazon SES (API v2) sending through one configuration set; observed from the outside."""

    id: Id
    driver: Literal["ses"]
    description: Text = ""
    models: Text = Field(default="", description="the real sender configuration this profile is")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$", max_length=30)
    configuration_set: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    from_address: str = Field(pattern=r"^[^@\s<>]+@[^@\s<>]+$", max_length=320)
    feedback_to_lab: StrictBool = Field(
        default=True, description="ask SES to forward bounces to the lab's bounce mailbox"
    )
    credentials_env: CredentialsEnv = CredentialsEnv()
    observe_timeout_seconds: Annotated[StrictFloat, within(0.01, 86_400)] = 120.0


class RelaySecurity(enum.StrEnum):
    """How the relay driver protects its submission session."""

    STARTTLS = "starttls"
    IMPLICIT = "implicit"
    NONE = "none"


class RelaySenderProfile(SenderProfileBase):
    """Any SMTP submission service (host, port, TLS, AUTH) that delivers to the lab's receivers.

    `lab_relay: true` makes the driver start the lab's own Postfix as that service: an
    authenticated submission relay (587 STARTTLS, 465 implicit TLS) in the lab network whose
    outbound `smtp_tls_security_level` is `relay_security_level`; `host` is then ignored.
    """

    id: Id
    driver: Literal["relay"]
    description: Text = ""
    models: Text = Field(default="", description="the real sender configuration this profile is")
    host: str = Field(default="", max_length=253)
    port: Annotated[StrictInt, within(1, 65_535)] = 587
    security: RelaySecurity = RelaySecurity.STARTTLS
    verify_relay_certificate: StrictBool = True
    relay_ca_file: str | None = Field(default=None, max_length=1000)
    username_env: EnvName | None = None
    password_env: EnvName | None = None
    auth_mechanism: Literal["plain", "login"] = "plain"
    observe_timeout_seconds: Annotated[StrictFloat, within(0.01, 86_400)] = 120.0
    lab_relay: StrictBool = False
    relay_security_level: PostfixTlsLevel = PostfixTlsLevel.MAY

    @model_validator(mode="after")
    def _complete(self) -> RelaySenderProfile:
        """Require both credential names or neither, a host unless `lab_relay`, TLS with AUTH."""
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("set both username_env and password_env, or neither (no AUTH)")
        if not self.lab_relay and not self.host:
            raise ValueError("set `host` (the submission service), or `lab_relay: true`")
        if self.username_env is not None and self.security is RelaySecurity.NONE:
            raise ValueError(
                "security none with username_env and password_env would send the credentials "
                "in cleartext; use security: starttls or implicit, or drop the credentials"
            )
        return self


class RfcSenderProfile(SenderProfileBase):
    """The lab's oracle: delivers exactly as RFC 7672 (DANE) and RFC 8461 (MTA-STS) require."""

    driver: Literal["rfc"]


TlsExpectation = (
    TlsVersion | Literal["plaintext", "any", ">=TLSv1.0", ">=TLSv1.1", ">=TLSv1.2", ">=TLSv1.3"]
)
NOT_DELIVERED = "not-delivered"
ExpectedOutcome = Outcome | Literal["not-delivered"]
"""An expected outcome: one Outcome, or `not-delivered` (any of refused, deferred, fallback)."""


class SuitePolicy(enum.StrEnum):
    """A rule that derives every cell's expectation from its receiver (see harness.expectations)."""

    STRICT = "strict"


class CellExpectation(Frozen):
    """The expected outcome of one cell; `tls` narrows a delivery to a version, `>=`, plaintext."""

    outcome: ExpectedOutcome
    tls: TlsExpectation | None = None
    study: StrictBool = False
    note: Text = ""

    @field_validator("outcome", mode="before")
    @classmethod
    def _known_outcome(cls, value: Any) -> Any:
        """Reject an unknown outcome with one error that lists every allowed value."""
        if isinstance(value, str) and value in {*(o.value for o in Outcome), NOT_DELIVERED}:
            return value
        allowed = ", ".join(f"'{v}'" for v in [*(o.value for o in Outcome), NOT_DELIVERED])
        raise PydanticCustomError("enum", "Input should be one of {allowed}", {"allowed": allowed})


class Suite(Frozen):
    """A matrix of receivers x senders: per-cell expectations, a `policy` for the rest, or both."""

    id: Id
    title: Annotated[str, Field(max_length=TITLE_MAX_LENGTH)] = ""
    description: Text = ""
    receivers: tuple[Id, ...]
    senders: tuple[Id, ...]
    policy: SuitePolicy | None = None
    cells: dict[Id, dict[Id, CellExpectation]] = Field(default_factory=dict)
    headline: tuple[HeadlineQuery, ...] = ()

    @field_validator("cells")
    @classmethod
    def _shared(cls, cells: dict[str, dict[str, CellExpectation]]) -> Any:
        """Keep one object per distinct expectation (a generated suite repeats a few of them)."""
        seen: dict[CellExpectation, CellExpectation] = {}
        return {r: {s: seen.setdefault(e, e) for s, e in row.items()} for r, row in cells.items()}

    def expectation(self, receiver: str, sender: str) -> CellExpectation:
        """Return the expectation `cells` states for one cell (with a policy: LoadedSuite's)."""
        return self.cells[receiver][sender]

    @property
    def cell_ids(self) -> list[tuple[str, str]]:
        """Return (receiver, sender) pairs in row-major order."""
        return [(r, s) for r in self.receivers for s in self.senders]


def cell_id(receiver: str, sender: str) -> str:
    """Return the test id of a cell: `<receiver>-<sender>`."""
    return f"{receiver}-{sender}"


class Downgrade(Frozen):
    """A failed TLS attempt followed by the same message in plaintext: both sessions."""

    failed_session: str  # the session whose TLS attempt failed
    failure: str  # how it failed: the alert or error, or `closed-after-handshake`
    plaintext_session: str  # the session that delivered the message in plaintext


class DaneEvidence(Frozen):
    """The DANE policy a sender could have known: lookups as the lab validated them."""

    lookups: tuple[str, ...] = Field(description="MX, A and TLSA, each with its DNSSEC status")
    tlsa: tuple[str, ...] = Field(default=(), description="the secure TLSA records, if any")
    tlsa_security: str = Field(description="secure, insecure, bogus or failed")
    resolver: str = Field(default="", description="the validating resolver's answer (docker)")


class CellResult(Frozen):
    """The observed outcome of one cell, its expectation, verdict and evidence."""

    receiver: str
    sender: str
    outcome: Outcome
    expected: ExpectedOutcome
    expected_tls: str | None = None
    verdict: Verdict
    tls: TlsFacts | None = None
    received: str | None = None
    detail: str
    study: bool = False
    note: str = Field(default="", description="the suite's note on this cell, shown with it")
    risk: Risk | None = Field(
        default=None, description="set when the report is written, from the receiver's facts"
    )
    message_id: str = ""
    sender_report: str = ""
    sessions: tuple[SessionSummary, ...] = ()
    downgraded: bool = False  # delivered in plaintext after a failed TLS attempt
    downgrade: Downgrade | None = None
    seconds: float = 0.0
    evidence: tuple[EvidenceLink, ...] = Field(
        default=(), description="the cell's stored message, session records and portal copy"
    )
    dane: DaneEvidence | None = None  # receivers with a DANE subzone: what DNS said

    @property
    def id(self) -> str:
        """Return the cell id `<receiver>-<sender>`."""
        return cell_id(self.receiver, self.sender)


class RunReport(Frozen):
    """One run of a suite on a backend: the contract behind results.json."""

    suite: str
    title: str = ""
    backend: str
    run_id: str
    started: str
    finished: str
    receivers: tuple[str, ...]
    senders: tuple[SenderInfo, ...]
    receiver_info: tuple[ReceiverInfo, ...] = Field(
        default=(), description="the facts of each receiver row (id, certificate, TLS range)"
    )
    results: tuple[CellResult, ...]
    complete: bool = Field(
        default=True, description="every cell of the suite ran and nothing interrupted the run"
    )
    stopped_by: str = Field(default="", description="what interrupted the run, e.g. SIGTERM")
    not_run: tuple[CellRef, ...] = Field(default=(), description="the suite's cells not run")
    headline: tuple[HeadlineResult, ...] = Field(
        default=(), description="the suite's headline findings, computed from the cells"
    )
    provenance: Provenance | None = Field(
        default=None, description="lab version and commit, tool versions, host, suite file"
    )

    def receiver(self, receiver: str) -> ReceiverInfo | None:
        """Return the facts of one receiver row, or None when the run did not record them."""
        return _infos_by_id(self.receiver_info).get(receiver)

    def cell(self, receiver: str, sender: str) -> CellResult | None:
        """Return the result of one cell (the first, if repeated), or None when it did not run."""
        return _cells_by_id(self.results).get((receiver, sender))

    @property
    def study_reproduced(self) -> tuple[int, int]:
        """Return (passed, total) over the cells marked as study cells."""
        study = [r for r in self.results if r.study]
        return sum(r.verdict is Verdict.PASS for r in study), len(study)

    @property
    def study_planned(self) -> int:
        """Return how many study cells the suite has: those run plus those not run."""
        return sum(r.study for r in self.results) + sum(c.study for c in self.not_run)


_CELL_INDEXES: list[tuple[tuple[CellResult, ...], dict[tuple[str, str], CellResult]]] = []
CELL_INDEXES = 4  # results tuples whose index is kept (each holds its tuple: ids stay unique)


_INFO_INDEXES: list[tuple[tuple[ReceiverInfo, ...], dict[str, ReceiverInfo]]] = []


def _infos_by_id(infos: tuple[ReceiverInfo, ...]) -> dict[str, ReceiverInfo]:
    """Return the receiver facts by id, the first of repeats; built once per tuple."""
    for indexed, index in list(_INFO_INDEXES):
        if indexed is infos:
            return index
    by_id: dict[str, ReceiverInfo] = {}
    for info in infos:
        by_id.setdefault(info.id, info)
    _INFO_INDEXES.insert(0, (infos, by_id))
    del _INFO_INDEXES[CELL_INDEXES:]
    return by_id


def _cells_by_id(results: tuple[CellResult, ...]) -> dict[tuple[str, str], CellResult]:
    """Return the results by (receiver, sender), the first of repeats; built once per tuple."""
    for indexed, index in list(_CELL_INDEXES):
        if indexed is results:
            return index
    index = {}
    for result in results:
        index.setdefault((result.receiver, result.sender), result)
    _CELL_INDEXES.insert(0, (results, index))
    del _CELL_INDEXES[CELL_INDEXES:]
    return index


__all__ = [  # the report records are re-exported: `from harness.model import ReceiverInfo` works
    "ID_PATTERN",
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
