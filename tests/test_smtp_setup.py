"""The cached SMTP set-up builds exactly what aiosmtpd's own `SMTP.__init__` builds."""

from __future__ import annotations

import asyncio
import types
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from lab import smtp_setup
from lab.evidence_store import EvidenceStore
from lab.receiver import LabSMTP
from lab.smtp_setup import CachedSMTP, method_names
from lab.spec import ReceiverSpec
from lab.tls_context import build_tls_context

SLOW_PATH = {"command_call_limit": None}  # an option outside the cached set: aiosmtpd's own init


def shape(value: Any, protocol: object, handler: object) -> Any:
    """Return a comparable picture of an attribute: bound methods by name and owner, types."""
    if isinstance(value, types.MethodType):
        owner = value.__self__
        who = "protocol" if owner is protocol else "handler" if owner is handler else type(owner)
        return ("method", value.__func__, who)
    if isinstance(value, dict):
        return {k: shape(v, protocol, handler) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(shape(v, protocol, handler) for v in value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return type(value)


def picture(protocol: SMTP) -> dict[str, Any]:
    """Return every instance attribute of a protocol in comparable form."""
    handler = protocol.event_handler
    return {k: shape(v, protocol, handler) for k, v in vars(protocol).items()}


def both(spec: ReceiverSpec, store: EvidenceStore, **options: Any) -> tuple[LabSMTP, LabSMTP]:
    """Return the lab protocol built the cached way and aiosmtpd's way, same options."""

    async def build() -> tuple[LabSMTP, LabSMTP]:
        loop = asyncio.get_running_loop()
        fast = LabSMTP(spec, store, loop=loop, **options)
        slow = LabSMTP(spec, store, loop=loop, **options, **SLOW_PATH)
        return fast, slow

    return asyncio.run(build())


@pytest.mark.parametrize("receiver", ["no-starttls", "tls12"])
def test_cached_setup_sets_what_aiosmtpd_sets(
    receiver: str,
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: Any,
    tmp_path: Path,
) -> None:
    spec = receiver_specs[receiver]
    options: dict[str, Any] = {}
    if spec.starttls:
        bundle = lab_pki.bundle(spec.id)
        options["tls_context"] = build_tls_context(spec, bundle.cert_path, bundle.key_path)
    fast, slow = both(spec, EvidenceStore(tmp_path, spec.id), **options)
    assert picture(fast) == picture(slow)
    assert set(fast._smtp_methods) >= {"EHLO", "STARTTLS", "MAIL", "RCPT", "DATA", "QUIT", "AUTH"}
    assert set(fast._handle_hooks) == {"EHLO", "RCPT", "DATA", "exception"}
    assert fast._ehlo_hook_ver == "new"
    assert fast._smtp_methods["QUIT"].__self__ is fast  # bound to this connection, not cached


def test_a_wrong_cached_table_is_seen_by_the_comparison(
    receiver_specs: dict[str, ReceiverSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # negative control: the picture comparison above does notice a table that differs
    spec = receiver_specs["no-starttls"]
    fast, slow = both(spec, EvidenceStore(tmp_path, spec.id))
    names = method_names(fast, fast.event_handler)
    pruned = [c for c in names.commands if c[0] != "NOOP"]
    broken = smtp_setup.MethodNames(names.auth, names.hooks, tuple(pruned), names.ehlo_hook)
    monkeypatch.setitem(smtp_setup._CACHE, (LabSMTP, type(fast.event_handler)), broken)
    fast, slow = both(spec, EvidenceStore(tmp_path, spec.id))
    assert "NOOP" not in fast._smtp_methods
    assert "NOOP" in slow._smtp_methods
    assert picture(fast) != picture(slow)


class Hooks:
    """A handler with one hook of its class and one set on the instance."""

    def __init__(self) -> None:
        self.handle_NOOP = self._noop

    async def _noop(self, *args: Any) -> None:
        return None

    async def handle_RCPT(self, *args: Any) -> str:
        return "250 OK"


def test_hooks_set_on_a_handler_instance_are_found_as_aiosmtpd_finds_them() -> None:
    async def build() -> tuple[CachedSMTP, SMTP]:
        loop = asyncio.get_running_loop()
        return CachedSMTP(Hooks(), hostname="mx.test", loop=loop), SMTP(
            Hooks(), hostname="mx.test", loop=loop
        )

    fast, slow = asyncio.run(build())
    assert set(fast._handle_hooks) == set(slow._handle_hooks) == {"NOOP", "RCPT"}
    assert picture(fast) == picture(slow)


PATHS = [
    "<bounce@sender.lab.test>",
    "<inbox@tls12.lab.test> SIZE=600",
    "inbox@tls12.lab.test",
    "<>",
    "",
    "<@relay.test:user@x.test>",
    '<"quoted local"@x.test> BODY=8BITMIME',
    "<no-at-sign>",
    "<unterminated@x.test",
    "<a@b.test>>",
    "<\x00@x.test>",
    "   <spaced@x.test>",
    "<" + "l" * 70 + "@x.test>",
]


@pytest.mark.parametrize("limit", [0, 64])
def test_cached_path_parses_equal_aiosmtpd_parses(limit: int) -> None:
    class Bare(SMTP):
        local_part_limit = limit

    class Cached(CachedSMTP):
        local_part_limit = limit

    async def build() -> tuple[SMTP, CachedSMTP]:
        loop = asyncio.get_running_loop()
        return Bare(Hooks(), loop=loop, hostname="h"), Cached(Hooks(), loop=loop, hostname="h")

    bare, cached = asyncio.run(build())
    for path in PATHS * 2:  # the second round is answered from the cache
        try:
            expected = bare._getaddr(path)
        except Exception:
            expected = (None, None)
        assert cached._getaddr(path) == expected, path
    long_local = PATHS[-1]
    # the limit is part of the cache key: the same path parses differently under another limit
    assert (cached._getaddr(long_local)[0] is None) == (limit == 64)


class LineByLine(LabSMTP):
    """The lab's protocol answering EHLO as aiosmtpd does: one write per reply line."""

    ONE_WRITE_EHLO = False


async def _ehlo_writes(factory: Any) -> list[bytes]:
    """Serve one connection with `factory`'s protocol; return its socket writes until EHLO."""
    writes: list[bytes] = []

    def counted() -> Any:
        protocol = factory()
        made = protocol.connection_made

        def connection_made(transport: Any) -> None:
            write = transport.write

            def counted_write(data: bytes) -> None:
                writes.append(bytes(data))
                write(data)

            transport.write = counted_write
            made(transport)

        protocol.connection_made = connection_made
        return protocol

    server = await asyncio.get_running_loop().create_server(counted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readline()
    writer.write(b"EHLO client.example\r\n")
    while not (await reader.readline()).startswith(b"250 "):
        pass
    writer.close()
    server.close()
    await server.wait_closed()
    return writes


def test_ehlo_reply_goes_out_in_one_write_with_aiosmtpd_bytes(
    receiver_specs: dict[str, ReceiverSpec], tmp_path: Path
) -> None:
    spec = receiver_specs["no-starttls"]
    store = EvidenceStore(tmp_path, spec.id)

    async def both_ways() -> tuple[list[bytes], list[bytes]]:
        loop = asyncio.get_running_loop()
        fast = await _ehlo_writes(lambda: LabSMTP(spec, store, loop=loop))
        slow = await _ehlo_writes(lambda: LineByLine(spec, store, loop=loop))
        return fast, slow

    fast, slow = asyncio.run(both_ways())
    # negative control: aiosmtpd's own EHLO (a push per line) writes a line at a time
    assert len(slow) > 3
    assert all(w.count(b"\r\n") == 1 for w in slow[1:])
    assert len(fast) == 2  # the banner, then the whole EHLO reply
    assert fast[1].count(b"\r\n") == len(slow) - 1
    assert b"".join(fast) == b"".join(slow)  # the same bytes in the same order
