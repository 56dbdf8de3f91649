"""A man in the middle in front of a healthy receiver: relays SMTP with one downgrade vector."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from lab.evidence_store import JsonLines
from lab.limits import SessionRegistry
from lab.pki_issue import issue_leaf
from lab.proxy_record import PROXY_FILE, ProxyRecord
from lab.spec import CertState, ProxyVector, ReceiverSpec

READY = b"220 2.0.0 Ready to start TLS\r\n"
REFUSALS = {
    ProxyVector.STARTTLS_454: b"454 4.7.0 TLS not available due to temporary reason\r\n",
    ProxyVector.STARTTLS_501: b"501 5.5.4 Syntax error (no parameters allowed)\r\n",
}
NOT_RECOGNISED = b"502 5.5.2 Error: command not recognized\r\n"  # STARTTLS after it was stripped
INJECTED = b"250 2.0.0 Ok: injected before TLS by the man in the middle\r\n"
GARBAGE = b"*** this is no TLS ServerHello: the man in the middle broke the handshake ***\r\n"
STREAM_LIMIT = 1024 * 1024  # the longest line either side may send
REPLY_LINES = 100  # the most lines of one multi-line reply relayed
TRANSCRIPT_LIMIT = 200
LINE_TEXT = 300
CHUNK = 65536
CLIENT_HELLO_WAIT = 5.0  # seconds the broken vector waits for the ClientHello it answers


def intercept_context(mx_host: str) -> ssl.SSLContext:
    """Return a server context with the proxy's own, freshly made self-signed certificate."""
    cert_pem, key_pem = issue_leaf(CertState.SELF_SIGNED, mx_host, None, datetime.now(UTC))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory(prefix="tlslab-mitm-") as folder:
        cert, key = Path(folder) / "cert.pem", Path(folder) / "key.pem"
        cert.write_bytes(cert_pem)
        key.write_bytes(key_pem)
        context.load_cert_chain(cert, key)
    return context


