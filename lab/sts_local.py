"""The MTA-STS policy host on loopback for the local backend (its records are in the lab DNS)."""

from __future__ import annotations

import contextlib
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

from lab.backends.base import BackendError, stop_child
from lab.pki import LabPki
from lab.spec import ReceiverSpec

READY_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
REQUEST_LOG = "policy-host-requests.jsonl"  # the policy host's JSON lines, one per request


@contextlib.contextmanager
def local_policy_host(
    specs: Sequence[ReceiverSpec], pki: LabPki, evidence_root: Path, host: str
) -> Iterator[tuple[str, int] | None]:
    """Start the policy host on `host` when a spec publishes MTA-STS; yield (address, port)."""
    if all(spec.sts is None for spec in specs):  # as lab.sts_sites.sts_specs, not imported
        yield None
        return
    from lab.backends.local import spawn  # local imports this module: import at call time
    from lab.sts_sites import build_sites, write_sites_file  # the policy host's (asyncio) models

    log_path = evidence_root / "policy-host.log"
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tlslab-sts-")))
        sites_file = write_sites_file(build_sites(specs, pki, folder), folder / "sites.json")
        log = stack.enter_context(log_path.open("ab"))
        https = spawn([sys.executable, "-m", "lab.sts_host", "--sites-file", str(sites_file),
                       "--log", str(evidence_root / REQUEST_LOG), "--host", host, "--port", "0",
                       "--exit-with-parent"], log)  # fmt: skip
        stack.callback(stop_child, https, STOP_TIMEOUT)
        yield host, int(_read_ready(https, log_path)["policy_host_port"])


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
                raise BackendError(f"MTA-STS policy host not ready after {READY_TIMEOUT:.0f} s",
                                   f"see {log_path}")  # fmt: skip
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise BackendError(f"the MTA-STS policy host exited with status {process.wait()}",
                                   f"see {log_path}")  # fmt: skip
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                data = json.loads(line)
                if data.get("ready") is True:
                    return found
                found.update(data)
