"""The lab DNS: authoritative A and MX records for the lab zone over UDP and TCP; no recursion."""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
import sys
from collections.abc import Callable, Sequence
from typing import cast

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 60


class LabZone:
    """An in-memory zone: A records for MX hosts, MX records for receiver domains."""

    def __init__(self, origin: str) -> None:
        """Create an empty zone for `origin` (e.g. `lab.test`)."""
        self.origin = dns.name.from_text(origin)
        self.records: dict[tuple[dns.name.Name, int], list[str]] = {}

    def add_a(self, host: str, address: str) -> None:
        """Add an A record."""
        self._add(host, dns.rdatatype.A, address)

    def add_mx(self, domain: str, mx_host: str, preference: int = 10) -> None:
        """Add an MX record pointing `domain` at `mx_host`."""
        self._add(domain, dns.rdatatype.MX, f"{preference} {mx_host.rstrip('.')}.")

    def add_txt(self, owner: str, text: str) -> None:
        """Add a TXT record holding `text` as one character string (at most 255 bytes)."""
        if len(text.encode("utf-8")) > 255 or '"' in text or "\\" in text:
            raise ValueError(f"TXT text for {owner} must be at most 255 bytes without quotes")
        self._add(owner, dns.rdatatype.TXT, f'"{text}"')

    def _add(self, owner: str, rdtype: int, text: str) -> None:
        """Add one record, rejecting owners outside the zone."""
        name = dns.name.from_text(owner)
        if not name.is_subdomain(self.origin):
            raise ValueError(f"{owner} is not inside the zone {self.origin}")
        self.records.setdefault((name, rdtype), []).append(text)

    def answer(self, wire: bytes) -> bytes | None:
        """Return the wire-format answer to a query, or None for undecodable input."""
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        if not question.name.is_subdomain(self.origin):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)
            return response.to_wire()
        texts = self.records.get((question.name, question.rdtype))
        if texts:
            rrset = dns.rrset.from_text_list(
                question.name, TTL, dns.rdataclass.IN, question.rdtype, texts
            )
            response.answer.append(rrset)
        elif not any(name == question.name for name, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()


class _UdpProtocol(asyncio.DatagramProtocol):
    """Answers each UDP datagram from the zone."""

    def __init__(self, zone: LabZone) -> None:
        """Serve `zone`."""
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport for replies."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Reply to one query."""
        reply = self.zone.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


async def _serve_tcp_client(
    zone: LabZone, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer length-prefixed queries on one TCP connection until it closes."""
    try:
        while True:
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            reply = zone.answer(await reader.readexactly(size))
            if reply is None:
                break
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def _print_ready() -> None:
    """Print the ready line the Docker backend waits for."""
    print('{"ready": true}', flush=True)


def _print_port(port: int) -> None:
    """Print the port the lab DNS bound (asked for port 0), before the ready line."""
    print(f'{{"dns_port": {port}}}', flush=True)


async def serve(
    zone: LabZone,
    host: str,
    port: int,
    on_ready: Callable[[], None] = _print_ready,
    stop: asyncio.Event | None = None,
    on_port: Callable[[int], None] = _print_port,
) -> None:
    """Serve the zone on UDP and TCP until `stop` is set (default: SIGINT/SIGTERM).

    With port 0 both take one free port, handed to `on_port` before `on_ready` is called.
    """
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    tcp = await asyncio.start_server(
        lambda r, w: _serve_tcp_client(zone, r, w), host=host, port=port
    )
    bound = int(tcp.sockets[0].getsockname()[1])  # port 0: UDP takes the port TCP was given
    udp, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(zone), (host, bound))
    if port == 0:
        on_port(bound)
    on_ready()
    try:
        await stop.wait()
    finally:
        udp.close()
        tcp.close()
        await tcp.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the lab DNS: `--a host=ip`, `--mx domain=mx-host[:preference]`, `--txt owner=text`."""
    parser = argparse.ArgumentParser(prog="python -m lab.dns", description=__doc__)
    parser.add_argument("--zone", default="lab.test")
    parser.add_argument("--a", action="append", default=[], metavar="HOST=IP")
    parser.add_argument("--mx", action="append", default=[], metavar="DOMAIN=MXHOST[:PREF]")
    parser.add_argument("--txt", action="append", default=[], metavar="OWNER=TEXT")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=53)
    args = parser.parse_args(argv)
    zone = LabZone(args.zone)
    try:
        for item in args.a:
            zone.add_a(*item.split("=", 1))
        for item in args.mx:
            domain, _, target = item.partition("=")
            mx_host, _, preference = target.partition(":")
            zone.add_mx(domain, mx_host, int(preference or 10))
        for item in args.txt:
            owner, _, text = item.partition("=")
            zone.add_txt(owner, text)
    except (TypeError, ValueError) as error:
        print(f"lab.dns: bad record: {error}", file=sys.stderr)
        return 2
    asyncio.run(serve(zone, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
