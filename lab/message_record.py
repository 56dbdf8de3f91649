"""One accepted message as the receiver records it (messages.jsonl): one model, written and read."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lab.evidence_index import LineIndex, index_of
from lab.evidence_store import MESSAGES_FILE, read_messages
from lab.spec import TlsVersion

__all__ = [
    "MessageKey",
    "MessageRecord",
    "message_keys",
    "message_records_where",
    "read_message_records",
]


class MessageRecord(BaseModel):
    """The lab's own account of one message it answered 250 to, and of the session it came in."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="ignore")

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
    """Yield the valid per-message records of a receiver's evidence folder, in stored order."""
    for raw in read_messages(directory):
        try:
            yield MessageRecord.model_validate(raw)
        except ValidationError:
            continue  # not a record this lab wrote (or a damaged one): never trusted as evidence


class MessageKey(NamedTuple):
    """What a message record is picked by without reading it whole."""

    message_id: str | None
    rcpt_tos: tuple[str, ...]
    eml: str
    session_id: str


def message_records_where(
    directory: Path, keep: Callable[[MessageKey], bool]
) -> list[MessageRecord]:
    """Return the valid message records whose key `keep` accepts, as read_message_records would.

    The folder's messages.jsonl is read incrementally (lab.evidence_index): each line is
    validated once per process, and only the records picked are parsed again.
    """
    return _index(directory).where(keep)


def message_keys(directory: Path) -> list[MessageKey]:
    """Return the key of every valid message record of a folder, in stored order."""
    return _index(directory).keys()


def _index(directory: Path) -> LineIndex[MessageKey, MessageRecord]:
    """Return this process's index of a folder's messages.jsonl."""
    return index_of("message", directory / MESSAGES_FILE, _message_or_none, _message_key)


def _message_or_none(raw: dict[str, Any]) -> MessageRecord | None:
    """Return one line's message record, or None when it is not a valid one."""
    try:
        return MessageRecord.model_validate(raw)
    except ValidationError:
        return None


def _message_key(record: MessageRecord) -> MessageKey:
    """Return the key a message record is picked by."""
    return MessageKey(record.message_id, record.rcpt_tos, record.eml, record.session_id)
