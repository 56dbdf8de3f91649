"""Where running receivers listen (the endpoints `tlslab up --json` prints) and the specs file.

Both sides of the receiver process use these: kept apart from lab.serve, so a harness that only
reads endpoints does not import the receivers' code.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from lab.spec import ReceiverSpec

__all__ = ["SPECS", "MxEndpoint", "ReceiverEndpoint", "write_specs_file"]

SPECS = TypeAdapter(list[ReceiverSpec])


@dataclasses.dataclass(frozen=True)
class MxEndpoint:
    """One MX host of a running receiver: its name, MX preference and where it listens."""

    mx_host: str
    preference: int
    host: str
    port: int


@dataclasses.dataclass(frozen=True)
class ReceiverEndpoint:
    """Where one running receiver listens and where its evidence lands.

    `host`, `port` and `mx_host` are its most preferred MX; `mx` lists every MX host, most
    preferred first (one entry for a receiver with a single MX).
    """

    receiver: str
    host: str
    port: int
    mx_host: str
    domain: str
    evidence_dir: Path
    mx: tuple[MxEndpoint, ...] = ()

    def __post_init__(self) -> None:
        """Fill in the single-MX list when no MX list was given."""
        if not self.mx:
            only = MxEndpoint(self.mx_host, 10, self.host, self.port)
            object.__setattr__(self, "mx", (only,))

    def as_json(self) -> dict[str, Any]:
        """Return the endpoint as the JSON object `tlslab up --json` prints (contract 4).

        A receiver with several MX hosts adds `mx`: each host's mx_host, preference, host, port.
        """
        data = dataclasses.asdict(self)
        data["evidence_dir"] = str(self.evidence_dir)
        if len(self.mx) == 1:
            del data["mx"]  # the contract's keys exactly, as before MX lists existed
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReceiverEndpoint:
        """Rebuild an endpoint from its JSON object."""
        return cls(
            receiver=str(data["receiver"]),
            host=str(data["host"]),
            port=int(data["port"]),
            mx_host=str(data["mx_host"]),
            domain=str(data["domain"]),
            evidence_dir=Path(str(data["evidence_dir"])),
            mx=tuple(
                MxEndpoint(str(m["mx_host"]), int(m["preference"]), str(m["host"]), int(m["port"]))
                for m in data.get("mx", ())
            ),
        )

    @classmethod
    def of(cls, spec: ReceiverSpec, evidence_dir: Path, mx: list[MxEndpoint]) -> ReceiverEndpoint:
        """Return the endpoint of `spec` whose MX hosts listen as `mx` (most preferred first)."""
        first = mx[0]
        return cls(
            spec.id, first.host, first.port, first.mx_host, spec.domain, evidence_dir, tuple(mx)
        )


def write_specs_file(specs: Sequence[ReceiverSpec], folder: Path) -> Path:
    """Write specs as JSON to a new world-readable file in `folder` (for `--specs-file`)."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=".receiver-specs-", suffix=".json")
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), 0o644)  # a lab container may run as another user
        file.write(SPECS.dump_json(list(specs)))
    return Path(name)
