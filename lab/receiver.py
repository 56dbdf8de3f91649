"""The receiving MTA: aiosmtpd pinned to one TLS state, writing a Postfix-format Received header."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any

from aiosmtpd.smtp import Envelope, Session, TLSSetupException

from lab.evidence_store import EvidenceStore, error_name
from lab.greylist import GREYLISTED, GreylistTracker
from lab.header_text import stored_message
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
from lab.received_header import SERVER_SOFTWARE
from lab.received_header import received_header as received_header  # also for old imports
from lab.session_facts import EndedBy, Handshake
from lab.session_record import SessionRecord, describe_tls_error
from lab.smtp_replies import OneWriteSMTP
from lab.spec import ReceiverSpec
from lab.tls_context import build_tls_context as build_tls_context  # lab.serve's import
from lab.tls_transport import LabSSLProtocol

QUEUE_ID_ATTEMPTS = 5
STORE_FAILED_REPLY = "451 4.3.0 Lab evidence store failed, message not accepted; try again later"
TIMEOUT_REPLIES = {EndedBy.IDLE_TIMEOUT: IDLE_TIMEOUT, EndedBy.COMMAND_TIMEOUT: COMMAND_TIMEOUT}
AUTH_NOT_ENABLED = "503 5.5.1 Error: authentication not enabled"  # Postfix without SASL


def new_queue_id() -> str:
    """Return a Postfix-like queue id: 12 upper-case hex digits."""
    return secrets.token_hex(6).upper()


class LabHandler:
    """aiosmtpd hooks: accept only the lab's domain, store each message durably before 250."""

    def __init__(
        self,
        spec: ReceiverSpec,
        store: EvidenceStore,
        mx_host: str | None = None,
        greylist: GreylistTracker | None = None,
    ) -> None:
        """Bind the handler to one receiver state, the MX host it serves and its evidence store."""
        self.spec = spec
        self.store = store
        self.mx_host = mx_host or spec.mx_host
        self.greylist = greylist

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
        if self.greylist is not None and self.greylist.defers(
            server.record.peer_ip, envelope.mail_from or "", address
        ):
            return GREYLISTED
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
                header = received_header(server.record, self.mx_host, queue_id, rcpt, time.time())
                entry = server.record.message_entry(
                    queue_id, envelope, content, f"{queue_id}.eml", header
                )
                data = stored_message(header, content)
                record = server.record.message_record(entry)
                try:
                    await asyncio.to_thread(self.store.commit_message, queue_id, data, record)
                except FileExistsError:
                    continue  # queue id already used in this evidence folder: draw another
                except OSError as error:
                    return self._store_failed(server, error)
                server.record.add_message(entry)
                return f"250 2.0.0 Ok: queued as {queue_id}"
        finally:
            server.deadlines.busy = False
        return "451 4.3.0 Lab receiver error: no free queue id, try again"

    def _store_failed(self, server: LabSMTP, error: OSError) -> str:
        """Note on the session that the evidence store failed; answer the lab's own 451."""
        reason = error_name(error)
        server.record.store_error = reason
        log.error("%s: evidence store failed: %s", self.spec.id, reason)
        return f"{STORE_FAILED_REPLY} ({reason.split(':')[0]})"

    async def handle_exception(self, error: Exception) -> str:
        """Answer an unexpected server-side error with a temporary failure."""
        return "421 4.3.0 Lab receiver error: " + type(error).__name__


