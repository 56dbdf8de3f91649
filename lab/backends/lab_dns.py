"""Start the signed lab DNS for a run: build and sign the zones, serve them, always stop.

One lab DNS per run serves DANE (TLSA, DNSSEC) and MTA-STS (TXT, policy host A) records alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lab.backends.base import BackendError, stop_child
from lab.endpoints import ReceiverEndpoint
from lab.pki import LabPki
from lab.spec import ReceiverSpec

if TYPE_CHECKING:  # dnspython is imported only by runs that serve the lab DNS
    from lab.dns_zones import LabDns, ZoneSet

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
ZONES_DIR = "dns"  # under the run's evidence folder: the zones the lab served, kept as evidence


def needs_dns(specs: Sequence[ReceiverSpec]) -> bool:
    """Return True when a receiver publishes DANE or MTA-STS records (the lab then serves DNS)."""
    return any(spec.dane is not None or spec.sts is not None for spec in specs)


def endpoint_addresses(endpoints: Mapping[str, ReceiverEndpoint]) -> dict[str, str]:
    """Return where each MX host of running receivers listens (its A record)."""
    return {m.mx_host: m.host for e in endpoints.values() for m in e.mx}


def lab_zone_set(
    specs: Sequence[ReceiverSpec],
    addresses: Mapping[str, str],
    pki: LabPki,
    ns_address: str,
    policy_address: str | None = None,
) -> ZoneSet:
    """Return the signed zones: MX hosts' A at `addresses`, policy hosts' at `policy_address`."""
    from lab.dns_zones import build_zones

    leaves = {
        spec.id: pki.bundle(spec.id).cert_path.read_bytes()
        for spec in specs
        if spec.dane is not None
    }
    return build_zones(
        specs, addresses, ns_address, leaves, pki.ca_cert_path.read_bytes(),
        policy_address=policy_address,
    )  # fmt: skip


@contextlib.contextmanager
def local_dns(
    specs: Sequence[ReceiverSpec],
    addresses: Mapping[str, str],
    pki: LabPki,
    evidence_root: Path,
    host: str = "127.0.0.1",
    policy_address: str | None = None,
) -> Iterator[LabDns]:
    """Serve the run's signed zones from a `python -m lab.dns` child on `host`; always stop it."""
    from lab.backends.local import spawn  # the one spawner thread every lab child comes from
    from lab.dns_zones import LabDns

    zones = lab_zone_set(specs, addresses, pki, host, policy_address)
    folder = evidence_root / ZONES_DIR
    zones.write(folder)
    command = [
        sys.executable, "-m", "lab.dns", "--zones-dir", str(folder),
        "--host", host, "--port", "0", "--exit-with-parent",
    ]  # fmt: skip
    log_path = evidence_root / "dns.log"
    with log_path.open("ab") as log:
        process = spawn(command, log)
        try:
            port = _ready_port(process, log_path)
            yield LabDns(host, port, zones.trust_anchor, folder)
        finally:
            stop_child(process, STOP_TIMEOUT)


def _ready_port(process: subprocess.Popen[bytes], log_path: Path) -> int:
    """Read the child's ready line (bounded by READY_TIMEOUT) and return the port it bound."""
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(
                    f"lab DNS not ready after {READY_TIMEOUT:.0f} s", f"see {log_path}"
                )
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise BackendError(
                    f"lab DNS exited with status {process.wait()}: {' | '.join(tail)}",
                    f"see {log_path}",
                )
            buffer += chunk
    ready = json.loads(buffer.split(b"\n", 1)[0])
    return int(ready["port"])
