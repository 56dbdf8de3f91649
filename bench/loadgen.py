"""A fixed SMTP load generator: C concurrent clients deliver M messages, one session each.

Each delivery is what an MTA does for one message to one domain: connect, banner, EHLO,
STARTTLS and a full TLS handshake pinned to one version (or plaintext), EHLO, MAIL, RCPT, DATA,
QUIT. The same generator, with the same settings, drives every receiver it is compared on.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import resource
import ssl
import time
from email.utils import formatdate

from bench.common import Json, percentile, summary
from bench.handshake import client_context
from lab.spec import TlsVersion

SESSION_TIMEOUT = 10.0
MAIL_FROM = "bounce@sender.lab.test"
HELO = "loadgen.sender.lab.test"
BODY_LINES = 8


@dataclasses.dataclass(frozen=True)
class Target:
    """Where to deliver: address, the MX host name (SNI), the recipient domain, TLS or not."""

    host: str
    port: int
    mx_host: str
    domain: str
    version: TlsVersion | None


class SmtpError(Exception):
    """The receiver answered something other than what a delivery needs."""


def message(number: int, domain: str) -> bytes:
    """Return a small synthetic message (about 600 bytes), dot-stuffing not needed."""
    lines = [
        f"From: <{MAIL_FROM}>",
        f"To: <inbox@{domain}>",
        f"Subject: bench load message {number}",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: <load-{number}-{time.monotonic_ns()}@sender.lab.test>",
        "",
        *[
            f"Synthetic benchmark line {i} of a message with no personal data."
            for i in range(BODY_LINES)
        ],
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


async def _reply(reader: asyncio.StreamReader, expect: bytes) -> None:
    """Read one SMTP reply (all its lines); raise SmtpError unless its code starts `expect`."""
    while True:
        line = await reader.readline()
        if not line:
            raise SmtpError("connection closed")
        if len(line) < 4 or line[3:4] != b"-":
            break
    if not line.startswith(expect):
        raise SmtpError(line[:80].decode(errors="replace").strip())


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes, expect: bytes
) -> None:
    """Send one command line and check its reply."""
    writer.write(line + b"\r\n")
    await writer.drain()
    await _reply(reader, expect)


async def deliver(target: Target, context: ssl.SSLContext | None, number: int) -> float:
    """Deliver one message in one session; return the seconds spent in the TLS handshake."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    handshake = 0.0
    try:
        await _reply(reader, b"220")
        await _command(reader, writer, b"EHLO " + HELO.encode(), b"250")
        if context is not None:
            await _command(reader, writer, b"STARTTLS", b"220")
            began = time.perf_counter()
            await writer.start_tls(context, server_hostname=target.mx_host)
            handshake = time.perf_counter() - began
            await _command(reader, writer, b"EHLO " + HELO.encode(), b"250")
        await _command(reader, writer, f"MAIL FROM:<{MAIL_FROM}>".encode(), b"250")
        await _command(reader, writer, f"RCPT TO:<inbox@{target.domain}>".encode(), b"250")
        await _command(reader, writer, b"DATA", b"354")
        writer.write(message(number, target.domain) + b".\r\n")
        await writer.drain()
        await _reply(reader, b"250")
        await _command(reader, writer, b"QUIT", b"221")
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return handshake


async def _load(target: Target, messages: int, concurrency: int, limit: float) -> Json:
    """Run `concurrency` workers until `messages` deliveries were attempted or `limit` s passed."""
    context = client_context(target.version) if target.version else None
    numbers = itertools.count()
    handshakes: list[float] = []
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + limit

    async def worker() -> None:
        while time.monotonic() < deadline:
            number = next(numbers)
            if number >= messages:
                return
            began = time.perf_counter()
            try:
                hs = await asyncio.wait_for(deliver(target, context, number), SESSION_TIMEOUT)
            except (OSError, ssl.SSLError, SmtpError, TimeoutError) as error:
                errors.append(f"{type(error).__name__}: {error}"[:200])
                continue
            latencies.append(time.perf_counter() - began)
            handshakes.append(hs)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - began
    return {
        "delivered": len(latencies),
        "failed": len(errors),
        "first_errors": errors[:3],
        "seconds": round(seconds, 4),
        "per_s": round(len(latencies) / seconds, 2) if seconds > 0 else None,
        "timed_out": time.monotonic() >= deadline,
        "latency_ms": _ms(latencies),
        "handshake_ms": _ms(handshakes) if context else None,
    }


def _ms(values: list[float]) -> Json:
    """Return median and p90 (ms) of a sample of seconds."""
    stats = summary([v * 1000 for v in values], 3)
    p90 = percentile(values, 0.9)
    return {"n": stats["n"], "median": stats["median"], "p90": p90 and round(p90 * 1000, 3)}


def run_load(target: Target, messages: int, concurrency: int, limit: float) -> Json:
    """Run the generator to completion; add its own CPU seconds to the result."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_load(target, messages, concurrency, limit))
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result | {"generator_cpu_s": round(used, 4)}