class LabSMTP(OneWriteSMTP):
    """aiosmtpd's SMTP with a session record, session caps, an error limit and 421 on timeouts."""

    def __init__(
        self,
        spec: ReceiverSpec,
        store: EvidenceStore,
        sessions: SessionRegistry | None = None,
        mx_host: str | None = None,
        greylist: GreylistTracker | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the protocol for one connection to `spec`'s MX `mx_host` (default: its own)."""
        mx_host = mx_host or spec.mx_host
        super().__init__(
            LabHandler(spec, store, mx_host, greylist),
            hostname=mx_host,
            ident=f"ESMTP {SERVER_SOFTWARE}",
            data_size_limit=spec.max_message_bytes,
            timeout=spec.command_timeout_seconds,
            **kwargs,
        )
        self.spec = spec
        self.store = store
        self.record = SessionRecord(
            receiver=spec.id, starttls_offered=bool(self.tls_context), mx_host=mx_host
        )
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
            server_key = getattr(self.tls_context, "server_key", None)
            self.record.tls_established(transport.get_extra_info("ssl_object"), server_key)
        else:
            self.record.connected(transport.get_extra_info("peername"))
            reader = self._reader
            reader.readuntil = self._counting_reader(reader.readuntil)  # type: ignore[method-assign]

    def data_received(self, data: bytes) -> None:
        """Note client activity for the idle deadline, then buffer the bytes as usual."""
        self.deadlines.activity()
        super().data_received(data)

    def eof_received(self) -> bool | None:
        """End the client's input (FIN or close_notify); commands sent before it are served."""
        # aiosmtpd cancels the session here, dropping a QUIT that came with the close
        keep_open = asyncio.StreamReaderProtocol.eof_received(self)
        # over TLS a half-close is impossible (asyncio warns when asked): the TLS layer decides
        return False if self._tls_protocol is not None else keep_open

    def connection_lost(self, error: Exception | None) -> None:
        """Write the session record once, however the connection ended; free its place."""
        self.deadlines.cancel()
        if self._abort is not None:
            self._abort.cancel()
        self.sessions.close(self)
        if self.record.ended_by is None:
            self.record.ended_by = self._how_peer_left(isinstance(error, ConnectionResetError))
        self._write_record()
        super().connection_lost(error)

    def _how_peer_left(self, reset: bool = False) -> EndedBy:
        """Return how the client closed: before EHLO after TLS, close_notify, RST or FIN."""
        if self.record.handshake is Handshake.OK and not self.record.greeted_after_tls:
            return EndedBy.CLOSED_AFTER_HANDSHAKE  # e.g. the client rejected the certificate
        if reset:
            return EndedBy.RESET
        if getattr(self._tls_protocol, "close_notify_received", False):
            return EndedBy.CLOSE_NOTIFY
        return EndedBy.TCP_CLOSE

    def close_connection(self) -> None:
        """Close the connection because the receiver shuts down (silently, as before)."""
        self.end_session(None, EndedBy.SHUTDOWN)

    def end_session(self, reply: str | None, reason: EndedBy) -> None:
        """Send a last reply (not into a TLS handshake), close, and abort if the close stalls."""
        transport = self.transport
        if transport is None or self._abort is not None:
            return
        self.record.ended_by = self.record.ended_by or reason
        handshaking = self._tls_protocol is not None and self.record.handshake is Handshake.NONE
        if reply is not None and not handshaking:
            self.record.log("S", reply)
            transport.write(reply.encode() + b"\r\n")  # type: ignore[attr-defined]
        transport.close()
        self._abort = abort_later(self.loop, transport)

    def _expire(self, reason: str) -> None:
        """End the session with 421 because the idle or per-command deadline passed."""
        ended_by = EndedBy(reason)
        self.end_session(TIMEOUT_REPLIES[ended_by].format(host=self.hostname), ended_by)

    async def handle_exception(self, error: Exception) -> str:
        """Log an unexpected error and answer 421; the session then closes as 421 promises."""
        status: str = await super().handle_exception(error)
        if isinstance(error, TLSSetupException):
            return status  # recorded by smtp_STARTTLS; aiosmtpd closes without replying
        log.error("%s: session %s failed: %r", self.spec.id, self.record.session_id, error)
        if status.startswith("421"):
            self.record.ended_by = EndedBy.RECEIVER_ERROR
            self.loop.call_soon(
                self.end_session, None, EndedBy.RECEIVER_ERROR
            )  # after the 421 is sent
        return status

    def _line_waiting(self) -> bool:
        """Return True when a complete line the client sent waits to be read (not mid-STARTTLS)."""
        if self._tls_protocol is not None and self.record.handshake is Handshake.NONE:
            return False  # plaintext sent with STARTTLS is discarded, never read
        return b"\n" in getattr(self._reader, "_buffer", b"")

    def _reset_timeout(self, duration: float | None = None) -> None:
        """Restart the deadlines; aiosmtpd calls this on connect, TLS upgrade and each command."""
        self._timeout_handle = self.deadlines.command_started()

    async def _handle_client(self) -> None:
        """Serve the session, or answer 421 and close when it is over a session cap."""
        if self._refused == EndedBy.CLIENT_CAP:
            ip = self.record.peer_ip
            reply = TOO_MANY_CONNECTIONS.format(host=self.hostname, ip=ip)
            self.end_session(reply, EndedBy.CLIENT_CAP)
            return
        if self._refused is not None:
            self.end_session(TOO_MANY_SESSIONS, EndedBy(self._refused))
            return
        await super()._handle_client()

    def _counting_reader(self, readuntil: Any) -> Any:
        """Wrap the reader: transcribe command lines, count junk ones; past the limit 421, close."""
        record = self.record

        async def readuntil_counted(separator: bytes = b"\n") -> bytes:
            reading_command = not record.in_data
            if reading_command and self.errors.exceeded:
                if self.transport is not None and not self.transport.is_closing():
                    reply = TOO_MANY_ERRORS.format(host=self.hostname)
                    self.end_session(reply, EndedBy.ERROR_LIMIT)
                raise asyncio.CancelledError  # like push once closing: nothing more is served
            try:
                line: bytes = await readuntil(separator)
            except asyncio.IncompleteReadError:
                # the client's input ended (FIN or close_notify) with no complete line left
                self.end_session(None, self._how_peer_left())
                raise asyncio.CancelledError from None
            if not record.in_data:  # one layer for both: a coroutine less per line read
                record.log("C", line.decode("utf-8", "replace"))
            elif line in (b".\r\n", b".\n"):
                record.in_data = False
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
        if not (text.isascii() and text.isprintable()):  # printable ASCII is " " to "~"
            text = "".join(c if " " <= c <= "~" else "?" for c in text)
        self.deadlines.activity()
        self.record.log("S", text)
        self.errors.reply(text)
        await super().push(text)

    async def smtp_EHLO(self, hostname: str) -> None:
        """Record the EHLO name, then answer as aiosmtpd does."""
        self.record.ehlo = hostname
        self.record.esmtp = True
        self.record.greeted_after_tls = self.record.handshake is Handshake.OK
        await super().smtp_EHLO(hostname)

    async def smtp_HELO(self, hostname: str) -> None:
        """Record the HELO name, then answer as aiosmtpd does."""
        self.record.ehlo = hostname
        self.record.greeted_after_tls = self.record.handshake is Handshake.OK
        await super().smtp_HELO(hostname)

    async def smtp_STARTTLS(self, arg: str) -> None:
        """Run the TLS handshake and record its result, including the peer's alert on failure."""
        self.record.starttls_asked = True
        if self._tls_protocol is not None:
            await self.push("554 5.5.1 Error: TLS already active")
            return
        try:
            await self._start_tls(arg)
        except TLSSetupException as error:
            self._handshake_failed(describe_tls_error(error.__cause__))
            raise
        if self._tls_protocol is not None and self.record.handshake is not Handshake.OK:
            # asyncio reports a handshake we cut short (a timeout, a shutdown) as a success
            why = self.record.ended_by or "closed"
            self._handshake_failed((None, f"connection closed during the tls handshake ({why})"))
            raise TLSSetupException("the TLS handshake did not complete")

    async def _start_tls(self, arg: str) -> None:
        """Answer STARTTLS and run the handshake as aiosmtpd does, over the lab's TLS layer."""
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if not self.tls_context:
            await self.push("454 TLS not available")
            return
        await self.push("220 Ready to start TLS")
        waiter = self.loop.create_future()
        self._tls_protocol = LabSSLProtocol(
            self.loop, self, self.tls_context, waiter, server_side=True
        )
        self._original_transport = self.transport
        assert self._original_transport is not None
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        try:
            await waiter
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException() from error

    async def smtp_AUTH(self, arg: str) -> None:
        """Refuse AUTH (never advertised) as a Postfix MX without SASL does."""
        await self.push(AUTH_NOT_ENABLED)

    def _handshake_failed(self, described: tuple[str | None, str]) -> None:
        """Record a failed handshake with the peer's SNI and alert, if any."""
        ssl_object = getattr(self._tls_protocol, "_sslobj", None)
        self.record.sni = getattr(ssl_object, "lab_sni", None)
        self.record.tls_failed(described, ssl_object)
        self.record.ended_by = self.record.ended_by or EndedBy.HANDSHAKE_FAILED

    async def smtp_QUIT(self, arg: str) -> None:
        """Free the session's place, make its record durable, then answer 221."""
        if not arg:
            self.record.ended_by = EndedBy.QUIT
            self.sessions.close(self)
            pending = self._write_record()
            if pending is not None:
                # a client that closes right after QUIT cancels this task; the write must not be
                with contextlib.suppress(OSError):  # logged and in the store's fault ledger
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
