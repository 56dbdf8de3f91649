"""Exim's mainlog, read for one message: its id, each delivery attempt's status and TLS facts.

Every line Exim logs while receiving or delivering a message carries the message's Exim id:
`<=` its arrival (with `id=` the Message-ID), then per attempt `=>` delivered (with `X=` the TLS
version and cipher, `CV=` whether the certificate was verified), `==` deferred or `**` failed,
plus what the delivery said on the way (TLS errors, the switch to a clear connection).
"""

from __future__ import annotations

import dataclasses
import enum
import re

from harness.senders.base import SendAction, SendReport

LINE_RE = re.compile(
    r"^(?P<when>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{3})?) "
    r"(?P<mid>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}) (?P<text>.*)$"
)
STATUS_RE = re.compile(r"^(?P<flag>=>|==|\*\*) (?P<rcpt>\S+) (?P<fields>.*)$")
TLS_RE = re.compile(r"\bX=(?P<version>TLS1(?:\.[0-3])?|SSL3(?:\.0)?):(?P<cipher>\S+)")
CV_RE = re.compile(r"\bCV=(?P<cv>yes|no|dane)\b")
HOST_RE = re.compile(r"\bH=(?P<host>\S+ \[[^\]]+\](?::\d+)?)")
NOTE_LIMIT = 4
VERSIONS = {"TLS1": "TLSv1.0", "TLS1.0": "TLSv1.0", "TLS1.1": "TLSv1.1", "TLS1.2": "TLSv1.2",
            "TLS1.3": "TLSv1.3"}  # fmt: skip


class Flag(enum.StrEnum):
    """The delivery status flags of Exim's log."""

    DELIVERED = "=>"
    DEFERRED = "=="
    FAILED = "**"


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One delivery attempt of the message to the recipient, as its status line says."""

    flag: Flag
    fields: str
    line: int  # the status line's number in the log read

    @property
    def tls_version(self) -> str | None:
        """Return the TLS version it delivered over (`X=`), or None for a clear connection."""
        match = TLS_RE.search(self.fields)
        return VERSIONS.get(match["version"]) if match else None

    @property
    def verified(self) -> str | None:
        """Return Exim's `CV=` (yes, no or dane) for a TLS delivery, else None."""
        match = CV_RE.search(self.fields)
        return match["cv"] if match else None

    @property
    def host(self) -> str:
        """Return the host the attempt ended at (`H=`), or `?`."""
        match = HOST_RE.search(self.fields)
        return match["host"] if match else "?"


def message_lines(lines: list[str], mid: str) -> list[tuple[int, str]]:
    """Return (line number, text after the id) of every log line about Exim message `mid`."""
    found = []
    for number, line in enumerate(lines):
        match = LINE_RE.match(line)
        if match and match["mid"] == mid:
            found.append((number, match["text"]))
    return found


def exim_id(lines: list[str], message_id: str) -> str | None:
    """Return the Exim id of the message whose arrival (`<=`) logged this Message-ID."""
    wanted = f" id={message_id.strip('<>')}"
    for line in lines:
        match = LINE_RE.match(line)
        if (
            match
            and match["text"].startswith("<= ")
            and (match["text"].endswith(wanted) or f"{wanted} " in match["text"])
        ):
            return match["mid"]
    return None


def attempts(lines: list[str], mid: str, rcpt: str) -> list[Attempt]:
    """Return the delivery attempts of `mid` to `rcpt`, oldest first."""
    found = []
    for number, text in message_lines(lines, mid):
        match = STATUS_RE.match(text)
        if match and match["rcpt"].lower() == rcpt.lower():
            found.append(Attempt(Flag(match["flag"]), match["fields"], number))
    return found


def notes(lines: list[str], mid: str, attempt: Attempt, previous: Attempt | None) -> list[str]:
    """Return what Exim logged about `mid` during one attempt (after the previous one)."""
    start = previous.line if previous else -1
    return [
        text
        for number, text in message_lines(lines, mid)
        if start < number < attempt.line and not text.startswith("<= ")
    ]


def cell_log(lines: list[str], mid: str) -> str:
    """Return the log lines of one message, as logged."""
    return "".join(f"{lines[number]}\n" for number, _ in message_lines(lines, mid))


def describe(
    lines: list[str], mid: str, found: list[Attempt], retry_after: float | None, queue: str
) -> str:
    """Return Exim's account: each attempt's status, its fields and what it logged on the way."""
    parts = []
    for number, attempt in enumerate(found):
        label = "first attempt" if number == 0 else f"retry {retry_after or 0:.1f} s after queueing"
        said = notes(lines, mid, attempt, found[number - 1] if number else None)
        said = [n if len(n) <= 160 else n[:157] + "..." for n in said]
        told = f" [{' | '.join(said[:NOTE_LIMIT])}]" if said else ""
        parts.append(f"{label}: {attempt.flag.value} {attempt.fields}{told}")
    if queue:
        parts.append(queue)
    return f"Exim {mid}: " + "; ".join(parts)


def to_report(
    log: str,
    mid: str,
    rcpt: str,
    retry_after: float | None,
    queue: str,
    connections: tuple[tuple[str, int], ...],
) -> SendReport:
    """Map Exim's last status for the message to a SendReport."""
    lines = log.splitlines()
    found = attempts(lines, mid, rcpt)
    final = found[-1]
    reason = describe(lines, mid, found, retry_after, queue)
    if final.flag is Flag.DELIVERED:
        return SendReport(SendAction.DELIVERED, reason, connections, final.tls_version)
    if final.flag is Flag.FAILED:
        return SendReport(SendAction.REFUSED, reason, connections)
    return SendReport(SendAction.DEFERRED, reason, connections)
