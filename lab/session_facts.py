"""One SMTP session as the receiver records it (sessions.jsonl): one model, written and read."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lab.client_offer import ClientOffer
from lab.evidence_index import index_of
from lab.evidence_store import SESSIONS_FILE, read_sessions
from lab.spec import TlsVersion

__all__ = [
    "SCHEMA_PATH",
    "EndedBy",
    "Handshake",
    "SessionFacts",
    "SessionKey",
    "StoredMessage",
    "read_session_facts",
    "session_facts_where",
    "session_schema",
]

SCHEMA_PATH = Path(__file__).with_name("session.schema.json")


class Handshake(StrEnum):
    """How the session's TLS handshake went: none asked, completed, or failed."""

    NONE = "none"
    OK = "ok"
    FAILED = "failed"


class EndedBy(StrEnum):
    """How a session ended, as the receiver saw it."""

    QUIT = "quit"  # the client sent QUIT (answered 221)
    CLOSE_NOTIFY = "close_notify"  # the client closed TLS without QUIT
    TCP_CLOSE = "tcp-close"  # the client closed the connection (FIN) without QUIT
    RESET = "reset"  # the connection was reset (RST)
    CLOSED_AFTER_HANDSHAKE = "closed-after-handshake"  # TLS completed, closed before EHLO
    HANDSHAKE_FAILED = "handshake-failed"
    IDLE_TIMEOUT = "idle-timeout"  # the client sent nothing for the idle timeout
    COMMAND_TIMEOUT = "command-timeout"  # one command took longer than the command timeout
    SHUTDOWN = "shutdown"  # the receiver stopped
    SESSION_CAP = "session-cap"  # refused: the receiver's session cap was reached
    CLIENT_CAP = "client-cap"  # refused: this client's session cap was reached
    ERROR_LIMIT = "error-limit"  # closed after too many errors
    RECEIVER_ERROR = "receiver-error"  # the lab itself failed (421 4.3.0)


class StoredMessage(BaseModel):
    """One message of the session that the receiver stored and answered 250."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="ignore")

    queue_id: str
    message_id: str | None = None
    mail_from: str | None = None
    rcpt_tos: tuple[str, ...] = ()
    size: int
    eml: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}\.eml$")  # a name in the evidence folder
    received: str
    accepted: float


class SessionFacts(BaseModel):
    """The lab's own account of one session; TLS facts come from OpenSSL, never from the client."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="ignore")

    receiver: str
    session_id: str
    peer_ip: str
    peer_port: int
    started: float
    ended: float
    starttls_offered: bool
    ehlo: str | None = None  # the last HELO/EHLO name, as sent
    esmtp: bool = False
    starttls_asked: bool = False
    handshake: Handshake = Handshake.NONE
    version: TlsVersion | None = None
    cipher: str | None = None
    bits: int | None = None
    sni: str | None = None
    group: str | None = None  # key-exchange group (TLS 1.3; ECDHE before), IANA name
    signature_scheme: str | None = None  # how the receiver signed (TLS 1.2 and 1.3)
    server_key: str | None = None  # the receiver's key as Postfix names it
    resumed: bool | None = None
    alert: str | None = None  # the TLS alert the client sent, if any
    tls_error: str | None = None  # why the handshake failed, as OpenSSL says
    alert_sent: str | None = None  # the TLS alert the receiver sent, if any
    offered: ClientOffer | None = None  # what the client's ClientHello offered, if it sent one
    ended_by: EndedBy
    mx_host: str = ""  # the MX host name the session reached (a receiver may have several)
    store_error: str | None = None  # the evidence store failed to keep a message (errno: text)
    messages: tuple[StoredMessage, ...] = ()
    transcript: tuple[str, ...] = ()

    @property
    def peer(self) -> str:
        """Return `ip:port` of the client."""
        return f"{self.peer_ip}:{self.peer_port}"

    @property
    def tls_failure(self) -> str | None:
        """Return why the handshake failed (the client's alert, else the error), or None."""
        if self.handshake is not Handshake.FAILED:
            return None
        return self.alert or self.tls_error or "no alert"


def read_session_facts(directory: Path) -> Iterator[SessionFacts]:
    """Yield the valid session records of a receiver's evidence folder, in stored order."""
    for raw in read_sessions(directory):
        try:
            yield SessionFacts.model_validate(raw)
        except ValidationError:
            continue  # not a record this lab wrote (or a damaged one): never trusted as evidence


class SessionKey(NamedTuple):
    """What a session record is picked by without reading it whole: its peer, id and start."""

    peer_ip: str
    peer_port: int
    session_id: str
    started: float


def session_facts_where(directory: Path, keep: Callable[[SessionKey], bool]) -> list[SessionFacts]:
    """Return the valid session records whose key `keep` accepts, as read_session_facts would.

    The folder's sessions.jsonl is read incrementally (lab.evidence_index): each line is
    validated once per process, and only the records picked are parsed again.
    """
    path = directory / SESSIONS_FILE
    return index_of("session", path, _session_or_none, _session_key).where(keep)


def _session_or_none(raw: dict[str, Any]) -> SessionFacts | None:
    """Return one line's session record, or None when it is not a valid one."""
    try:
        return SessionFacts.model_validate(raw)
    except ValidationError:
        return None


def _session_key(record: SessionFacts) -> SessionKey:
    """Return the key a session record is picked by."""
    return SessionKey(record.peer_ip, record.peer_port, record.session_id, record.started)


def session_schema() -> dict[str, Any]:
    """Return the JSON schema of one sessions.jsonl line."""
    schema = SessionFacts.model_json_schema(mode="serialization")
    schema["$id"] = "https://sender-tls-lab.test/session.schema.json"
    return schema


def write_schema(path: Path = SCHEMA_PATH) -> None:
    """Write the committed schema file from the model."""
    path.write_text(json.dumps(session_schema(), indent=2, sort_keys=True) + "\n")
