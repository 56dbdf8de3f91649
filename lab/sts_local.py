"""The MTA-STS services on loopback for the local backend: the policy host and a lab DNS."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lab.backends.base import BackendError
from lab.pki import LabPki
from lab.spec import LAB_ZONE, ReceiverSpec
from lab.sts_sites import build_sites, sts_dns_arguments, sts_specs, write_sites_file

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0


@dataclasses.dataclass(frozen=True)
class StsServices:
    """Where the lab DNS and the policy host (every `mta-sts.<domain>`) listen."""

    dns: tuple[str, int]
    policy_host: tuple[str, int]
    request_log: Path  # the policy host's JSON lines, one per HTTPS request


def dns_arguments(specs: Sequence[ReceiverSpec], address: str) -> list[str]:
    """Return `python -m lab.dns` arguments: every host at `address`, MX and MTA-STS records."""
    argv: list[str] = []
    for spec in specs:
        for route in spec.mx_routes:
            argv += ["--mx", f"{spec.domain}={route.host}:{route.preference}"]
            argv += ["--a", f"{route.host}={address}"]
    return argv + sts_dns_arguments(specs, address)


@contextlib.contextmanager
def local_sts_services(
    specs: Sequence[ReceiverSpec], pki: LabPki, evidence_root: Path, host: str
) -> Iterator[StsServices | None]:
    """Start the policy host and lab DNS on `host` when a spec publishes MTA-STS; always stop."""
    if not sts_specs(specs):
        yield None
        return
    from lab.backends.local import spawn  # local imports this module: import at call time

    request_log = evidence_root / "policy-host-requests.jsonl"
    log_path = evidence_root / "sts-services.log"
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tlslab-sts-")))
        sites_file = write_sites_file(build_sites(specs, pki, folder), folder / "sites.json")
        log = stack.enter_context(log_path.open("ab"))
        https = spawn([sys.executable, "-m", "lab.sts_host", "--sites-file", str(sites_file),
                       "--log", str(request_log), "--host", host, "--port", "0",
                       "--exit-with-parent"], log)  # fmt: skip
        stack.callback(_stop, https)
        https_port = int(_read_ready(https, log_path)["policy_host_port"])
        records = dns_arguments(specs, host)
        dns = spawn([sys.executable, "-m", "lab.dns", "--zone", LAB_ZONE, "--host", host,
                     "--port", "0", *records], log)  # fmt: skip
        stack.callback(_stop, dns)
        dns_port = int(_read_ready(dns, log_path)["dns_port"])
        yield StsServices((host, dns_port), (host, https_port), request_log)


def _read_ready(process: subprocess.Popen[bytes], log_path: Path) -> dict[str, Any]:
    """Read JSON lines until `{"ready": true}` (bounded); return the other lines merged."""
    assert process.stdout is not None
    found: dict[str, Any] = {}
    deadline, buffer = time.monotonic() + READY_TIMEOUT, b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(f"MTA-STS services not ready after {READY_TIMEOUT:.0f} s",
                                   f"see {log_path}")  # fmt: skip
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise BackendError(f"an MTA-STS service exited with status {process.wait()}",
                                   f"see {log_path}")  # fmt: skip
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                data = json.loads(line)
                if data.get("ready") is True:
                    return found
                found.update(data)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a service child (SIGTERM, then SIGKILL after STOP_TIMEOUT); close its pipes."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            pipe.close()
