"""`tlslab up` beyond loopback: --public, --domain, --bind, --bind-all, --cert; DNS, live log."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from harness.printable import printable
from lab.backends.base import BackendError
from lab.pki import LabPki
from lab.real_certs import check_real_cert, with_real_certs
from lab.serve import ReceiverEndpoint, serve_until_signalled
from lab.session_facts import Handshake, SessionFacts
from lab.spec import LAB_ZONE, CertState, ReceiverSpec

DEFAULT_HOST = "127.0.0.1"
SMTP_PORT = 25
BIND_ALL_FIRST_PORT = 2525
LAB_FILE = "lab.json"
BOUNCE_MX_PREFERENCE = ("tls13", "tls12")
PORT_HINT = "port 25 needs root or CAP_NET_BIND_SERVICE; or bind a high port and forward 25 to it"


def add_options(up: argparse.ArgumentParser) -> None:
    """Add the options that take receivers off loopback (all off by default)."""
    up.add_argument("--public", action="store_true",
                    help="listen on non-loopback addresses for a real sender (needs --domain, "
                         "and --bind or --bind-all)")  # fmt: skip
    up.add_argument("--domain", help=f"the lab's DNS zone (default: {LAB_ZONE})")
    up.add_argument("--bind", action="append", default=[], metavar="RECEIVER=ADDRESS[:PORT]",
                    help="where one receiver listens (port default 25); repeatable")  # fmt: skip
    up.add_argument("--bind-all", metavar="ADDRESS[:PORT]",
                    help=f"every other receiver on ADDRESS, consecutive ports from PORT "
                         f"(default {BIND_ALL_FIRST_PORT}), for port forwarding")  # fmt: skip
    up.add_argument("--cert", action="append", default=[], metavar="RECEIVER=CERT.pem:KEY.pem",
                    help="a real certificate chain and key for a valid state")  # fmt: skip


def _usage(option: str, value: str, problem: str, fix: str) -> BackendError:
    """Return a one-line usage error naming the option, its value and the fix."""
    return BackendError(f"option {option} {value!r}: {problem}", fix)


def parse_address(option: str, text: str, default_port: int) -> tuple[str, int]:
    """Parse `ADDRESS[:PORT]` (IPv6 as `[::1]:2525`); addresses must be IP literals."""
    host, port = text, str(default_port)
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        fix = "write e.g. 203.0.113.10, 203.0.113.10:2525 or [2001:db8::1]:25"
        raise _usage(option, text, "not ADDRESS[:PORT] with an IP address", fix) from None
    if not 0 < number < 65536:
        raise _usage(option, text, "port out of range", "use a port from 1 to 65535")
    return host, number


def is_loopback(host: str) -> bool:
    """Return True for `localhost` and loopback IP addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class UpPlan:
    """Which receivers `up` serves, in which zone, where, and with which certificates."""

    specs: list[ReceiverSpec]
    zone: str
    certs: Path
    public: bool
    binds: dict[str, tuple[str, int]]
    real_certs: dict[str, tuple[Path, Path]]

    def with_certs(self, pki: LabPki) -> LabPki:
        """Return the PKI with real certificates in place of the lab's, where given."""
        return with_real_certs(pki, self.specs, self.real_certs)

    def serve(
        self,
        pki: LabPki,
        evidence: Path,
        host: str,
        on_ready: Callable[[list[ReceiverEndpoint]], None],
        live_log: bool,
    ) -> None:
        """Serve until SIGINT/SIGTERM; announce DNS records and `lab.json`, then a live log."""

        def ready(endpoints: list[ReceiverEndpoint]) -> None:
            if self.public:
                out = sys.stderr if not live_log else sys.stdout
                print("\n".join(self.announcement(endpoints)), file=out, flush=True)
            write_lab_file(evidence, self.zone, pki, endpoints)
            on_ready(endpoints)

        on_session = print_session if live_log else None
        try:
            asyncio.run(
                serve_until_signalled(
                    self.specs, pki, evidence, host, ready, binds=self.binds, on_session=on_session
                )
            )
        except OSError as error:
            where = ", ".join(f"{r}={h}:{p}" for r, (h, p) in self.binds.items()) or host
            raise BackendError(f"cannot listen on {where}: {error}", PORT_HINT) from None
        finally:
            with contextlib.suppress(OSError):
                (evidence / LAB_FILE).unlink()

    def announcement(self, endpoints: list[ReceiverEndpoint]) -> list[str]:
        """Return the warnings and the DNS records an operator must create, as lines."""
        warnings = [*address_warnings(endpoints), *self.cert_notes()]
        return [*warnings, *dns_records(endpoints, self.zone)]

    def cert_notes(self) -> list[str]:
        """Return a note naming valid states that present lab-CA (not publicly trusted) certs."""
        lab_ca = [s.id for s in self.specs if s.starttls and s.certificate is CertState.VALID]
        lab_ca = [r for r in lab_ca if r not in self.real_certs]
        if not lab_ca:
            return []
        return [
            f"note: {', '.join(lab_ca)} present lab-CA certificates, which no public sender "
            "trusts; pass --cert RECEIVER=CERT.pem:KEY.pem for publicly trusted ones"
        ]


