"""The private aiosmtpd, asyncio and ssl names the receiver relies on still exist.

The receiver overrides or reads names that are not public API (listed here, each with where
it is used). An upgrade that drops or renames one fails this test, naming it, instead of
silently changing how sessions are served or recorded.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from importlib.metadata import version

import pytest
from aiosmtpd.smtp import SMTP

AIOSMTPD_TESTED = ("1.4",)  # minor releases this list was checked against (pyproject pins)
SMTP_METHODS = ("_handle_client", "_getaddr", "_set_post_data_state", "_reset_timeout")
SMTP_ATTRIBUTES = (
    "_tls_protocol", "_original_transport", "_reader", "_writer", "_handler_coroutine",
    "_timeout_handle",
)  # fmt: skip
SSL_PROTOCOL_METHODS = (
    "_do_handshake", "_on_handshake_complete", "_process_outgoing", "_do_read",
    "_call_eof_received", "_start_shutdown", "_do_shutdown", "_on_shutdown_complete",
)  # fmt: skip
SSL_PROTOCOL_ATTRIBUTES = (
    "_state", "_sslobj", "_outgoing", "_transport", "_app_transport", "_ssl_buffer",
    "_ssl_buffer_view",
)  # fmt: skip
SSL_STATES = ("DO_HANDSHAKE", "WRAPPED", "FLUSHING", "SHUTDOWN", "UNWRAPPED")


class Handler:
    """A handler with no hooks."""


def missing(obj: object, names: tuple[str, ...]) -> list[str]:
    """Return the names `obj` lacks, qualified by its type."""
    return [f"{type(obj).__name__}.{name}" for name in names if not hasattr(obj, name)]


def test_aiosmtpd_is_a_tested_minor_release() -> None:
    installed = version("aiosmtpd")
    assert installed.startswith(AIOSMTPD_TESTED), (
        f"aiosmtpd {installed} is not a release these private names were checked against "
        f"({AIOSMTPD_TESTED}); re-check this file, then widen the pin in pyproject.toml"
    )


async def connected_smtp() -> SMTP:
    """Return the protocol of one loopback connection to a bare aiosmtpd, once it greeted."""
    made: list[SMTP] = []

    def factory() -> SMTP:
        made.append(SMTP(Handler()))
        return made[-1]

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        await asyncio.wait_for(reader.readline(), 10)  # the greeting: the session is set up
        writer.close()
        return made[0]
    finally:
        server.close()


@pytest.mark.integration
def test_aiosmtpd_private_names_exist() -> None:
    smtp = asyncio.run(connected_smtp())
    absent = missing(smtp, SMTP_ATTRIBUTES) + [
        f"SMTP.{name}" for name in SMTP_METHODS if not callable(getattr(SMTP, name, None))
    ]
    absent += missing(getattr(smtp, "_reader", None), ("_buffer",))  # LabSMTP._line_waiting
    assert not absent, f"private names the receiver uses are gone: {absent}"


def test_asyncio_ssl_private_names_exist() -> None:
    loop = asyncio.new_event_loop()
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        protocol = sslproto.SSLProtocol(
            loop, asyncio.Protocol(), context, loop.create_future(), server_side=True
        )
        absent = missing(protocol, SSL_PROTOCOL_ATTRIBUTES)
        absent += [
            f"SSLProtocol.{name}"
            for name in SSL_PROTOCOL_METHODS
            if not callable(getattr(sslproto.SSLProtocol, name, None))
        ]
        absent += missing(protocol._app_transport, ("_closed",))
        absent += [
            f"SSLProtocolState.{state}"
            for state in SSL_STATES
            if not hasattr(sslproto.SSLProtocolState, state)
        ]
        absent += missing(context, ("_msg_callback",))  # lab.tls_observe
    finally:
        loop.close()
    assert not absent, f"private names the receiver uses are gone: {absent}"


def test_a_missing_name_is_reported_by_name() -> None:
    assert missing(object(), ("_sslobj",)) == ["object._sslobj"]
