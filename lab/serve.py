"""Run a set of receivers in one event loop until SIGINT/SIGTERM; `python -m lab.serve`."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from lab.evidence_store import EvidenceStore
from lab.pki import CertificateError, LabPki, load_certs
from lab.receiver import LabSMTP, build_tls_context
from lab.spec import ReceiverSpec

SPECS = TypeAdapter(list[ReceiverSpec])


@dataclasses.dataclass(frozen=True)
class ReceiverEndpoint:
    """Where one running receiver listens and where its evidence lands."""

    receiver: str
    host: str
    port: int
    mx_host: str
    domain: str
    evidence_dir: Path

    def as_json(self) -> dict[str, Any]:
        """Return the endpoint as the JSON object `tlslab up --json` prints (contract 4)."""
        data = dataclasses.asdict(self)
        data["evidence_dir"] = str(self.evidence_dir)
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
        )


async def start_receivers(
    specs: Sequence[ReceiverSpec],
    pki: LabPki,
    evidence_root: Path,
    host: str,
    port: int = 0,
    live: set[LabSMTP] | None = None,
) -> tuple[list[asyncio.Server], list[ReceiverEndpoint]]:
    """Start one SMTP server per spec on `host` (port 0 picks a free one); return servers+ends."""
    live = set() if live is None else live
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    endpoints: list[ReceiverEndpoint] = []
    try:
        for spec in specs:
            store = EvidenceStore(evidence_root, spec.id)
            context = None
            if spec.starttls:
                bundle = pki.bundle(spec.id)
                context = build_tls_context(spec, bundle.cert_path, bundle.key_path)
            server = await loop.create_server(
                _protocol_factory(spec, store, context, loop, live), host=host, port=port
            )
            servers.append(server)
            bound_port = server.sockets[0].getsockname()[1]
            endpoints.append(
                ReceiverEndpoint(
                    spec.id, host, bound_port, spec.mx_host, spec.domain, store.directory
                )
            )
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers, endpoints


def _protocol_factory(
    spec: ReceiverSpec,
    store: EvidenceStore,
    context: Any,
    loop: asyncio.AbstractEventLoop,
    live: set[LabSMTP],
) -> Callable[[], LabSMTP]:
    """Return a factory making one LabSMTP protocol per connection, tracked in `live`."""

    def factory() -> LabSMTP:
        return LabSMTP(spec, store, tls_context=context, loop=loop, timeout=60, live=live)

    return factory


def quiet_library_logs() -> None:
    """Keep aiosmtpd's log (which echoes raw peer bytes) off the terminal; records keep all."""
    library = logging.getLogger("mail.log")
    library.addHandler(logging.NullHandler())
    library.propagate = False


async def serve_until_signalled(
    specs: Sequence[ReceiverSpec],
    pki: LabPki,
    evidence_root: Path,
    host: str,
    on_ready: Callable[[list[ReceiverEndpoint]], None],
    port: int = 0,
) -> None:
    """Serve the receivers until SIGINT or SIGTERM, then close every server cleanly."""
    quiet_library_logs()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    live: set[LabSMTP] = set()
    servers, endpoints = await start_receivers(specs, pki, evidence_root, host, port, live)
    try:
        on_ready(endpoints)
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for protocol in list(live):
            protocol.close_connection()
        for server in servers:
            await server.wait_closed()


def print_endpoints_json(endpoints: list[ReceiverEndpoint]) -> None:
    """Print one JSON object per receiver, then `{"ready": true}` (contract 4)."""
    for endpoint in endpoints:
        print(json.dumps(endpoint.as_json()), flush=True)
    print(json.dumps({"ready": True}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve receivers given as JSON specs; used by the local and Docker backends."""
    parser = argparse.ArgumentParser(prog="python -m lab.serve", description=__doc__)
    parser.add_argument("--specs-json", required=True, help="JSON list of receiver specs")
    parser.add_argument("--certs-dir", type=Path, required=True)
    parser.add_argument("--evidence-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        specs = SPECS.validate_json(args.specs_json)
        pki = load_certs(specs, args.certs_dir)
    except (ValidationError, CertificateError) as error:
        print(f"lab.serve: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            serve_until_signalled(
                specs, pki, args.evidence_dir, args.host, print_endpoints_json, args.port
            )
        )
    except OSError as error:
        print(f"lab.serve: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