def upstream_context() -> ssl.SSLContext:
    """Return the client context the interceptor uses towards the receiver (no verification)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class MitmProxy:
    """Accepts senders where the MX host name resolves and relays each one to the receiver."""

    def __init__(
        self,
        spec: ReceiverSpec,
        upstream: tuple[str, int],
        directory: Path,
        sessions: SessionRegistry,
    ) -> None:
        """Front `spec`'s receiver at `upstream`; write one record per connection in `directory`."""
        assert spec.proxy is not None
        self.spec, self.vector, self.upstream = spec, spec.proxy.vector, upstream
        self.records = JsonLines(directory / PROXY_FILE)
        self.sessions = sessions
        self.intercept: ssl.SSLContext | None = None
        if self.vector is ProxyVector.TLS_INTERCEPT:
            self.intercept = intercept_context(spec.mx_host)

    async def start(self, host: str, port: int) -> asyncio.Server:
        """Listen on host:port (0: a free port) and return the server."""
        return await asyncio.start_server(self._serve, host, port, limit=STREAM_LIMIT)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one sender connection and record it, however it ends."""
        connection = ProxiedConnection(self, reader, writer)
        self.sessions.live.add(connection)
        try:
            await connection.run()
        finally:
            self.sessions.close(connection)


class ProxiedConnection:
    """One sender's connection through the proxy, in lockstep: a command, then its reply."""

    def __init__(
        self, proxy: MitmProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Start the record of a connection the sender just opened."""
        self.proxy, self.spec, self.vector = proxy, proxy.spec, proxy.vector
        self.reader, self.writer = reader, writer
        self.up_reader: asyncio.StreamReader | None = None
        self.up_writer: asyncio.StreamWriter | None = None
        self.task = asyncio.current_task()
        peer = writer.get_extra_info("peername") or ("", 0)
        self.facts: dict[str, object] = {
            "receiver": self.spec.id, "vector": self.vector.value,
            "peer_ip": str(peer[0]), "peer_port": int(peer[1]), "started": time.time(),
        }  # fmt: skip
        self.before: list[str] = []
        self.after: list[str] = []
        self.sender_tls: str | None = None

    def close_connection(self) -> None:
        """Stop relaying because the lab shuts down; the record is still written."""
        self.facts.setdefault("ended_by", "shutdown")
        self._close_both()
        if self.task is not None:
            self.task.cancel()

    def _close_both(self) -> None:
        """Close the sender's and the receiver's connection (idempotent)."""
        for writer in (self.writer, self.up_writer):
            if writer is not None:
                writer.close()

    async def run(self) -> None:
        """Relay until either side closes, a deadline passes or the lab stops; then record."""
        try:
            await self._relay()
        except asyncio.CancelledError:
            self.facts.setdefault("ended_by", "shutdown")
        except TimeoutError:
            self.facts.setdefault("ended_by", "timeout")
        except (OSError, EOFError, ValueError, ssl.SSLError) as error:  # ValueError: line too long
            self.facts.setdefault("ended_by", f"error: {type(error).__name__}: {error}"[:LINE_TEXT])
        finally:
            self._close_both()
            await self._write_record()

    async def _write_record(self) -> None:
        """Append this connection's record durably (off the event loop), once."""
        record = ProxyRecord.model_validate(
            {
                **self.facts,
                "ended": time.time(),
                "sent_before": tuple(self.before),
                "sent_after": tuple(self.after),
                "sender_tls": self.sender_tls,
            }
        )
        data = record.model_dump(mode="json")
        pending = self.proxy.sessions.write(
            asyncio.get_running_loop(), lambda: self.proxy.records.append(data)
        )
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(pending)

    async def _relay(self) -> None:
        """Open the receiver, pass its banner on, then relay command by command."""
        self.up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(*self.proxy.upstream, limit=STREAM_LIMIT),
            self.spec.command_timeout_seconds,
        )
        self.up_writer = up_writer
        here = up_writer.get_extra_info("sockname") or ("", 0)
        self.facts.update(upstream_ip=str(here[0]), upstream_port=int(here[1]))
        await self._to_sender(await self._reply())
        while True:
            line = await self._from_sender()
            if not line:
                self.facts.setdefault("ended_by", "sender-closed")
                return
            verb = line.split(b" ", 1)[0].strip().upper()
            if verb == b"STARTTLS":
                if await self._starttls(line):
                    continue
                return
            if verb == b"QUIT":
                self.facts.setdefault("ended_by", "quit")  # even if the sender leaves at once
            await self._to_receiver(line)
            reply = await self._reply()
            if verb == b"EHLO" and self.vector is ProxyVector.STRIP_STARTTLS:
                reply = self._strip(reply)
            await self._to_sender(reply)
            if verb == b"DATA" and reply[-1].startswith(b"354"):
                await self._message()
                await self._to_sender(await self._reply())
            elif verb == b"QUIT":
                return

    async def _starttls(self, line: bytes) -> bool:
        """Apply the vector to STARTTLS; return False when the relaying has ended."""
        vector = self.vector
        if vector is ProxyVector.STRIP_STARTTLS:
            await self._to_sender([NOT_RECOGNISED])
            return True
        if vector in REFUSALS:
            refusal = REFUSALS[vector]
            await self._manipulate([refusal], f"answered STARTTLS with {refusal[:3].decode()}")
            return True
        if vector is ProxyVector.STARTTLS_BROKEN:
            await self._broken()
            return False
        if vector is ProxyVector.TLS_INTERCEPT:
            return await self._intercept()
        await self._to_receiver(line)
        reply = await self._reply()
        if not reply[-1].startswith(b"220"):
            await self._to_sender(reply)
            return True
        if vector is ProxyVector.STARTTLS_INJECTION:
            await self._manipulate([*reply, INJECTED], "appended a forged 250 line to the 220")
            self.facts.update(injected=INJECTED.decode(), injected_sent=True)
        else:
            await self._to_sender(reply)
        self.facts["passthrough_tls"] = True
        await self._pump()
        self.facts.setdefault("ended_by", "passthrough-closed")
        return False

    async def _broken(self) -> None:
        """Answer 220, read the ClientHello, send garbage instead of a ServerHello, then close."""
        await self._manipulate([READY], "answered 220, then sent garbage instead of a ServerHello")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.reader.read(CHUNK), CLIENT_HELLO_WAIT)
        self.writer.write(GARBAGE)
        await self.writer.drain()
        self.facts["ended_by"] = "garbage-sent"

    async def _intercept(self) -> bool:
        """Terminate the sender's TLS with the proxy's certificate, then TLS to the receiver."""
        assert self.proxy.intercept is not None
        assert self.up_writer is not None
        # no await between the 220 and start_tls: a ClientHello read in between would land in
        # the plaintext buffer, out of reach of the handshake
        self.writer.write(READY)
        self._note_manipulation("terminated TLS with its own self-signed certificate")
        try:
            await self.writer.start_tls(self.proxy.intercept)
        except (ssl.SSLError, OSError) as error:
            why = str(error) or type(error).__name__
            self.facts.update(tls_error=why[:LINE_TEXT], ended_by="handshake-failed")
            return False
        ssl_object = self.writer.get_extra_info("ssl_object")
        self.sender_tls = _version(ssl_object.version() if ssl_object else None)
        await self._to_receiver(b"STARTTLS\r\n")
        reply = await self._reply()
        if not reply[-1].startswith(b"220"):
            raise ConnectionError(f"the receiver answered STARTTLS with {reply[-1][:40]!r}")
        await self.up_writer.start_tls(upstream_context(), server_hostname=self.spec.mx_host)
        return True

    def _strip(self, reply: list[bytes]) -> list[bytes]:
        """Return the EHLO reply without its STARTTLS line (continuation marks kept right)."""
        kept = [line for line in reply if line[4:].strip().upper() != b"STARTTLS"]
        if len(kept) == len(reply):
            return reply
        self._note_manipulation("removed STARTTLS from the EHLO reply")
        last = len(kept) - 1
        return [line[:3] + (b" " if i == last else b"-") + line[4:] for i, line in enumerate(kept)]

    async def _message(self) -> None:
        """Relay message data up to the lone dot, noting whether the proxy read it in the clear."""
        tls = self.sender_tls is not None
        self.facts["data_decrypted" if tls else "data_in_plaintext"] = True
        while True:
            line = await self._from_sender(log_it=False)
            if not line:
                raise ConnectionError("the sender closed during DATA")
            self.facts["data_bytes"] = int(str(self.facts.get("data_bytes", 0))) + len(line)
            await self._to_receiver(line)
            if line in (b".\r\n", b".\n"):
                return

    async def _pump(self) -> None:
        """Copy bytes both ways unchanged (end-to-end TLS) until either side closes or idles."""
        assert self.up_reader is not None
        assert self.up_writer is not None
        idle = self.spec.idle_timeout_seconds

        async def copy(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):  # a TLS peer may reset instead of closing
                while True:
                    async with asyncio.timeout(idle):  # unlike wait_for, never eats a cancel
                        chunk = await source.read(CHUNK)
                    if not chunk:
                        return
                    target.write(chunk)
                    await target.drain()

        tasks = [
            asyncio.ensure_future(copy(self.reader, self.up_writer)),
            asyncio.ensure_future(copy(self.up_reader, self.writer)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            self._close_both()  # one side is gone: end the other's read at once
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _manipulate(self, reply: list[bytes], what: str) -> None:
        """Send the vector's reply in one write (one segment) and note the manipulation."""
        await self._to_sender(reply)
        self._note_manipulation(what)

    def _note_manipulation(self, what: str) -> None:
        """Mark that the sender now sees a manipulated session; later lines go to `sent_after`."""
        if not self.facts.get("manipulated"):
            self.facts.update(manipulated=True, manipulation=what)

    async def _from_sender(self, log_it: bool = True) -> bytes:
        """Read one line from the sender, bounded by the idle deadline; b'' when it closed."""
        line = await asyncio.wait_for(self.reader.readline(), self.spec.idle_timeout_seconds)
        if log_it and line:
            lines = self.after if self.facts.get("manipulated") else self.before
            if len(self.before) + len(self.after) < TRANSCRIPT_LIMIT:
                lines.append(_printable(line))
        return line

    async def _reply(self) -> list[bytes]:
        """Read one complete (multi-line) reply from the receiver, bounded by its deadline."""
        assert self.up_reader is not None
        lines: list[bytes] = []
        while len(lines) < REPLY_LINES:
            line = await asyncio.wait_for(
                self.up_reader.readline(), self.spec.command_timeout_seconds
            )
            if not line:
                raise ConnectionError("the receiver closed the connection")
            lines.append(line)
            if line[3:4] != b"-":
                return lines
        raise ConnectionError(f"the receiver's reply is longer than {REPLY_LINES} lines")

    async def _to_sender(self, lines: list[bytes]) -> None:
        """Write lines to the sender in one write and wait until they are handed over."""
        self.writer.write(b"".join(lines))
        await asyncio.wait_for(self.writer.drain(), self.spec.command_timeout_seconds)

    async def _to_receiver(self, data: bytes) -> None:
        """Write bytes to the receiver and wait until they are handed over."""
        assert self.up_writer is not None
        self.up_writer.write(data)
        await asyncio.wait_for(self.up_writer.drain(), self.spec.command_timeout_seconds)

    def __repr__(self) -> str:
        """Name the connection for logs."""
        return f"<ProxiedConnection {self.spec.id} {self.facts.get('peer_port')}>"


def _printable(line: bytes) -> str:
    """Return a line as bounded text with control characters masked."""
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    return "".join(c if " " <= c <= "~" or c > "\x9f" else "?" for c in text)[:LINE_TEXT]


def _version(name: str | None) -> str | None:
    """Return OpenSSL's protocol name in results.json's spelling."""
    return None if name is None else ("TLSv1.0" if name == "TLSv1" else name)
