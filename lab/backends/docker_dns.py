"""The lab DNS of a Docker run: unsigned, or signed behind a validating resolver (unbound)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode

from lab.backends.base import BackendError
from lab.backends.docker_ready import log_tail
from lab.backends.lab_dns import ZONES_DIR, endpoint_addresses, lab_zone_set
from lab.dns_zones import LabDns, ZoneSet
from lab.endpoints import ReceiverEndpoint
from lab.pki import LabPki
from lab.spec import LAB_ZONE, ReceiverSpec

DNS_PORT = 53
READY_TIMEOUT = 30.0
RESOLVER_DIR = "resolver"  # under the evidence folder: the unbound.conf the run used
RECORDS_DIR = "lab-dns"  # under the evidence folder: the unsigned lab DNS's records file
RECORDS_FILE = "records.json"


def start_plain_dns(
    run: Callable[..., Any], address_of: Callable[[Any], str], image: str, evidence_root: Path
) -> tuple[Any, str]:
    """Start the unsigned lab DNS before its records exist; return its container and address.

    It waits (bounded) for the records file `publish_records` writes, then serves and prints
    its ready line; its address is known as soon as it started, so sender containers that
    resolve through it can start while the receivers boot.
    """
    folder = evidence_root / RECORDS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        "python", "-m", "lab.dns", "--zone", LAB_ZONE, "--records-file", f"/records/{RECORDS_FILE}",
        "--wait-for-zones", str(READY_TIMEOUT), "--host", "0.0.0.0", "--port", str(DNS_PORT),
    ]  # fmt: skip
    container = run(
        "dns", image, command, volumes={str(folder.resolve()): {"bind": "/records", "mode": "ro"}}
    )
    container.reload()  # its address on the lab network, given when it started
    return container, address_of(container)


def publish_records(
    evidence_root: Path, specs: Sequence[ReceiverSpec], endpoints: Mapping[str, ReceiverEndpoint]
) -> None:
    """Write the unsigned lab DNS's records: an A and an MX record for every MX host."""
    arguments: list[str] = []
    for spec in specs:
        for mx in endpoints[spec.id].mx:
            arguments += ["--a", f"{mx.mx_host}={mx.host}"]
            arguments += ["--mx", f"{spec.domain}={mx.mx_host}:{mx.preference}"]
    folder = evidence_root / RECORDS_DIR
    partial = folder / f".{RECORDS_FILE}.partial"
    partial.write_text(json.dumps(arguments))
    partial.replace(folder / RECORDS_FILE)  # the DNS sees the whole file or none of it


def unbound_config(zones: ZoneSet, dns_address: str) -> str:
    """Return unbound.conf: validate from the lab anchor, every lab zone stubbed to the lab DNS.

    No root anchor and no root hints are used (the lab is offline); unbound's built-in static
    `test.` zone (RFC 6761) would answer NXDOMAIN for lab.test, so it is removed (`nodefault`).
    """
    lines = [
        "server:",
        "  interface: 0.0.0.0",
        f"  port: {DNS_PORT}",
        "  do-ip6: no",
        "  do-daemonize: no",
        '  username: ""',
        '  chroot: ""',
        '  pidfile: ""',
        '  directory: "/tmp"',
        '  logfile: ""',
        "  use-syslog: no",
        "  verbosity: 1",
        "  val-log-level: 2",
        "  log-servfail: yes",
        "  access-control: 0.0.0.0/0 allow",
        '  module-config: "validator iterator"',
        f"  trust-anchor: {zones.trust_anchor.unbound_line()}",
        '  local-zone: "test." nodefault',
        "  cache-max-ttl: 5",
        "  cache-max-negative-ttl: 5",
    ]
    for zone in zones.zones:
        assert zone.origin is not None
        name = zone.origin.to_text()
        lines += ["stub-zone:", f'  name: "{name}"', f"  stub-addr: {dns_address}"]
    return "\n".join(lines) + "\n"


def start_dns_and_resolver(
    run: Callable[..., Any],
    address_of: Callable[[Any], str],
    images: Mapping[str, str],
    specs: Sequence[ReceiverSpec],
    endpoints: Mapping[str, ReceiverEndpoint],
    pki: LabPki,
    evidence_root: Path,
    policy_address: str | None = None,
) -> tuple[LabDns, str]:
    """Start the signed lab DNS and unbound; return the LabDns and the DNS address.

    `policy_address` is the MTA-STS policy host's (the A record of every `mta-sts.<domain>`).

    The DNS container starts first and waits for its zones, because the zones name its address
    (`ns.lab.test`); the resolver starts once the DNS answers, and is ready when it validates.
    """
    zones_dir = evidence_root / ZONES_DIR
    zones_dir.mkdir(parents=True, exist_ok=True)
    command = [
        "python", "-m", "lab.dns", "--zones-dir", "/zones", "--wait-for-zones", str(READY_TIMEOUT),
        "--host", "0.0.0.0", "--port", str(DNS_PORT),
    ]  # fmt: skip
    dns_container = run(
        "dns", images["lab"], command,
        volumes={str(zones_dir.resolve()): {"bind": "/zones", "mode": "ro"}},
    )  # fmt: skip
    dns_address = _address_when_up(dns_container, address_of)
    zones = lab_zone_set(specs, endpoint_addresses(endpoints), pki, dns_address, policy_address)
    zones.write(zones_dir)
    _wait_answers(dns_address, dns_container, validated=False)
    resolver_dir = evidence_root / RESOLVER_DIR
    resolver_dir.mkdir(parents=True, exist_ok=True)
    (resolver_dir / "unbound.conf").write_text(unbound_config(zones, dns_address))
    resolver = run(
        "resolver", images["resolver"], ["unbound", "-d", "-c", "/resolver/unbound.conf"],
        volumes={str(resolver_dir.resolve()): {"bind": "/resolver", "mode": "ro"}},
    )  # fmt: skip
    resolver_address = _address_when_up(resolver, address_of)
    _wait_answers(resolver_address, resolver, validated=True)
    lab_dns = LabDns(dns_address, DNS_PORT, zones.trust_anchor, zones_dir, resolver_address)
    return lab_dns, dns_address


def _address_when_up(container: Any, address_of: Callable[[Any], str]) -> str:
    """Wait (bounded) until the container runs and has its lab address."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            raise BackendError(f"{container.name} exited: {log_tail(container)}", "see its log")
        if container.status == "running":
            return address_of(container)
        time.sleep(0.05)
    raise BackendError(f"{container.name} did not start: {log_tail(container)}", "check the engine")


def _wait_answers(address: str, container: Any, *, validated: bool) -> None:
    """Wait (bounded) until the server answers SOA lab.test (validated: with the AD bit)."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        query = dns.message.make_query(LAB_ZONE, "SOA", want_dnssec=True)
        if validated:
            query.flags |= dns.flags.AD
        try:
            reply = dns.query.udp(query, address, port=DNS_PORT, timeout=1)
        except (dns.exception.DNSException, OSError) as error:
            last = str(error) or type(error).__name__
        else:
            ok = reply.rcode() == dns.rcode.NOERROR and reply.answer
            if ok and (not validated or reply.flags & dns.flags.AD):
                return
            last = f"{dns.rcode.to_text(reply.rcode())}, flags {dns.flags.to_text(reply.flags)}"
        container.reload()
        if container.status == "exited":
            break
        time.sleep(0.1)
    raise BackendError(
        f"{container.name} at {address} does not answer SOA {LAB_ZONE}"
        f"{' with AD' if validated else ''} ({last}): {log_tail(container)}",
        "see the container log; the lab DNS and unbound configuration are in the evidence folder",
    )
