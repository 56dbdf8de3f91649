"""The scoreboard's records: receiver rows by family, sender columns by software, versions."""

from __future__ import annotations

import enum

from pydantic import Field

from harness.model import Outcome, TlsFacts, Verdict, cell_id
from harness.report_model import CellRef, EvidenceLink, Frozen, ReceiverInfo, Risk, SessionSummary

SCHEMA_ID = "sender-tls-lab/scoreboard/v1"


class Family(enum.StrEnum):
    """The family of a receiver state: the row group it is shown in, in this order."""

    TLS_VERSION = "tls-version"
    CERTIFICATE = "certificate"
    CIPHER = "cipher"
    DOWNGRADE = "downgrade"
    MX_RETRY = "mx-retry"
    MTA_STS = "mta-sts"
    DANE = "dane"

    @property
    def heading(self) -> str:
        """Return the family's name as the page shows it."""
        return FAMILY_TITLES[self]


FAMILY_TITLES = {
    Family.TLS_VERSION: "TLS version",
    Family.CERTIFICATE: "Certificate",
    Family.CIPHER: "Cipher",
    Family.DOWNGRADE: "Downgrade (a man in the middle)",
    Family.MX_RETRY: "MX and retries",
    Family.MTA_STS: "MTA-STS",
    Family.DANE: "DANE",
}


class BoardReceiver(Frozen):
    """One receiver row: its family, why it is unsafe to deliver to (None: safe) and its facts."""

    id: str
    family: Family
    unsafe: str | None = Field(description="why a strict sender must not deliver; null: safe")
    info: ReceiverInfo


class BoardSender(Frozen):
    """One sender column: its driver, the software group it is shown under, its one-line score."""

    id: str
    driver: str
    software: str = Field(description="the column group: Postfix, Exim, policy models, ...")
    description: str = ""
    models: str = ""
    score: str = Field(default="", description="the column's one-line score")


class SoftwareVersion(Frozen):
    """A version read from a running sender: what, which version, where and by which command."""

    software: str
    version: str
    sender: str = Field(description="the sender column whose container or driver reported it")
    command: str


class BoardCell(Frozen):
    """One observed cell: outcome, TLS, risk, and the stated expectation when a suite has one."""

    receiver: str
    sender: str
    outcome: Outcome
    tls: TlsFacts | None = None
    risk: Risk
    words: str = Field(default="", description="what the delivery means, as report.html says it")
    downgraded: bool = Field(
        description="delivered in plaintext after a failed TLS handshake (with the receiver, or "
        "broken by a man in the middle in front of it)"
    )
    expected: str | None = Field(description="the stated expectation as a label; null: none")
    expected_from: str | None = Field(description="the suite stating it; null: observed only")
    verdict: Verdict | None = Field(description="observed against the stated expectation")
    note: str = ""
    received: str | None = None
    detail: str = ""
    sender_report: str = ""
    message_id: str = ""
    sessions: tuple[SessionSummary, ...] = ()
    sessions_text: str = Field(default="", description="the receiver's sessions in one line")
    evidence: tuple[EvidenceLink, ...] = ()
    sender_log: str | None = Field(default=None, description="the sender's own log of the cell")
    seconds: float = 0.0

    @property
    def id(self) -> str:
        """Return the cell id `<receiver>-<sender>`."""
        return cell_id(self.receiver, self.sender)


class FamilyTiming(Frozen):
    """The time a family's cells took: their wall span and the sum of their cells' seconds."""

    family: Family
    cells: int
    wall_seconds: float
    cell_seconds: float


class Scoreboard(Frozen):
    """Every receiver state x every real-sender profile and policy model, in one run."""

    run_id: str
    backend: str
    started: str
    finished: str
    complete: bool = Field(description="every planned cell ran and nothing interrupted the run")
    stopped_by: str = ""
    selection: str = Field(default="", description="the subset asked for; empty: the whole board")
    lab_version: str = ""
    lab_commit: str = ""
    receivers: tuple[BoardReceiver, ...]
    senders: tuple[BoardSender, ...]
    cells: tuple[BoardCell, ...]
    not_run: tuple[CellRef, ...] = ()
    versions: tuple[SoftwareVersion, ...] = ()
    wall_seconds: float = Field(default=0.0, description="the whole run, lab start to lab stop")
    start_seconds: float = Field(default=0.0, description="certificates, images, receivers up")
    cells_seconds: float = Field(default=0.0, description="from the first cell to the last")
    families: tuple[FamilyTiming, ...] = ()

    def cell(self, receiver: str, sender: str) -> BoardCell | None:
        """Return one cell, or None when it did not run."""
        return next((c for c in self.cells if c.receiver == receiver and c.sender == sender), None)

    def receiver(self, receiver: str) -> BoardReceiver | None:
        """Return one receiver row, or None."""
        return next((r for r in self.receivers if r.id == receiver), None)


__all__ = [
    "SCHEMA_ID",
    "BoardCell",
    "BoardReceiver",
    "BoardSender",
    "Family",
    "FamilyTiming",
    "Scoreboard",
    "SoftwareVersion",
]