def plan_up(args: argparse.Namespace, specs: list[ReceiverSpec], certs: Path) -> UpPlan:
    """Validate the `up` options against the chosen receivers; loopback unless --public."""
    zone = (args.domain or LAB_ZONE).lower().rstrip(".")
    try:
        specs = [ReceiverSpec.model_validate({**s.model_dump(), "zone": zone}) for s in specs]
    except ValidationError:
        fix = "e.g. --domain lab.example.org"
        raise _usage("--domain", zone, "not a DNS zone name", fix) from None
    if zone != LAB_ZONE and args.backend != "local":
        raise _usage("--backend", args.backend, f"serves the {LAB_ZONE} zone only",
                     "drop --domain, or use the local backend (the default)")  # fmt: skip
    ids = [s.id for s in specs]
    binds = _binds(args, ids)
    if args.public:
        _check_public(args, ids, binds, zone)
    else:
        for option, host in [("--host", args.host), *(("--bind", h) for h, _ in binds.values())]:
            if not is_loopback(host):
                raise _usage(option, host, "not a loopback address, and --public is not given",
                             "add --public to listen for real senders (see README, 'Testing a "
                             "real sender'), or use 127.0.0.1")  # fmt: skip
    real = _real_certs(args.cert, {s.id: s for s in specs})
    folder = certs if zone == LAB_ZONE else certs / zone
    return UpPlan(specs, zone, folder, args.public, binds, real)


def _binds(args: argparse.Namespace, ids: list[str]) -> dict[str, tuple[str, int]]:
    """Return receiver -> (address, port) from --bind and --bind-all; reject clashes."""
    binds: dict[str, tuple[str, int]] = {}
    for item in args.bind:
        receiver, sep, where = item.partition("=")
        if not sep or receiver not in ids:
            raise _usage("--bind", item, f"not RECEIVER=ADDRESS[:PORT] for one of {ids}",
                         "e.g. --bind tls12=203.0.113.12")  # fmt: skip
        if receiver in binds:
            raise _usage("--bind", item, f"'{receiver}' is bound twice", "bind each receiver once")
        binds[receiver] = parse_address("--bind", where, SMTP_PORT)
    if args.bind_all:
        host, port = parse_address("--bind-all", args.bind_all, BIND_ALL_FIRST_PORT)
        rest = [r for r in ids if r not in binds]
        if port + len(rest) - 1 > 65535:
            raise _usage("--bind-all", args.bind_all, "too few ports left", "use a lower port")
        binds.update({r: (host, port + i) for i, r in enumerate(rest)})
    seen: dict[tuple[str, int], str] = {}
    for receiver, where in binds.items():
        if where in seen:
            raise _usage("--bind", f"{receiver}={where[0]}:{where[1]}",
                         f"the same address and port as '{seen[where]}'",
                         "give each receiver its own address or port")  # fmt: skip
        seen[where] = receiver
    return binds


def _check_public(
    args: argparse.Namespace, ids: list[str], binds: dict[str, tuple[str, int]], zone: str
) -> None:
    """Require what a public lab needs: the local backend, a real zone, an address per receiver."""
    if args.backend != "local":
        raise _usage("--backend", args.backend, "--public runs receivers on this host only",
                     "drop --backend (the local backend is the default)")  # fmt: skip
    if zone == LAB_ZONE:
        raise _usage("--domain", zone, "--public needs a DNS zone you control",
                     "e.g. --domain lab.example.org, then create the printed records")  # fmt: skip
    if args.host != DEFAULT_HOST:
        raise _usage("--host", args.host, "with --public, addresses come from --bind",
                     "use --bind RECEIVER=ADDRESS[:PORT] or --bind-all ADDRESS[:PORT]")  # fmt: skip
    missing = [r for r in ids if r not in binds]
    if missing:
        raise _usage("--bind", ",".join(missing), "no address for these receivers",
                     "add --bind RECEIVER=ADDRESS[:PORT] for each, or --bind-all, or narrow "
                     "--receivers")  # fmt: skip


def _real_certs(items: list[str], specs: dict[str, ReceiverSpec]) -> dict[str, tuple[Path, Path]]:
    """Return receiver -> (cert, key) from --cert options, each checked against its receiver."""
    real: dict[str, tuple[Path, Path]] = {}
    for item in items:
        receiver, sep, paths = item.partition("=")
        cert, colon, key = paths.rpartition(":")
        if not sep or not colon or not cert or not key or receiver not in specs:
            raise _usage("--cert", item, f"not RECEIVER=CERT.pem:KEY.pem for one of {list(specs)}",
                         "e.g. --cert tls12=/etc/letsencrypt/live/mx/fullchain.pem:"
                         "/etc/letsencrypt/live/mx/privkey.pem")  # fmt: skip
        check_real_cert(specs[receiver], Path(cert), Path(key))
        real[receiver] = (Path(cert), Path(key))
    return real


