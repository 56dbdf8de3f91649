"""The MTA-STS policy host: HTTPS for every `mta-sts.<domain>` of the lab; `python -m lab.sts_host`.

One server answers for all policy hosts: the certificate is chosen by SNI, the answer by the
`Host` header. Each site serves its policy, or its defect (404, a redirect, a self-signed
certificate). Every request is recorded as one JSON line (site, path, status) in `--log`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from lab.parent_watch import exit_with_parent
from lab.sts_spec import POLICY_PATH, PolicyHostDefect

REDIRECT_PATH = "/policy-moved/mta-sts.txt"  # where a redirecting site points (and serves)
REQUEST_LIMIT = 8192  # bytes of request line and headers read before answering 431
READ_TIMEOUT = 10.0


class PolicySite(BaseModel):
    """One policy host: its name, certificate, defect and policy body."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    host: str
    cert_path: Path
    key_path: Path
    defect: PolicyHostDefect
    body: str


SITES = TypeAdapter(list[PolicySite])


def _context(site: PolicySite) -> ssl.SSLContext:
    """Return the server TLS context presenting the site's certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(site.cert_path, site.key_path)
    return context


def server_context(sites: Sequence[PolicySite]) -> ssl.SSLContext:
    """Return a TLS context that switches to the site named by SNI (first site otherwise)."""
    contexts = {site.host: _context(site) for site in sites}
    default = _context(sites[0])

    def choose(sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        chosen = contexts.get((name or "").lower().rstrip("."))
        if chosen is not None:
            sock.context = chosen

    default.sni_callback = choose
    return default


def answer(site: PolicySite | None, path: str) -> tuple[int, dict[str, str], bytes]:
    """Return (status, headers, body) for a GET of `path` on `site` (None: unknown host)."""
    text = {"Content-Type": "text/plain; charset=utf-8"}
    if site is None:
        return 404, text, b"no such policy host\n"
    if path == POLICY_PATH and site.defect is PolicyHostDefect.REDIRECT:
        return 301, {**text, "Location": f"https://{site.host}{REDIRECT_PATH}"}, b"moved\n"
    if path == POLICY_PATH and site.defect is PolicyHostDefect.NOT_FOUND:
        return 404, text, b"not found\n"
    if path == POLICY_PATH or (path == REDIRECT_PATH and site.defect is PolicyHostDefect.REDIRECT):
        return 200, text, site.body.encode("utf-8")
    return 404, text, b"not found\n"


class PolicyHost:
    """Serves the sites over HTTPS and records each request in a JSON-lines log."""

    def __init__(self, sites: Sequence[PolicySite], log_path: Path) -> None:
        """Serve `sites`; append request records to `log_path`."""
        self.sites = {site.host: site for site in sites}
        self.context = server_context(sites)
        self.log_path = log_path

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer one HTTP/1.1 request, then close the connection."""
        record: dict[str, object] = {
            "at": time.time(),
            "peer": str(writer.get_extra_info("peername")),
        }
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
            method, path, host = _parse_head(head)
            site = self.sites.get(host)
            record.update(host=host, method=method, path=path)
            status, headers, body = (405, {}, b"") if method != "GET" else answer(site, path)
        except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            status, headers, body = 400, {}, b""
        except (ConnectionError, ssl.SSLError) as error:
            record.update(error=str(error))
            self._record(record)
            writer.close()
            return
        record["status"] = status
        self._record(record)
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            writer.write("\r\n".join(lines).encode("ascii") + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()

    def _record(self, record: dict[str, object]) -> None:
        """Append one request record to the log."""
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(record, sort_keys=True) + "\n")

    async def start(self, host: str, port: int) -> asyncio.Server:
        """Listen on (host, port); port 0 picks a free one."""
        return await asyncio.start_server(
            self.handle, host, port, ssl=self.context, limit=REQUEST_LIMIT,
            ssl_handshake_timeout=READ_TIMEOUT,
        )  # fmt: skip


_REASONS = {200: "OK", 301: "Moved Permanently", 400: "Bad Request", 404: "Not Found"}
_REASONS[405] = "Method Not Allowed"


def _parse_head(head: bytes) -> tuple[str, str, str]:
    """Return (method, path, host without port) of a request head; ValueError when malformed."""
    lines = head.decode("latin-1").split("\r\n")
    method, path, _version = lines[0].split(" ", 2)
    host = ""
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "host":
            host = value.strip().lower().rsplit(":", 1)[0] if "]" not in value else value.strip()
    return method, path, host.rstrip(".")


async def serve(
    sites: Sequence[PolicySite],
    log_path: Path,
    host: str,
    port: int,
    on_ready: Callable[[int], None],
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until `stop` is set (default: SIGINT/SIGTERM); `on_ready` gets the bound port."""
    loop = asyncio.get_running_loop()
    if stop is None:
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    server = await PolicyHost(sites, log_path).start(host, port)
    on_ready(int(server.sockets[0].getsockname()[1]))
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def _print_ready(port: int) -> None:
    """Print the bound port and the ready line the backends wait for."""
    print(json.dumps({"policy_host_port": port}), flush=True)
    print('{"ready": true}', flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the policy host from a JSON sites file until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m lab.sts_host", description=__doc__)
    parser.add_argument("--sites-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=443)
    parser.add_argument("--exit-with-parent", action="store_true")
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        exit_with_parent(sys.stdin.fileno())
    try:
        base = args.sites_file.parent  # relative certificate paths are beside the sites file
        sites = [
            site.model_copy(
                update={"cert_path": base / site.cert_path, "key_path": base / site.key_path}
            )
            for site in SITES.validate_json(args.sites_file.read_bytes())
        ]
        if not sites:
            raise ValueError("no sites")
        asyncio.run(serve(sites, args.log, args.host, args.port, _print_ready))
    except (ValidationError, ValueError, OSError, ssl.SSLError) as error:
        print(f"lab.sts_host: {args.sites_file}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
