"""What a receiver records about one SMTP session: peer, EHLO, TLS facts or failure, messages."""

from __future__ import annotations

import dataclasses
import logging
import ssl
import time
from typing import Any

from aiosmtpd.smtp import Envelope
from pydantic import ValidationError

from lab.client_hello import ClientOffer, parse_client_hello
from lab.message_record import MessageRecord
from lab.session_facts import EndedBy, Handshake, SessionFacts
from lab.spec import TlsVersion
from lab.tls_names import GROUPS, SIGNATURE_SCHEMES
from lab.tls_observe import HandshakeLog, handshake_log

log = logging.getLogger("lab.receiver")
TRANSCRIPT_LIMIT = 200
LINE_LIMIT = 300
ALERT_PREFIXES = ("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")
MESSAGE_FACTS = (
    "receiver", "session_id", "peer_ip", "peer_port", "ehlo", "esmtp",
    "handshake", "version", "cipher", "bits", "sni",
)  # fmt: skip


def describe_tls_error(error: BaseException | None) -> tuple[str | None, str]:
    """Return (TLS alert the peer sent, or None; a readable reason) for a failed handshake."""
    if isinstance(error, ssl.SSLError):
        reason = str(error.reason or error.strerror or error)
        for prefix in ALERT_PREFIXES:
            if reason.startswith(prefix):
                return reason.removeprefix(prefix).lower(), reason.lower()
        return None, reason.lower()
    if error is None or (isinstance(error, ConnectionError) and not str(error)):
        return None, "connection closed during the tls handshake"
    return None, f"{type(error).__name__}: {error}".lower()


@dataclasses.dataclass
class SessionRecord:
    """Mutable record of one session, serialised as one JSON line when the session ends."""

    receiver: str
    starttls_offered: bool
    mx_host: str = ""  # the MX host name the session reached (a receiver may have several)
    session_id: str = ""
    peer_ip: str = ""
    peer_port: int = 0
    started: float = 0.0
    ended: float = 0.0
    ehlo: str | None = None
    esmtp: bool = False
    starttls_asked: bool = False
    handshake: Handshake = Handshake.NONE
    version: str | None = None
    cipher: str | None = None
    bits: int | None = None
    sni: str | None = None
    group: str | None = None  # key-exchange group (TLS 1.3; ECDHE before), IANA name
    signature_scheme: str | None = None  # how the receiver signed (TLS 1.2 and 1.3)
    server_key: str | None = None  # the receiver's key as Postfix names it
    resumed: bool | None = None
    alert: str | None = None
    tls_error: str | None = None
    alert_sent: str | None = None
    offered: ClientOffer | None = None  # what the client's ClientHello offered
    ended_by: EndedBy | None = None
    store_error: str | None = None  # the evidence store failed to keep a message (errno: text)
    in_data: bool = False
    greeted_after_tls: bool = False  # HELO/EHLO came after the handshake
    seen: HandshakeLog | None = None  # OpenSSL's view of the handshake messages
    messages: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    transcript: list[str] = dataclasses.field(default_factory=list)

    def connected(self, peername: Any) -> None:
        """Note the peer address and the start time."""
        self.started = time.time()
        if isinstance(peername, tuple) and len(peername) >= 2:
            self.peer_ip, self.peer_port = str(peername[0]), int(peername[1])
        self.session_id = f"{self.receiver}-{self.peer_ip}-{self.peer_port}-{self.started:.6f}"

    def tls_established(self, ssl_object: Any, server_key: str | None = None) -> None:
        """Fill in version, cipher, bits, SNI, group and signature from a completed handshake."""
        self.handshake = Handshake.OK
        if ssl_object is None:
            return
        seen = self.seen = handshake_log(ssl_object)
        self.group = _name(GROUPS, seen.group)
        self.signature_scheme = _name(SIGNATURE_SCHEMES, seen.signature_scheme)
        self.server_key = server_key
        self.resumed = bool(ssl_object.session_reused)
        version = ssl_object.version()
        self.version = TlsVersion.from_openssl(version).value if version else None
        cipher = ssl_object.cipher()
        if cipher:
            self.cipher, self.bits = cipher[0], cipher[2]
        self.sni = getattr(ssl_object, "lab_sni", None)

    def tls_failed(self, described: tuple[str | None, str], ssl_object: Any = None) -> None:
        """Record a failed handshake with the peer's alert, if it sent one."""
        self.handshake = Handshake.FAILED
        self.alert, self.tls_error = described
        if ssl_object is not None:
            self.seen = handshake_log(ssl_object)

    def message_entry(
        self, queue_id: str, envelope: Envelope, content: bytes, eml: str, received: str
    ) -> dict[str, Any]:
        """Return the entry describing one accepted message and where it is stored."""
        return {
            "queue_id": queue_id,
            "message_id": _message_id(content),
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "size": len(content),
            "eml": eml,
            "received": received.removeprefix("Received: ").rstrip("\r\n"),
            "accepted": time.time(),
        }

    def message_record(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Return a message entry with this session's facts: one self-contained JSON line."""
        facts = {key: getattr(self, key) for key in MESSAGE_FACTS}
        record = {"kind": "message", **facts, **entry}
        MessageRecord.model_validate(record)  # raises unless every reader can read it back
        return record

    def add_message(self, entry: dict[str, Any]) -> None:
        """Add one durably stored message's entry to this session."""
        self.messages.append(entry)

    def log(self, direction: str, line: str) -> None:
        """Append one SMTP line to the transcript (bounded); note when message data starts."""
        if direction == "S" and line.startswith("354"):
            self.in_data = True
        if len(self.transcript) < TRANSCRIPT_LIMIT:
            text = line.rstrip("\r\n")
            self.transcript.append(f"{direction}: {text[:LINE_LIMIT]}")

    def finish(self) -> None:
        """Stamp the end time; take the alerts OpenSSL saw (one after the handshake too)."""
        self.ended = time.time()
        if self.seen is not None:
            self.alert_sent = _alert_name(self.seen.alert_sent)
            self.alert = self.alert or _alert_name(self.seen.alert_received)
            if self.seen.client_hello is not None:
                self.offered = parse_client_hello(self.seen.client_hello)

    def facts(self) -> SessionFacts:
        """Return the finished record as the model every reader reads."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return SessionFacts.model_validate(data)

    def as_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready data (one sessions.jsonl line); never lose it."""
        try:
            return self.facts().model_dump(mode="json")
        except ValidationError as error:  # a lab bug: keep the evidence, readers skip it
            log.error("session record %s does not validate: %s", self.session_id, error)
            data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
            data.pop("seen")
            return data


def _alert_name(code: int | None) -> str | None:
    """Return a TLS alert's name as OpenSSL's reason strings spell it: `protocol_version`."""
    if code is None:
        return None
    try:
        return ssl.AlertDescription(code).name.removeprefix("ALERT_DESCRIPTION_").lower()
    except ValueError:
        return f"alert_{code}"


def _name(names: dict[int, str], code: int | None) -> str | None:
    """Return the IANA name of a code point, `0x....` when unnamed, None when absent."""
    if code is None:
        return None
    return names.get(code, f"0x{code:04x}")


def _message_id(content: bytes) -> str | None:
    """Return the Message-ID header of raw message bytes, or None."""
    head = content.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for raw in head.splitlines():
        name, _, value = raw.partition(b":")
        if name.strip().lower() == b"message-id":
            return value.strip().decode("utf-8", "replace")
    return None
