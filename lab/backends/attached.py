"""The `attached` backend: use the receivers of a running `tlslab up` (e.g. a public lab)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lab.backends.base import BackendError, RunningLab, SenderContainer, nothing
from lab.endpoints import ReceiverEndpoint
from lab.pki import LabPki
from lab.spec import ReceiverSpec

LAB_FILE_ENV = "TLSLAB_LAB"
DEFAULT_LAB_FILE = Path("evidence") / "lab.json"
HINT = (
    "start `tlslab up [--public ...] --evidence-dir DIR` and keep it running, then set "
    f"{LAB_FILE_ENV}=DIR/lab.json"
)


def lab_file(explicit: Path | None = None) -> Path:
    """Return the lab file: explicit, then $TLSLAB_LAB (a file or its folder), then the default."""
    path = explicit or Path(os.environ.get(LAB_FILE_ENV) or DEFAULT_LAB_FILE)
    return path / "lab.json" if path.is_dir() else path


def _alive(pid: int) -> bool:
    """Return True when a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_lab_file(path: Path) -> dict[str, Any]:
    """Read a lab file `tlslab up` wrote; raise BackendError when it is missing, stale or bad."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackendError(f"{path}: no running lab (file not found)", HINT) from None
    except (OSError, ValueError) as error:
        raise BackendError(f"{path}: unreadable lab file ({error})", HINT) from None
    if not isinstance(data, dict) or not isinstance(data.get("endpoints"), list):
        raise BackendError(f"{path}: field 'endpoints' missing", HINT)
    if not _alive(int(data.get("pid", 0))):
        raise BackendError(f"{path}: the `tlslab up` that wrote it is gone", HINT)
    return data


class AttachedBackend:
    """Starts nothing: yields the endpoints a running `tlslab up` recorded in its lab file."""

    name = "attached"

    def __init__(self, path: Path | None = None) -> None:
        """Use the lab file at `path` (default: $TLSLAB_LAB, then evidence/lab.json)."""
        self.path = path

    @contextlib.contextmanager
    def start(
        self,
        specs: Sequence[ReceiverSpec],
        pki: LabPki,
        evidence_root: Path,
        senders: Callable[[], Sequence[SenderContainer]] = tuple,
        meanwhile: Callable[[], None] = nothing,
    ) -> Iterator[RunningLab]:
        """Yield the running lab, after checking it serves every receiver the suite names."""
        meanwhile()  # the receivers already run: nothing boots
        path = lab_file(self.path)
        data = read_lab_file(path)
        endpoints = {}
        try:
            for raw in data["endpoints"]:
                endpoint = ReceiverEndpoint.from_json(raw)
                endpoints[endpoint.receiver] = endpoint
        except (KeyError, TypeError, ValueError) as error:
            raise BackendError(f"{path}: malformed endpoint ({error!r})", HINT) from None
        missing = [s.id for s in specs if s.id not in endpoints]
        if missing:
            raise BackendError(
                f"{path}: the running lab has no receiver {missing}",
                f"restart `tlslab up` with --receivers {','.join(s.id for s in specs)}",
            )
        try:
            running = LabPki(
                root=Path(data["certs"]),
                ca_cert_path=Path(data["ca"]),
                untrusted_ca_cert_path=Path(data["untrusted_ca"]),
                bundles=MappingProxyType({}),
            )
        except KeyError as error:
            raise BackendError(f"{path}: field {error} missing", HINT) from None
        wanted = {s.id: endpoints[s.id] for s in specs}
        yield RunningLab(self.name, MappingProxyType(wanted), running, evidence_root)
