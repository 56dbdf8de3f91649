"""The harness's vocabulary as frozen models: senders, suites, outcomes, verdicts, results."""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from lab.spec import TlsVersion

ID_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
ID_MAX_LENGTH = 64
Id = Annotated[str, Field(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH)]


class Outcome(enum.StrEnum):
    """What happened to a message, as observed."""

    DELIVERED = "delivered"
    REFUSED = "refused"
    DEFERRED = "deferred"
    FALLBACK = "fallback"
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

    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsFacts(Frozen):
    """The TLS facts of one hop: normalised protocol version, cipher as written, key bits."""

    version: TlsVersion
    cipher: str
    bits: int | None = None


class ReferenceSenderProfile(Frozen):
    """A policy model driven by the built-in reference sender; `id` is the YAML file's stem."""

    id: Id
    driver: Literal["reference"] = "reference"
    description: str = ""
    models: str = Field(default="", description="the real sender this profile is a policy model of")
    tls: TlsMode = TlsMode.OPPORTUNISTIC
    min_version: TlsVersion = TlsVersion.TLS10
    verify: bool = False
    on_policy_unmet: PolicyAction = PolicyAction.PLAINTEXT


SenderProfile = ReferenceSenderProfile

TlsExpectation = TlsVersion | Literal["plaintext", "any"]


class CellExpectation(Frozen):
    """The expected outcome of one cell; `tls` narrows a delivery to a version or plaintext."""

    outcome: Outcome
    tls: TlsExpectation | None = None
    study: bool = False
    note: str = ""


class Suite(Frozen):
    """A matrix of receivers x senders with the expected outcome of every cell."""

    id: Id
    title: str = ""
    description: str = ""
    receivers: tuple[Id, ...]
    senders: tuple[Id, ...]
    cells: dict[Id, dict[Id, CellExpectation]]

    def expectation(self, receiver: str, sender: str) -> CellExpectation:
        """Return the expectation of one cell."""
        return self.cells[receiver][sender]

    @property
    def cell_ids(self) -> list[tuple[str, str]]:
        """Return (receiver, sender) pairs in row-major order."""
        return [(r, s) for r in self.receivers for s in self.senders]


def cell_id(receiver: str, sender: str) -> str:
    """Return the test id of a cell: `<receiver>-<sender>`."""
    return f"{receiver}-{sender}"


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


class CellResult(Frozen):
    """The observed outcome of one cell, its expectation, verdict and evidence."""

    receiver: str
    sender: str
    outcome: Outcome
    expected: Outcome
    expected_tls: str | None = None
    verdict: Verdict
    tls: TlsFacts | None = None
    received: str | None = None
    detail: str
    study: bool = False
    message_id: str = ""
    sender_report: str = ""
    sessions: tuple[SessionSummary, ...] = ()
    seconds: float = 0.0

    @property
    def id(self) -> str:
        """Return the cell id `<receiver>-<sender>`."""
        return cell_id(self.receiver, self.sender)


class SenderInfo(Frozen):
    """How a report describes one sender column."""

    id: str
    driver: str
    description: str = ""
    models: str = ""


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
    results: tuple[CellResult, ...]

    def cell(self, receiver: str, sender: str) -> CellResult | None:
        """Return the result of one cell, or None when it did not run."""
        for result in self.results:
            if result.receiver == receiver and result.sender == sender:
                return result
        return None

    @property
    def study_reproduced(self) -> tuple[int, int]:
        """Return (passed, total) over the cells marked as study cells."""
        study = [r for r in self.results if r.study]
        return sum(r.verdict is Verdict.PASS for r in study), len(study)
