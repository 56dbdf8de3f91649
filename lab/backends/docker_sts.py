"""The MTA-STS policy host on the Docker backend: one container on the lab network, port 443."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from lab.pki import LabPki
from lab.spec import ReceiverSpec
from lab.sts_sites import build_sites, sts_specs, write_sites_file

HTTPS_PORT = 443


class _Lab(Protocol):
    """What this module needs of the Docker backend's run: start a container, wait for it."""

    pki: LabPki
    evidence_root: Path
    images: dict[str, str]
    temp_dirs: list[Path]

    def _run(self, name: str, image: str, command: list[str], **options: Any) -> Any: ...

    def _wait_ready(self, container: Any, what: str) -> str: ...


def start_policy_host(lab: _Lab, specs: Sequence[ReceiverSpec], uid: int) -> str | None:
    """Start the policy host container when a spec publishes MTA-STS; return its address."""
    if not sts_specs(specs):
        return None
    folder = Path(tempfile.mkdtemp(prefix="tlslab-sts-"))
    lab.temp_dirs.append(folder)
    write_sites_file(build_sites(specs, lab.pki, folder), folder / "sites.json")
    if os.getuid() == 0:  # the container runs unprivileged: it must read its keys
        for path in [folder, *folder.iterdir()]:
            os.chown(path, uid, uid)
    command = [
        "python", "-m", "lab.sts_host", "--sites-file", "/sts/sites.json",
        "--log", "/evidence/policy-host-requests.jsonl", "--host", "0.0.0.0",
        "--port", str(HTTPS_PORT),
    ]  # fmt: skip
    container = lab._run(
        "policy-host",
        lab.images["lab"],
        command,
        volumes={
            str(folder): {"bind": "/sts", "mode": "ro"},
            str(lab.evidence_root.resolve()): {"bind": "/evidence", "mode": "rw"},
        },
    )
    return lab._wait_ready(container, "MTA-STS policy host")


def remove_temp_dirs(folders: list[Path]) -> None:
    """Remove the policy host's private folders (certificates and keys)."""
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
