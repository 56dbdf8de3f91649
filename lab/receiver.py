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
from lab.header_text import helo_text, recipient_text, stored_message
from lab.limits import (
    COMMAND_TIMEOUT,
    IDLE_TIMEOUT,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_ERRORS,
    TOO_MANY_RECIPIENTS,
    TOO_MANY_SESSIONS,
    Deadlines,
    ErrorCount,
    SessionRegistry,
    abort_later,
    log,
)
from lab.session_record import SessionRecord, describe_tls_error
from lab.spec import ReceiverSpec
from lab.tls_context import server_context, switch_on_sni

SERVER_SOFTWARE = "Sender TLS Lab"
QUEUE_ID_ATTEMPTS = 5
TIMEOUT_REPLIES = {"idle-timeout": IDLE_TIMEOUT, "command-timeout": COMMAND_TIMEOUT}


def build_tls_context(
    spec: ReceiverSpec, cert_path: Path, key_path: Path, no_sni: tuple[Path, Path] | None = None
) -> ssl.SSLContext:
    """Return a server context offering exactly the spec's TLS versions and ciphers.

    With a `no_sni` (cert, key) pair, that pair is what a client gets unless it names the MX
    host in SNI; only then does the handshake switch to the certificate at cert_path.
    """
    context = server_context(spec, cert_path, key_path)
    context.sni_callback = _remember_sni
    if no_sni is None:
        return context
    default = server_context(spec, *no_sni)
    default.sni_callback = switch_on_sni(spec.mx_host, context, _remember_sni)
    return default


def _remember_sni(ssl_object: Any, server_name: str | None, _context: ssl.SSLContext) -> None:
    """Attach the SNI the client sent to its SSL object, where the session record finds it."""
    ssl_object.lab_sni = server_name


def new_queue_id() -> str:
    """Return a Postfix-like queue id: 12 upper-case hex digits."""
    return secrets.token_hex(6).upper()


def received_header(
    record: SessionRecord, mx_host: str, queue_id: str, rcpt: str, when: float
) -> str:
    """Return a Received header in Postfix's format; client text in it is neutralised."""
    helo = helo_text(record.ehlo) if record.ehlo else "unknown"
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
    lines.append(f"\tfor <{recipient_text(rcpt)}>; {stamp} (UTC)")
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
        """Accept up to max_recipients in this receiver's domain (and the bounce mailbox) only."""
        if len(envelope.rcpt_tos) >= self.spec.max_recipients:
            return TOO_MANY_RECIPIENTS
        if not self.spec.accepts(address):
            return "550 5.7.1 Relay access denied: this lab receiver only accepts @" + (
                self.spec.domain
            )
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: LabSMTP, session: Session, envelope: Envelope) -> str:
        """Prepend the Received header; make the .eml and its record durable, then answer 250."""
        content = envelope.original_content or b""
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        server.deadlines.busy = True
        try:
            for _ in range(QUEUE_ID_ATTEMPTS):
                queue_id = new_queue_id()
                header = received_header(
                    server.record, self.spec.mx_host, queue_id, rcpt, time.time()
                )
                entry = server.record.message_entry(
                    queue_id, envelope, content, f"{queue_id}.eml", header
                )
                data = stored_message(header, content)
                record = server.record.message_record(entry)
                try:
                    await asyncio.to_thread(self.store.commit_message, queue_id, data, record)
                except FileExistsError:
                    continue  # queue id already used in this evidence folder: draw another
                server.record.add_message(entry)
                return f"250 2.0.0 Ok: queued as {queue_id}"
        finally:
            server.deadlines.busy = False
        return "451 4.3.0 Lab receiver error: no free queue id, try again"

    async def handle_exception(self, error: Exception) -> str:
        """Answer an unexpected server-side error with a temporary failure."""
        return "421 4.3.0 Lab receiver error: " + type(error).__name__


