"""The lab DNS answers A and MX for its zone over UDP and TCP, and refuses everything else."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from lab.dns import LabZone, serve


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        port: int = udp.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    zone = LabZone("lab.test")
    zone.add_a("mx.tls10.lab.test", "127.0.0.1")
    zone.add_mx("tls10.lab.test", "mx.tls10.lab.test")
    port = free_port()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()
    thread = threading.Thread(
        target=loop.run_until_complete,
        args=(serve(zone, "127.0.0.1", port, ready.set, stop),),
        daemon=True,
    )
    thread.start()
    assert ready.wait(5)
    yield "127.0.0.1", port
    loop.call_soon_threadsafe(stop.set)
    thread.join(5)
    loop.close()


def ask(server: tuple[str, int], name: str, rdtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(query, server[0], port=server[1], timeout=3)
    return dns.query.udp(query, server[0], port=server[1], timeout=3)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_mx_and_a_for_a_receiver_domain(server: tuple[str, int], tcp: bool) -> None:
    mx = ask(server, "tls10.lab.test", "MX", tcp)
    assert [str(r.exchange) for r in mx.answer[0]] == ["mx.tls10.lab.test."]
    a = ask(server, "mx.tls10.lab.test", "A", tcp)
    assert [r.address for r in a.answer[0]] == ["127.0.0.1"]


def test_unknown_name_in_zone_is_nxdomain(server: tuple[str, int]) -> None:
    reply = ask(server, "tls99.lab.test", "MX")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert not reply.answer


def test_known_name_other_type_is_empty_noerror(server: tuple[str, int]) -> None:
    reply = ask(server, "mx.tls10.lab.test", "MX")
    assert reply.rcode() == dns.rcode.NOERROR
    assert not reply.answer


def test_names_outside_the_zone_are_refused(server: tuple[str, int]) -> None:
    reply = ask(server, "example.com", "A")
    assert reply.rcode() == dns.rcode.REFUSED


def test_garbage_gets_no_answer_and_server_survives(server: tuple[str, int]) -> None:
    assert LabZone("lab.test").answer(b"\x00garbage") is None
    query = dns.message.make_query("tls10.lab.test", "MX")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(b"\x00garbage", server)
        udp.sendto(query.to_wire(), server)  # datagrams are answered in order of arrival
        first, _ = udp.recvfrom(65535)
    # the first datagram back answers the query: the garbage before it got no answer
    reply = dns.message.from_wire(first)
    assert reply.id == query.id
    assert reply.answer


def test_zone_rejects_records_outside_it() -> None:
    zone = LabZone("lab.test")
    with pytest.raises(ValueError, match="not inside the zone"):
        zone.add_a("mx.example.com", "127.0.0.1")


def test_records_written_after_the_start_are_served(tmp_path: Path) -> None:
    """The DNS waits for its records file (the hosts' addresses come later), then serves it."""
    records = tmp_path / "records.json"
    command = [
        sys.executable, "-m", "lab.dns", "--host", "127.0.0.1", "--port", "0",
        "--a", "ns.lab.test=127.0.0.9", "--records-file", str(records), "--wait-for-zones", "20",
    ]  # fmt: skip
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            time.sleep(0.3)
            assert process.poll() is None, "it waits for the file"
            partial = tmp_path / "records.tmp"
            partial.write_text(
                json.dumps(
                    [
                        "--a",
                        "mx.tls10.lab.test=127.0.0.1",
                        "--mx",
                        "tls10.lab.test=mx.tls10.lab.test:10",
                    ]
                )
            )
            partial.replace(records)
            assert process.stdout is not None
            port = json.loads(process.stdout.readline())["dns_port"]
            assert json.loads(process.stdout.readline()) == {"ready": True}
            served = ("127.0.0.1", port)
            a = ask(served, "mx.tls10.lab.test", "A")
            assert [r.address for r in a.answer[0]] == ["127.0.0.1"]
            mx = ask(served, "tls10.lab.test", "MX")
            assert [str(r.exchange) for r in mx.answer[0]] == ["mx.tls10.lab.test."]
            own = ask(served, "ns.lab.test", "A")  # the command line's records stay
            assert [r.address for r in own.answer[0]] == ["127.0.0.9"]
            # negative control: a name the file does not hold
            assert ask(served, "mx.tls11.lab.test", "A").rcode() == dns.rcode.NXDOMAIN
        finally:
            process.terminate()
            process.wait(10)


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ('{"a": []}', "not a JSON list of strings"),
        ('["--ns", "x"]', "not a record"),
        ("not json", "cannot read"),
        (None, "was not written in time"),
    ],
)
def test_a_bad_or_missing_records_file_stops_the_dns(
    tmp_path: Path, content: str | None, said: str
) -> None:
    records = tmp_path / "records.json"
    if content is not None:
        records.write_text(content)
    command = [
        sys.executable, "-m", "lab.dns", "--host", "127.0.0.1", "--port", "0",
        "--records-file", str(records), "--wait-for-zones", "0.2",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert said in done.stderr
    assert "ready" not in done.stdout