def address_warnings(endpoints: list[ReceiverEndpoint]) -> list[str]:
    """Return warnings for receivers a real sender cannot reach directly on port 25."""
    lines = []
    hosts: dict[str, list[str]] = {}
    for e in endpoints:
        hosts.setdefault(e.host, []).append(e.receiver)
        if e.port != SMTP_PORT:
            lines.append(f"warning: {e.receiver} listens on port {e.port}; real senders use "
                         f"port 25 only: forward a public address's port 25 to "
                         f"{e.host}:{e.port}")  # fmt: skip
    for host, receivers in hosts.items():
        if len(receivers) > 1:
            lines.append(f"warning: {', '.join(receivers)} share the address {host}: one port 25 "
                         "per address, so each state needs its own (public) address")  # fmt: skip
    return lines


def dns_records(endpoints: list[ReceiverEndpoint], zone: str) -> list[str]:
    """Return the zone-file lines to create: MX and A/AAAA per receiver MX host, the bounce MX."""
    lines = [f"; DNS records for the lab zone {zone} (create them at the zone's DNS host)"]
    for e in endpoints:
        for mx in e.mx:  # one host for most receivers; several, by preference, for some
            lines.append(f"{e.domain}. 300 IN MX {mx.preference} {mx.mx_host}.")
            lines.append(f"{mx.mx_host}. 300 IN {_address_record(mx.host)}")
    by_id = {e.receiver: e for e in endpoints}
    bounce = next((by_id[r] for r in BOUNCE_MX_PREFERENCE if r in by_id), endpoints[0])
    mailbox = f"bounce+<cell>@{zone}"
    lines.append(f"{zone}. 300 IN MX 10 {bounce.mx_host}.  ; the bounce mailbox {mailbox}")
    return lines


def _address_record(host: str) -> str:
    """Return `A <ip>` or `AAAA <ip>`, with a comment when the address is not public."""
    address = ipaddress.ip_address(host)
    kind = "AAAA" if address.version == 6 else "A"
    if address.is_unspecified:
        return f"{kind} <this host's public address>"
    if not address.is_global:
        return f"{kind} {host}  ; not a public address: use the one that forwards port 25 here"
    return f"{kind} {host}"


def write_lab_file(
    evidence: Path, zone: str, pki: LabPki, endpoints: list[ReceiverEndpoint]
) -> Path:
    """Write `<evidence>/lab.json`, which `tlslab run --backend attached` reads."""
    evidence.mkdir(parents=True, exist_ok=True)
    data = {
        "zone": zone,
        "pid": os.getpid(),
        "certs": str(pki.root.resolve()),
        "ca": str(pki.ca_cert_path.resolve()),
        "untrusted_ca": str(pki.untrusted_ca_cert_path.resolve()),
        "endpoints": [
            {**e.as_json(), "evidence_dir": str(e.evidence_dir.resolve())} for e in endpoints
        ],
    }
    path = evidence / LAB_FILE
    tmp = path.with_name(f".{LAB_FILE}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def session_line(record: SessionFacts) -> str:
    """Return one live-log line for a finished session, printable ASCII (client text escaped)."""
    when = datetime.fromtimestamp(record.ended or record.started)
    if record.handshake is Handshake.FAILED:
        tls = f"TLS handshake failed ({record.tls_failure})"
    elif record.version:
        tls = f"{record.version.value} {record.cipher or ''}".rstrip()
    elif record.starttls_offered:
        tls = "plaintext (STARTTLS offered, not used)"
    else:
        tls = "plaintext (no STARTTLS offered)"
    messages = record.messages
    rcpts = sorted({r for m in messages for r in m.rcpt_tos})
    refused = sum(1 for line in record.transcript if line.startswith("S: 550 5.7.1"))
    what = f"{len(messages)} message{'s' if len(messages) != 1 else ''} accepted"
    what += f" for {', '.join(rcpts)}" if rcpts else ""
    what += f", {refused} recipient{'s' if refused != 1 else ''} refused" if refused else ""
    helo = record.ehlo or "-"
    # EHLO, recipients and error texts come from the client: escape them for the terminal
    return printable(f"{when:%H:%M:%S} {record.receiver} {record.peer} ({helo}): {tls}; {what}")


def print_session(record: dict[str, Any]) -> None:
    """Print one live-log line for a finished session (a record the lab wrote)."""
    print(session_line(SessionFacts.model_validate(record)), flush=True)
