"""What each TLS handshake carried, seen by OpenSSL's message callback, never by what a client says.

OpenSSL hands every handshake message and alert, in either direction and in plaintext (TLS 1.3
encrypts them on the wire), to the context's message callback. The receiver keeps, per SSL
object: the client's ClientHello as sent, the key-exchange group its ServerHello chose, the
signature scheme of its CertificateVerify, and the alerts sent and received. The callback
never raises: an exception there would be re-raised inside the handshake.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from typing import Any

__all__ = ["HandshakeLog", "handshake_log", "observe_handshakes"]

log = logging.getLogger("lab.receiver")
HANDSHAKE, ALERT = 22, 21  # TLS content types
CLIENT_HELLO, SERVER_HELLO, CERTIFICATE_VERIFY = 1, 2, 15  # handshake message types
SERVER_KEY_EXCHANGE = 12  # TLS 1.2 and before: the (EC)DHE parameters and their signature
NAMED_CURVE = 3
TLS12 = 0x0303  # before it, a ServerKeyExchange signature names no scheme
KEY_SHARE = 51


@dataclasses.dataclass
class HandshakeLog:
    """The handshake messages of one connection that the session record is built from."""

    client_hello: bytes | None = None  # the first ClientHello, handshake header included
    retried_hello: bytes | None = None  # a second ClientHello, after a HelloRetryRequest
    group: int | None = None  # TLS 1.3 ServerHello key_share, or TLS 1.2 ECDHE named curve
    signature_scheme: int | None = None  # CertificateVerify (1.3) or ServerKeyExchange (1.2)
    alert_sent: int | None = None
    alert_received: int | None = None


def handshake_log(ssl_object: Any) -> HandshakeLog:
    """Return the handshake log attached to an SSL object, creating an empty one."""
    found = getattr(ssl_object, "lab_handshake", None)
    if isinstance(found, HandshakeLog):
        return found
    created = HandshakeLog()
    ssl_object.lab_handshake = created
    return created


def observe_handshakes(context: ssl.SSLContext) -> None:
    """Make every SSL object of `context` log its handshake (see `handshake_log`).

    The callback is installed at the `_ssl` level: it takes OpenSSL's plain integers, without
    the `ssl` module's wrapper turning each into an enum member (three per message) first.
    """
    raw = super(ssl.SSLContext, ssl.SSLContext)._msg_callback  # type: ignore[misc]
    raw.__set__(context, _on_message)


def _on_message(
    conn: Any, direction: str, version: Any, content_type: Any, msg_type: Any, data: bytes
) -> None:
    """Note the messages the record needs; swallow (log) anything unexpected."""
    try:
        entry = handshake_log(conn)
        _note(entry, direction, int(version), int(content_type), int(msg_type), data)
    except Exception as error:  # never into the handshake
        log.warning("handshake message not recorded: %r", error)


_on_message.user_function = _on_message  # type: ignore[attr-defined]  # what ssl's getter reads


def _note(
    entry: HandshakeLog, direction: str, version: int, content_type: int, kind: int, data: bytes
) -> None:
    """Fill `entry` from one message (`version`: the protocol version it was sent under)."""
    if content_type == ALERT and len(data) >= 2:
        if direction == "write":
            entry.alert_sent = entry.alert_sent if entry.alert_sent is not None else data[1]
        else:
            entry.alert_received = data[1]
    if content_type != HANDSHAKE:
        return
    if direction == "read" and kind == CLIENT_HELLO:
        if entry.client_hello is None:
            entry.client_hello = bytes(data)
        elif entry.retried_hello is None:
            entry.retried_hello = bytes(data)
    elif direction == "write" and kind == SERVER_HELLO:
        entry.group = _server_hello_group(data)
    elif direction == "write" and kind == SERVER_KEY_EXCHANGE:
        entry.group, entry.signature_scheme = _ecdhe_parameters(data, version >= TLS12)
    elif direction == "write" and kind == CERTIFICATE_VERIFY and len(data) >= 6:
        entry.signature_scheme = int.from_bytes(data[4:6], "big")


def _server_hello_group(message: bytes) -> int | None:
    """Return the key_share group of a TLS 1.3 ServerHello (or HelloRetryRequest), else None."""
    body = message[4:]
    at = 2 + 32  # legacy_version, random
    if len(body) < at + 1:
        return None
    at += 1 + body[at]  # legacy_session_id_echo
    at += 2 + 1  # cipher_suite, legacy_compression_method
    if len(body) < at + 2:
        return None
    end = min(len(body), at + 2 + int.from_bytes(body[at : at + 2], "big"))
    at += 2
    while at + 4 <= end:
        kind = int.from_bytes(body[at : at + 2], "big")
        size = int.from_bytes(body[at + 2 : at + 4], "big")
        if kind == KEY_SHARE and size >= 2:
            return int.from_bytes(body[at + 4 : at + 6], "big")
        at += 4 + size
    return None


def _ecdhe_parameters(message: bytes, has_scheme: bool) -> tuple[int | None, int | None]:
    """Return (named curve, signature scheme or None) of an ECDHE ServerKeyExchange."""
    body = message[4:]
    if len(body) < 4 or body[0] != NAMED_CURVE:
        return None, None  # DHE, or an explicit curve: no named group to report
    group = int.from_bytes(body[1:3], "big")
    at = 4 + body[3]  # after the ephemeral public key
    if not has_scheme or len(body) < at + 2:
        return group, None
    return group, int.from_bytes(body[at : at + 2], "big")  # TLS 1.2 signs with a scheme
