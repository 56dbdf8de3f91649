"""Run a set of receivers in one event loop until SIGINT/SIGTERM; `python -m lab.serve`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
import sys
import tempfile
import threading
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from lab.endpoints import SPECS, MxEndpoint, ReceiverEndpoint, write_specs_file
from lab.evidence_store import EvidenceStore
from lab.greylist import GreylistTracker
from lab.limits import SessionRegistry
from lab.parent_watch import exit_with_parent
from lab.pki import CertificateError, LabPki, load_certs
from lab.receiver import LabSMTP, build_tls_context
from lab.spec import ReceiverSpec

__all__ = [  # the endpoint names stay importable from here, where they were first defined
    "SPECS", "MxEndpoint", "ObservedStore", "ReceiverEndpoint", "main", "print_endpoints_json",
    "quiet_library_logs", "serve_until_signalled", "start_receivers", "write_specs_file",
]  # fmt: skip
WRITER_THREADS = 32  # concurrent durable writes (each mostly waits for its fsync)
STOP_GRACE = 3.0  # seconds open sessions get to close and records to be written on shutdown
EVENT_LOOP_VARIABLE = "TLSLAB_EVENT_LOOP"  # `asyncio`: the standard library's loop, not uvloop


class ObservedStore(EvidenceStore):
    """An EvidenceStore that also hands each stored session record to `on_session` (a live log)."""

    def __init__(
        self, root: Path, receiver: str, on_session: Callable[[dict[str, Any]], None]
    ) -> None:
        """Store under `<root>/<receiver>/` and report every session record once it is durable."""
        super().__init__(root, receiver)
        self.on_session = on_session
        self._report_lock = threading.Lock()  # records are appended from worker threads

    def append_session(self, record: dict[str, Any]) -> None:
        """Append the record durably, then report it; a failing log never costs the evidence."""
        super().append_session(record)
        with self._report_lock, contextlib.suppress(OSError):  # e.g. the terminal went away
            self.on_session(record)


async def start_receivers(
    specs: Sequence[ReceiverSpec],
    pki: LabPki,
    evidence_root: Path,
    host: str,
    port: int = 0,
    sessions: SessionRegistry | None = None,
    binds: Mapping[str, tuple[str, int]] | None = None,
    on_session: Callable[[dict[str, Any]], None] | None = None,
    only_mx: str | None = None,
) -> tuple[list[asyncio.Server], list[ReceiverEndpoint]]:
    """Start one SMTP server per MX host of each spec on `host` (or its `binds` entry).

    Port 0 picks a free port per MX host; `only_mx` serves that one MX host alone (a container).
    """
    sessions = SessionRegistry() if sessions is None else sessions
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    endpoints: list[ReceiverEndpoint] = []
    try:
        for spec in specs:
            store = (
                EvidenceStore(evidence_root, spec.id)
                if on_session is None
                else ObservedStore(evidence_root, spec.id, on_session)
            )
            bind_host, bind_port = (binds or {}).get(spec.id, (host, port))
            greylist = GreylistTracker(spec.greylist.first_attempts) if spec.greylist else None
            routes = [r for r in spec.mx_routes if only_mx in (None, r.host)]
            # behind a proxy the receiver listens on loopback; the MX address is the proxy's
            behind = spec.proxy is not None
            mx: list[MxEndpoint] = []
            for route in routes:
                context = _tls_context(spec, pki) if route.starttls else None
                server = await loop.create_server(
                    _protocol_factory(spec, store, context, loop, sessions, route.host, greylist),
                    host="127.0.0.1" if behind else bind_host,
                    port=0 if behind else bind_port,
                )
                servers.append(server)
                bound_port = server.sockets[0].getsockname()[1]
                if behind:
                    from lab.mitm import MitmProxy  # only a proxied receiver needs it

                    proxy = MitmProxy(spec, ("127.0.0.1", bound_port), store.directory, sessions)
                    server = await proxy.start(bind_host, bind_port)
                    servers.append(server)
                    bound_port = server.sockets[0].getsockname()[1]
                mx.append(MxEndpoint(route.host, route.preference, bind_host, bound_port))
            if mx:
                endpoints.append(ReceiverEndpoint.of(spec, store.directory, mx))
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers, endpoints


def _tls_context(spec: ReceiverSpec, pki: LabPki) -> ssl.SSLContext:
    """Return the receiver's TLS context from its bundle (with its no-SNI pair, if it has one)."""
    bundle = pki.bundle(spec.id)
    no_sni = None
    if bundle.no_sni_cert_path is not None and bundle.no_sni_key_path is not None:
        no_sni = (bundle.no_sni_cert_path, bundle.no_sni_key_path)
    if spec.dane is not None and spec.dane.send_ca:  # DANE-TA: the lab CA follows the leaf
        with tempfile.TemporaryDirectory(prefix="tlslab-chain-") as folder:
            chain = Path(folder) / "chain.pem"
            chain.write_bytes(bundle.cert_path.read_bytes() + pki.ca_cert_path.read_bytes())
            return build_tls_context(spec, chain, bundle.key_path, no_sni)
    return build_tls_context(spec, bundle.cert_path, bundle.key_path, no_sni)


