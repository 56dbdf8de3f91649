"""The lab DNS: authoritative for the lab zone or a signed ZoneSet, UDP and TCP; no recursion."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 60
ZONES_COMPLETE = "trust-anchor.json"  # ZoneSet.write writes it last: the folder is complete


class Answerer(Protocol):
    """Turns one wire-format query into its wire-format answer (None: undecodable, no reply)."""

    def answer(self, wire: bytes, max_size: int = 65_535) -> bytes | None:
        """Return the answer to `wire`, at most `max_size` bytes (TC set when larger)."""
        ...


class LabZone:
    """An in-memory unsigned zone: A, MX and any other record type given in presentation form."""

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
        """Add a TXT record holding `text` (split into 255-byte strings as DNS requires)."""
        self._add(owner, dns.rdatatype.TXT, txt_presentation(text))

    def add_record(self, owner: str, rdtype: str, text: str) -> None:
        """Add a record of any type in presentation form (e.g. `TLSA`, `3 1 1 ab...`)."""
        code = dns.rdatatype.from_text(rdtype)
        dns.rdata.from_text(dns.rdataclass.IN, code, text)  # reject bad data now, not per query
        self._add(owner, code, text)

    def _add(self, owner: str, rdtype: int, text: str) -> None:
        """Add one record, rejecting owners outside the zone."""
        name = dns.name.from_text(owner)
        if not name.is_subdomain(self.origin):
            raise ValueError(f"{owner} is not inside the zone {self.origin}")
        self.records.setdefault((name, rdtype), []).append(text)

    def answer(self, wire: bytes, max_size: int = 65_535) -> bytes | None:
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
        try:
            return response.to_wire(max_size=max_size)
        except dns.exception.TooBig:
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire()


def txt_presentation(text: str) -> str:
    """Return TXT record data for `text` in presentation form: 255-byte quoted strings."""
    raw = text.encode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join(_quoted(c) for c in chunks)


def _quoted(chunk: bytes) -> str:
    """Return one TXT character-string in presentation form."""
    escaped = "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in b'"\\' else f"\\{b:03d}" for b in chunk
    )
    return f'"{escaped}"'


class _UdpProtocol(asyncio.DatagramProtocol):
    """Answers each UDP datagram from the zone."""

    def __init__(self, zone: Answerer) -> None:
        """Serve `zone`."""
        self.zone = zone
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport for replies."""
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """Reply to one query."""
        reply = self.zone.answer(data, udp_limit(data))
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


def udp_limit(wire: bytes) -> int:
    """Return the largest UDP answer the query's sender accepts (its EDNS size, else 512)."""
    try:
        query = dns.message.from_wire(wire)
    except Exception:
        return 512
    return max(512, query.payload) if query.edns >= 0 else 512


async def _serve_tcp_client(
    zone: Answerer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
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
    zone: Answerer,
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
    parser.add_argument("--zones-dir", type=Path, help="serve the ZoneSet written to this folder")
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when stdin closes")
    parser.add_argument(
        "--records-file", type=Path,
        help="also serve the --a/--mx/--txt arguments in this file (a JSON list of strings)",
    )  # fmt: skip
    parser.add_argument(
        "--wait-for-zones", type=float, default=0.0, metavar="SECONDS",
        help="wait this long for --zones-dir or --records-file to be written (the records are"
        " known only once the hosts they name have their addresses)",
    )  # fmt: skip
    parser.add_argument("--txt", action="append", default=[], metavar="OWNER=TEXT")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=53)
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        from lab.parent_watch import exit_with_parent

        exit_with_parent(sys.stdin.fileno())
    if args.zones_dir is not None:
        if not _wait_for(args.zones_dir / ZONES_COMPLETE, args.wait_for_zones):
            print(f"lab.dns: {args.zones_dir} was not written in time", file=sys.stderr)
            return 2
        return _serve_zone_set(args.zones_dir, args.host, args.port)
    zone = LabZone(args.zone)
    if args.records_file is not None:
        more = _records_file(args.records_file, args.wait_for_zones)
        if more is None:
            return 2
        args.a, args.mx, args.txt = args.a + more.a, args.mx + more.mx, args.txt + more.txt
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


def _records_file(path: Path, seconds: float) -> argparse.Namespace | None:
    """Return the record arguments in `path` once it exists (None, said on stderr, if never)."""
    if not _wait_for(path, seconds):
        print(f"lab.dns: {path} was not written in time", file=sys.stderr)
        return None
    try:
        listed = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        print(f"lab.dns: cannot read {path}: {error}", file=sys.stderr)
        return None
    if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
        print(f"lab.dns: {path} is not a JSON list of strings", file=sys.stderr)
        return None
    more = argparse.ArgumentParser(prog="lab.dns records file", add_help=False)
    for option in ("--a", "--mx", "--txt"):
        more.add_argument(option, action="append", default=[])
    known, unknown = more.parse_known_args(listed)
    if unknown:
        print(f"lab.dns: {path} has what is not a record: {unknown[:3]}", file=sys.stderr)
        return None
    return known


def _wait_for(path: Path, seconds: float) -> bool:
    """Wait (bounded) until `path` exists, woken when its folder changes; return whether it does."""
    from lab.evidence_watch import wait_until

    return wait_until([path.parent], path.exists, bool, seconds)


def _serve_zone_set(folder: Path, host: str, port: int) -> int:
    """Serve a ZoneSet folder; print the bound port in the ready line (port 0: any free port)."""
    from lab.dns_answer import ZoneServer
    from lab.dns_zones import ZoneSet

    try:
        server = ZoneServer(ZoneSet.read(folder))
    except ValueError as error:
        print(f"lab.dns: {error}", file=sys.stderr)
        return 2
    if port == 0:
        port = _free_port(host)
    ready = json.dumps({"ready": True, "port": port})
    asyncio.run(serve(server, host, port, on_ready=lambda: print(ready, flush=True)))
    return 0


def _free_port(host: str) -> int:
    """Return a port free for both UDP and TCP on `host`."""
    import socket

    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
        return port
    raise OSError(f"no port free for both UDP and TCP on {host}")


if __name__ == "__main__":
    sys.exit(main())