class LabSMTP(SMTP):
    """aiosmtpd's SMTP with a session record, session caps, an error limit and 421 on timeouts."""

    def __init__(
        self,
        spec: ReceiverSpec,
        store: EvidenceStore,
        sessions: SessionRegistry | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the protocol for one connection to `spec`; `sessions` tracks open ones."""
        super().__init__(
            LabHandler(spec, store),
            hostname=spec.mx_host,
            ident=f"ESMTP {SERVER_SOFTWARE}",
            data_size_limit=spec.max_message_bytes,
            timeout=spec.command_timeout_seconds,
            **kwargs,
        )
        self.spec = spec
        self.store = store
        self.record = SessionRecord(receiver=spec.id, starttls_offered=bool(self.tls_context))
        self.sessions = sessions if sessions is not None else SessionRegistry()
        self.deadlines = Deadlines(
            self.loop,
            spec.idle_timeout_seconds,
            spec.command_timeout_seconds,
            self._expire,
            self._line_waiting,
        )
        self.errors = ErrorCount(spec.max_errors, spec.max_junk_commands, spec.max_recipients)
        self._refused: str | None = None  # the session cap a new connection is over, if any
        self._record_written = False
        self._abort: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        """Name the session and how it ended, for logs."""
        return f"<LabSMTP {self.record.session_id} ended_by={self.record.ended_by}>"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Start the record on connect; fill in TLS facts when STARTTLS completes."""
        upgraded = self._original_transport is not None
        if not upgraded:
            client = str((transport.get_extra_info("peername") or ("",))[0])
            spec = self.spec
            self._refused = self.sessions.open(
                self, spec.id, client, spec.max_sessions, spec.max_sessions_per_client
            )
        super().connection_made(transport)
        if upgraded:
            self.record.tls_established(transport.get_extra_info("ssl_object"))
        else:
            self.record.connected(transport.get_extra_info("peername"))
            reader = self._reader
            reader.readuntil = _logging_reader(reader.readuntil, self.record)  # type: ignore[method-assign]
            reader.readuntil = self._counting_reader(reader.readuntil)  # type: ignore[method-assign]

    def data_received(self, data: bytes) -> None:
        """Note client activity for the idle deadline, then buffer the bytes as usual."""
        self.deadlines.activity()
        super().data_received(data)

    def connection_lost(self, error: Exception | None) -> None:
        """Write the session record once, however the connection ended; free its place."""
        self.deadlines.cancel()
        if self._abort is not None:
            self._abort.cancel()
        self.sessions.close(self)
        if self.record.ended_by is None:
            self.record.ended_by = "connection-closed"
        self._write_record()
        super().connection_lost(error)

    def close_connection(self) -> None:
        """Close the connection because the receiver shuts down (silently, as before)."""
        self.end_session(None, "shutdown")

    def end_session(self, reply: str | None, reason: str) -> None:
        """Send a last reply (not into a TLS handshake), close, and abort if the close stalls."""
        transport = self.transport
        if transport is None or self._abort is not None:
            return
        self.record.ended_by = self.record.ended_by or reason
        handshaking = self._tls_protocol is not None and self.record.handshake == "none"
        if reply is not None and not handshaking:
            self.record.log("S", reply)
            transport.write(reply.encode() + b"\r\n")  # type: ignore[attr-defined]
        transport.close()
        self._abort = abort_later(self.loop, transport)

    def _expire(self, reason: str) -> None:
        """End the session with 421 because the idle or per-command deadline passed."""
        self.end_session(TIMEOUT_REPLIES[reason].format(host=self.hostname), reason)

    async def handle_exception(self, error: Exception) -> str:
        """Log an unexpected error and answer 421; the session then closes as 421 promises."""
        status: str = await super().handle_exception(error)
        if isinstance(error, TLSSetupException):
            return status  # recorded by smtp_STARTTLS; aiosmtpd closes without replying
        log.error("%s: session %s failed: %r", self.spec.id, self.record.session_id, error)
        if status.startswith("421"):
            self.record.ended_by = "receiver-error"
            self.loop.call_soon(self.end_session, None, "receiver-error")  # after the 421 is sent
        return status

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Parse a MAIL/RCPT path; any parser failure means a malformed address (553)."""
        try:
            address: tuple[str | None, str | None] = super()._getaddr(arg)
        except Exception:  # the email parser raises more than HeaderParseError on odd input
            return None, None
        return address

    def _line_waiting(self) -> bool:
        """Return True when a complete line the client sent waits to be read (not mid-STARTTLS)."""
        if self._tls_protocol is not None and self.record.handshake == "none":
            return False  # plaintext sent with STARTTLS is discarded, never read
        return b"\n" in getattr(self._reader, "_buffer", b"")

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Restart the deadlines; aiosmtpd calls this on connect, TLS upgrade and each command."""
        self._timeout_handle = self.deadlines.command_started()

    async def _handle_client(self) -> None:
        """Serve the session, or answer 421 and close when it is over a session cap."""
        if self._refused == "client-cap":
            ip = self.record.peer_ip
            self.end_session(TOO_MANY_CONNECTIONS.format(host=self.hostname, ip=ip), "client-cap")
            return
        if self._refused is not None:
            self.end_session(TOO_MANY_SESSIONS, self._refused)
            return
        await super()._handle_client()

    def _counting_reader(self, readuntil: Any) -> Any:
        """Wrap the command reader: count junk commands; past the error limit, 421 and close."""

        async def readuntil_counted(separator: bytes = b"\n") -> bytes:
            reading_command = not self.record.in_data
            if reading_command and self.errors.exceeded:
                if self.transport is not None and not self.transport.is_closing():
                    self.end_session(TOO_MANY_ERRORS.format(host=self.hostname), "error-limit")
                raise asyncio.CancelledError  # like push once closing: nothing more is served
            line: bytes = await readuntil(separator)
            if reading_command:
                self.errors.command(line.split(b" ", 1)[0].strip().upper().decode("latin-1"))
            return line

        return readuntil_counted

    def _set_post_data_state(self) -> None:
        """Start a new transaction (after DATA, RSET, HELO/EHLO or connect) as aiosmtpd does."""
        super()._set_post_data_state()  # type: ignore[no-untyped-call]
        self.errors.new_transaction()

    async def push(self, status: Any) -> None:
        """Send a reply (control characters masked) and log it; once closing, serve nothing more."""
        if self.transport is None or self.transport.is_closing():
            raise asyncio.CancelledError  # like connection_lost: buffered commands stay unserved
        text = status if isinstance(status, str) else status.decode("ascii", "replace")
        text = "".join(c if " " <= c <= "~" else "?" for c in text)
        self.deadlines.activity()
        self.record.log("S", text)
        self.errors.reply(text)
        await super().push(text)

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
        if self._tls_protocol is not None:
            await self.push("554 5.5.1 Error: TLS already active")
            return
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as error:
            self._handshake_failed(describe_tls_error(error.__cause__))
            raise
        if self._tls_protocol is not None and self.record.handshake != "ok":
            # asyncio reports a handshake we cut short (a timeout, a shutdown) as a success
            why = self.record.ended_by or "closed"
            self._handshake_failed((None, f"connection closed during the tls handshake ({why})"))
            raise TLSSetupException("the TLS handshake did not complete")

    def _handshake_failed(self, described: tuple[str | None, str]) -> None:
        """Record a failed handshake with the peer's SNI and alert, if any."""
        ssl_object = getattr(self._tls_protocol, "_sslobj", None)
        self.record.sni = getattr(ssl_object, "lab_sni", None)
        self.record.tls_failed(described)
        self.record.ended_by = self.record.ended_by or "handshake-failed"

    async def smtp_QUIT(self, arg: str) -> None:
        """Free the session's place, make its record durable, then answer 221."""
        if not arg:
            self.record.ended_by = "quit"
            self.sessions.close(self)
            pending = self._write_record()
            if pending is not None:
                # a client that closes right after QUIT cancels this task; the write must not be
                await asyncio.shield(pending)
        await super().smtp_QUIT(arg)

    def _write_record(self) -> asyncio.Future[None] | None:
        """Append this session's record to the store once, off the event loop."""
        if self._record_written:
            return None
        self._record_written = True
        self.record.finish()
        data = self.record.as_dict()
        return self.sessions.write(self.loop, lambda: self.store.append_session(data))


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
