"""One accepted message as the receiver records it (messages.jsonl): one model, written and read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lab.evidence_index import indexed_records
from lab.evidence_store import MESSAGES_FILE
from lab.spec import TlsVersion

__all__ = ["MessageRecord", "read_message_records"]


class MessageRecord(BaseModel):
    """The lab's own account of one message it answered 250 to, and of the session it came in."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["message"] = "message"
    receiver: str
    session_id: str
    peer_ip: str
    peer_port: int
    ehlo: str | None = None
    esmtp: bool = False
    handshake: str
    version: TlsVersion | None = None
    cipher: str | None = None
    bits: int | None = None
    sni: str | None = None
    queue_id: str
    message_id: str | None = None
    mail_from: str | None = None
    rcpt_tos: tuple[str, ...] = ()
    size: int
    eml: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}\.eml$")  # a name in the evidence folder
    received: str  # the Received header value the lab wrote, without `Received: ` and CRLF
    accepted: float


def read_message_records(directory: Path) -> Iterator[MessageRecord]:
    """Yield the valid per-message records of a receiver's evidence folder, in stored order.

    Each line is parsed once per process (lab.evidence_index); later reads parse only appends.
    """
    return iter(indexed_records("message", directory / MESSAGES_FILE, _message_or_none))


def _message_or_none(raw: dict[str, Any]) -> MessageRecord | None:
    """Return one line's message record, or None when it is not a valid one."""
    try:
        return MessageRecord.model_validate(raw)
    except ValidationError:
        return None  # not a record this lab wrote (or a damaged one): never trusted as evidence
