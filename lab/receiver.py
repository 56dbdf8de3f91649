"""The receiving MTA: aiosmtpd pinned to one TLS state, writing a Postfix-format Received header."""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

from lab.evidence_store import EvidenceStore
from lab.session_record import SessionRecord, describe_tls_error
from lab.spec import ReceiverSpec

SERVER_SOFTWARE = "Sender TLS Lab"
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"


def build_tls_context(spec: ReceiverSpec, cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Return a server context offering exactly the spec's TLS versions with its certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = spec.tls_min.ssl_version
    context.maximum_version = spec.tls_max.ssl_version
    if spec.tls_min.is_legacy:
        context.set_ciphers(LEGACY_CIPHERS)
    context.load_cert_chain(cert_path, key_path)
    context.sni_callback = _remember_sni
    return context


def _remember_sni(ssl_object: Any, server_name: str | None, _context: ssl.SSLContext) -> None:
    """Attach the SNI the client sent to its SSL object, where the session record finds it."""
    ssl_object.lab_sni = server_name


def new_queue_id() -> str:
    """Return a Postfix-like queue id: 12 upper-case hex digits."""
    return secrets.token_hex(6).upper()


def received_header(
    record: SessionRecord, mx_host: str, queue_id: str, rcpt: str, when: float
) -> str:
    """Return a Received header in Postfix's exact format for one accepted message."""
    helo = record.ehlo or "unknown"
    lines = [f"Received: from {helo} (unknown [{record.peer_ip}])"]
    if record.version is not None:
        openssl_name = "TLSv1" if record.version == "TLSv1.0" else record.version
        bits = record.bits or 0
        lines.append(f"\t(using {openssl_name} with cipher {record.cipher} ({bits}/{bits} bits))")
        lines.append("\t(No client certificate requested)")
        protocol = "ESMTPS"
    else:
        protocol = "ESMTP" if record.esmtp else "SMTP"
    lines.append(f"\tby {mx_host} ({SERVER_SOFTWARE}) with {protocol} id {queue_id}")
    stamp = format_datetime(datetime.fromtimestamp(when, UTC))
    lines.append(f"\tfor <{rcpt}>; {stamp} (UTC)")
    return "\r\n".join(lines) + "\r\n"


class LabHandler:
    """aiosmtpd hooks: accept only the lab's domain, store each message durably before 250."""

    def __init__(self, spec: ReceiverSpec, store: EvidenceStore) -> None:
        """Bind the handler to one receiver state and its evidence store."""
        self.spec = spec
        self.store = store

    async def handle_EHLO(
        self,
        server: LabSMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        """Answer EHLO like an MX on port 25: no AUTH offered (the lab accepts none)."""
        session.host_name = hostname
        return [line for line in responses if not line[4:].upper().startswith("AUTH")]

    async def handle_RCPT(
        self, server: LabSMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        """Accept recipients in this receiver's domain only, so the lab is never a relay."""
        domain = address.rpartition("@")[2].lower()
        if domain != self.spec.domain:
            return "550 5.7.1 Relay access denied: this lab receiver only accepts @" + (
                self.spec.domain
            )
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: LabSMTP, session: Session, envelope: Envelope) -> str:
        """Prepend the Received header, store the message durably, then acknowledge it."""
        content = envelope.original_content or b""
        queue_id = new_queue_id()
        now = time.time()
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        header = received_header(server.record, self.spec.mx_host, queue_id, rcpt, now)
        path = await asyncio.to_thread(
            self.store.store_message, queue_id, header.encode() + content
        )
        server.record.add_message(queue_id, envelope, content, path.name, header)
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        """Answer an unexpected server-side error with a temporary failure."""
        return "421 4.3.0 Lab receiver error: " + type(error).__name__


class LabSMTP(SMTP):
    """aiosmtpd's SMTP with a per-connection session record (EHLO, TLS facts, transcript)."""

    def __init__(
        self,
        spec: ReceiverSpec,
        store: EvidenceStore,
        live: set[LabSMTP] | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the protocol for one connection to `spec`; `live` tracks open connections."""
        super().__init__(
            LabHandler(spec, store),
            hostname=spec.mx_host,
            ident=f"ESMTP {SERVER_SOFTWARE}",
            data_size_limit=spec.max_message_bytes,
            **kwargs,
        )
        self.spec = spec
        self.store = store
        self.record = SessionRecord(receiver=spec.id, starttls_offered=bool(self.tls_context))
        self._record_written = False
        self._live = live if live is not None else set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the record on connect; fill in TLS facts when STARTTLS completes."""
        upgraded = self._original_transport is not None
        super().connection_made(transport)
        if upgraded:
            self.record.tls_established(transport.get_extra_info("ssl_object"))
        else:
            self._live.add(self)
            self.record.connected(transport.get_extra_info("peername"))
            reader = self._reader
            reader.readuntil = _logging_reader(reader.readuntil, self.record)  # type: ignore[method-assign]

    def connection_lost(self, error: Exception | None) -> None:
        """Write the session record once, however the connection ended."""
        self._live.discard(self)
        self._write_record()
        super().connection_lost(error)

    def close_connection(self) -> None:
        """Close this connection (used when the receiver shuts down)."""
        if self.transport is not None:
            self.transport.close()

    async def push(self, status: Any) -> None:
        """Send a reply and log it in the transcript."""
        self.record.log("S", status if isinstance(status, str) else status.decode())
        await super().push(status)

    async def smtp_EHLO(self, hostname: str) -> None:
        """Record the EHLO name, then answer as aiosmtpd does."""
        self.record.ehlo = hostname
        self.record.esmtp = True
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        """Record the HELO name, then answer as aiosmtpd does."""
        self.record.ehlo = hostname
        await super().smtp_HELO(hostname)

    async def smtp_STARTTLS(self, arg: str) -> None:
        """Run the TLS handshake and record its result, including the peer's alert on failure."""
        self.record.starttls_asked = True
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as error:
            ssl_object = getattr(self._tls_protocol, "_sslobj", None)
            self.record.sni = getattr(ssl_object, "lab_sni", None)
            self.record.tls_failed(describe_tls_error(error.__cause__))
            raise

    async def smtp_QUIT(self, arg: str) -> None:
        """Make the session record durable before the client sees 221."""
        if not arg:
            self._write_record()
        await super().smtp_QUIT(arg)

    def _write_record(self) -> None:
        """Append this session's record to the store exactly once."""
        if self._record_written:
            return
        self._record_written = True
        self.record.finish()
        self.store.append_session(self.record.as_dict())


def _logging_reader(readuntil: Any, record: SessionRecord) -> Any:
    """Wrap a StreamReader.readuntil so command lines (not message bodies) enter the transcript."""

    async def readuntil_logged(separator: bytes = b"\n") -> bytes:
        line: bytes = await readuntil(separator)
        if not record.in_data:
            record.log("C", line.decode("utf-8", "replace"))
        elif line in (b".\r\n", b".\n"):
            record.in_data = False
        return line

    return readuntil_logged
