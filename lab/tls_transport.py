"""asyncio's server-side TLS layer, made to alert and close like an OpenSSL-based MTA.

asyncio's `SSLProtocol` differs from a Postfix smtpd in two places that senders notice:

- a failed handshake aborts the connection before the TLS alert OpenSSL queued (e.g. fatal
  `protocol_version` for a refused version) leaves the SSL object's outgoing buffer, so the
  client sees a bare close; here the alert is written first, as `openssl s_server` does;
- a close_notify or FIN from the client starts asyncio's own shutdown at once, which drops
  every reply still to come: a QUIT sent together with close_notify and FIN (GnuTLS does
  this) is never answered. Here the peer's close only tells the SMTP protocol (end of input);
  the protocol answers what it has read, then closes, which sends our close_notify.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from typing import TYPE_CHECKING, Any, cast

__all__ = ["LabSSLProtocol"]

_AGAIN = (ssl.SSLWantReadError, ssl.SSLSyscallError)
_State = sslproto.SSLProtocolState


class LabSSLProtocol(sslproto.SSLProtocol):
    """SSLProtocol that sends its handshake alert, lets the app answer after the peer closes."""

    # asyncio reads into a zeroed buffer of max_size made per connection (256 KiB): an SMTP
    # session's records fit in far less, and a receiver opens thousands of sessions
    max_size = 64 * 1024

    if TYPE_CHECKING:  # asyncio's private names this class relies on (tests pin them)
        _state: sslproto.SSLProtocolState
        _sslobj: ssl.SSLObject
        _outgoing: ssl.MemoryBIO
        _ssl_buffer: bytearray
        _ssl_buffer_view: memoryview

        def _process_outgoing(self) -> None: ...
        def _do_read(self) -> None: ...
        def _call_eof_received(self) -> None: ...
        def _on_shutdown_complete(self, shutdown_exc: BaseException | None) -> None: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Create the protocol as asyncio does; the peer has not closed yet."""
        super().__init__(*args, **kwargs)
        self.peer_closed = False  # the client sent close_notify or FIN; the app closes when done
        self.close_notify_received = False

    def _do_handshake(self) -> None:
        """Advance the handshake; on failure write the queued alert before the connection ends."""
        try:
            self._sslobj.do_handshake()
        except _AGAIN:
            self._process_outgoing()
        except ssl.SSLError as error:
            self._send_pending()
            self._on_handshake_complete(error)
        else:
            self._on_handshake_complete(None)

    def _send_pending(self) -> None:
        """Write whatever OpenSSL queued (an alert) straight to the socket."""
        data = self._outgoing.read()
        if data and self._transport is not None:
            cast(asyncio.Transport, self._transport).write(data)

    def _app_closing(self) -> bool:
        """Return True once the app protocol has closed its transport."""
        transport = self._app_transport
        return transport is None or bool(transport._closed)

    def _start_shutdown(self) -> None:
        """Shut down when the app closes; a close_notify from the peer only ends its input."""
        if self._state == _State.WRAPPED and not self._app_closing():
            self.peer_closed = self.close_notify_received = True
            return  # _do_read already told the app (eof_received)
        super()._start_shutdown()

    def eof_received(self) -> bool | None:  # type: ignore[override]  # True keeps the socket
        """On a FIN after the handshake, end the app's input and keep the socket for its replies."""
        if self._state == _State.WRAPPED and not self._app_closing():
            self.peer_closed = True
            self._do_read()  # whatever arrived with the FIN (a close_notify) first
            self._call_eof_received()
            return True  # the socket transport stops reading but stays open for writing
        return super().eof_received()

    def _do_shutdown(self) -> None:
        """Send our close_notify; after the peer's close, do not wait for more from it."""
        if not self.peer_closed:
            super()._do_shutdown()  # type: ignore[misc]  # private in asyncio, absent from stubs
            return
        try:
            self._sslobj.unwrap()
        except _AGAIN:
            pass  # the peer sent FIN without close_notify: ours goes out, nothing more comes
        except ssl.SSLError as error:
            self._on_shutdown_complete(error)
            return
        self._process_outgoing()
        self._call_eof_received()
        self._on_shutdown_complete(None)

    def connection_lost(self, exc: BaseException | None) -> None:
        """End the connection as asyncio does, then free the 256 KiB read buffer at once.

        The closed protocol can stay referenced by its session's objects until the cyclic
        garbage collector runs (rarely, in a busy receiver), and nothing reads into it again.
        """
        super().connection_lost(exc)
        self._ssl_buffer = bytearray()
        self._ssl_buffer_view = memoryview(self._ssl_buffer)