def _protocol_factory(
    spec: ReceiverSpec,
    store: EvidenceStore,
    context: Any,
    loop: asyncio.AbstractEventLoop,
    sessions: SessionRegistry,
    mx_host: str,
    greylist: GreylistTracker | None,
) -> Callable[[], LabSMTP]:
    """Return a factory making one LabSMTP protocol per connection, tracked in `sessions`."""

    def factory() -> LabSMTP:
        return LabSMTP(spec, store, sessions, mx_host, greylist, tls_context=context, loop=loop)

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
    binds: Mapping[str, tuple[str, int]] | None = None,
    on_session: Callable[[dict[str, Any]], None] | None = None,
    only_mx: str | None = None,
) -> None:
    """Serve the receivers until SIGINT or SIGTERM, then close every server cleanly."""
    quiet_library_logs()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # evidence writes block in threads; enough of them that concurrent sessions share fsyncs
    loop.set_default_executor(ThreadPoolExecutor(WRITER_THREADS, "evidence"))
    sessions = SessionRegistry()
    servers, endpoints = await start_receivers(
        specs, pki, evidence_root, host, port, sessions, binds, on_session, only_mx
    )
    try:
        on_ready(endpoints)
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        for protocol in list(sessions.live):
            protocol.close_connection()
        await sessions.drain(STOP_GRACE)
        for server in servers:
            await server.wait_closed()


def print_endpoints_json(endpoints: list[ReceiverEndpoint]) -> None:
    """Print one JSON object per receiver, then `{"ready": true}` (contract 4)."""
    for endpoint in endpoints:
        print(json.dumps(endpoint.as_json()), flush=True)
    print(json.dumps({"ready": True}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve receivers given as a JSON specs file; used by the local and Docker backends."""
    parser = argparse.ArgumentParser(prog="python -m lab.serve", description=__doc__)
    parser.add_argument("--specs-file", type=Path, required=True, help="JSON list of specs")
    parser.add_argument("--certs-dir", type=Path, required=True)
    parser.add_argument("--evidence-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mx-host", help="serve only this MX host of the receivers")
    parser.add_argument(
        "--receiver", metavar="ID",
        help="serve only this receiver of the file; every receiver's certificates are checked",
    )  # fmt: skip
    parser.add_argument(
        "--exit-with-parent", action="store_true",
        help="stop when the parent dies or closes this process's standard input",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        exit_with_parent(sys.stdin.fileno())
    try:
        every = SPECS.validate_json(args.specs_file.read_bytes())
        specs = [spec for spec in every if args.receiver in (None, spec.id)]
        if not specs:
            print(f"lab.serve: no receiver {args.receiver!r} in {args.specs_file}", file=sys.stderr)
            return 2
        # the harness checked the file's whole set: that set finds its recorded pass, and
        # without one only the receivers served here are checked in full
        pki = load_certs(every, args.certs_dir, only=specs)
    except (ValidationError, CertificateError, OSError) as error:
        print(f"lab.serve: {error}", file=sys.stderr)
        return 2
    try:
        run_event_loop(
            serve_until_signalled(
                specs,
                pki,
                args.evidence_dir,
                args.host,
                print_endpoints_json,
                args.port,
                only_mx=args.mx_host,
            )
        )
    except OSError as error:
        print(f"lab.serve: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 2
    return 0


def run_event_loop(main: Coroutine[Any, Any, None]) -> str:
    """Run `main` to completion on uvloop's event loop; return the loop's name.

    uvloop (libuv, in C) costs the receiver about an eighth less CPU per SMTP session than
    asyncio's selector loop; the protocols, the TLS layer and the evidence are the same code.
    TLSLAB_EVENT_LOOP=asyncio, or an environment without uvloop, runs asyncio's own loop.
    """
    uvloop = event_loop_module()
    if uvloop is not None:
        uvloop.run(main)
        return "uvloop"
    asyncio.run(main)
    return "asyncio"


def event_loop_module() -> ModuleType | None:
    """Import and return uvloop unless TLSLAB_EVENT_LOOP=asyncio or it is missing; else None."""
    if os.environ.get(EVENT_LOOP_VARIABLE) == "asyncio":
        return None
    try:
        import uvloop  # imported here: the harness that forks this process never needs it
    except ImportError:
        return None
    return uvloop


if __name__ == "__main__":
    sys.exit(main())
