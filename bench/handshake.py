"""TLS handshake microbenchmark: a plain ssl client, STARTTLS, then time the handshake alone."""

from __future__ import annotations

import socket
import ssl
import time
import warnings

from bench.common import Json, percentile, summary
from lab.spec import TlsVersion

LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
TIMEOUT = 10.0


def client_context(version: TlsVersion) -> ssl.SSLContext:
    """Return a client context pinned to one TLS version, without certificate checks."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version.ssl_version
        context.maximum_version = version.ssl_version
    if version.is_legacy:
        context.set_ciphers(LEGACY_CIPHERS)
    return context


def read_reply(sock: socket.socket | ssl.SSLSocket) -> bytes:
    """Read one (possibly multi-line) SMTP reply; raise OSError when the peer closes."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise OSError(f"connection closed after {data!r}")
        data += chunk
        if data.endswith(b"\r\n"):
            last = data[:-2].rsplit(b"\r\n", 1)[-1]
            if len(last) < 4 or last[3:4] == b" ":
                return data


def command(sock: socket.socket | ssl.SSLSocket, line: str, expect: str) -> bytes:
    """Send one command and read its reply; raise OSError unless the reply code starts `expect`."""
    sock.sendall(line.encode() + b"\r\n")
    reply = read_reply(sock)
    if not reply.startswith(expect.encode()):
        raise OSError(f"{line!r} answered {reply[:80]!r}")
    return reply


def one_handshake(
    address: tuple[str, int], mx_host: str, context: ssl.SSLContext
) -> tuple[float, float]:
    """Run banner, EHLO, STARTTLS, handshake, QUIT; return (handshake s, whole session s)."""
    began = time.perf_counter()
    with socket.create_connection(address, timeout=TIMEOUT) as raw:
        if not read_reply(raw).startswith(b"220"):
            raise OSError("no 220 banner")
        command(raw, "EHLO bench.sender.lab.test", "250")
        command(raw, "STARTTLS", "220")
        start = time.perf_counter()
        with context.wrap_socket(raw, server_hostname=mx_host) as tls:
            handshake = time.perf_counter() - start
            command(tls, "QUIT", "221")
    return handshake, time.perf_counter() - began


def measure(
    address: tuple[str, int], mx_host: str, version: TlsVersion, count: int, warmup: int = 5
) -> Json:
    """Time `count` sequential STARTTLS handshakes pinned to `version` (after warm-ups)."""
    context = client_context(version)
    handshakes: list[float] = []
    sessions: list[float] = []
    errors: list[str] = []
    for index in range(warmup + count):
        try:
            handshake, session = one_handshake(address, mx_host, context)
        except (OSError, ssl.SSLError) as error:
            errors.append(str(error)[:200])
            continue
        if index >= warmup:
            handshakes.append(handshake * 1000)
            sessions.append(session * 1000)
    return {
        "version": version.value,
        "handshake_ms": summary(handshakes, 3) | {"p90": _rounded(percentile(handshakes, 0.9))},
        "session_ms": summary(sessions, 3),
        "errors": len(errors),
        "first_errors": errors[:3],
    }


def _rounded(value: float | None) -> float | None:
    """Round a millisecond figure for the report."""
    return None if value is None else round(value, 3)
