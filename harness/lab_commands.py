"""`tlslab up`, `report`, `certs` and `down`: serve, re-render, make certificates, clean up."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness import console, up_public
from harness.paths import certs_dir
from harness.report import load_results, render_all
from harness.run_start import backend_named
from harness.scenarios import ScenarioError, load_receiver, scenarios_root
from harness.up_lock import hold_evidence_dir
from lab.backends.lab_dns import local_dns, needs_dns
from lab.pki import LabPki, ensure_certs
from lab.serve import print_endpoints_json
from lab.spec import ReceiverSpec
from lab.sts_local import local_policy_host


def cmd_up(args: argparse.Namespace) -> int:
    """Start receivers on loopback and keep them running until SIGINT/SIGTERM."""
    specs = _receiver_specs(scenarios_root(args.scenarios), args.receivers)
    plan = up_public.plan_up(args, specs, certs_dir(args.certs))  # loopback unless --public
    with hold_evidence_dir(args.evidence_dir):  # a second `up` on this folder stops here
        return _serve_up(args, plan)


def _serve_up(args: argparse.Namespace, plan: up_public.UpPlan) -> int:
    """Make certificates, serve the planned receivers until a signal, then stop them."""
    pki = plan.with_certs(ensure_certs(plan.specs, plan.certs))
    on_ready = print_endpoints_json if args.json else console.print_endpoints
    if args.backend != "local":
        backend = backend_named(args.backend)
        with backend.start(plan.specs, pki, args.evidence_dir) as lab:
            on_ready(list(lab.endpoints.values()))
            _wait_for_signal()
        return 0
    with _up_services(plan.specs, pki, args.evidence_dir, args.host):
        plan.serve(pki, args.evidence_dir, args.host, on_ready, live_log=not args.json)
    if not args.json:
        print("receivers stopped")
    return 0


@contextlib.contextmanager
def _up_services(
    specs: Sequence[ReceiverSpec], pki: LabPki, evidence_dir: Path, host: str
) -> Iterator[None]:
    """Start the policy host and the signed lab DNS when a receiver needs them; say where."""
    with contextlib.ExitStack() as stack:
        policy = stack.enter_context(local_policy_host(specs, pki, evidence_dir, host))
        if policy is not None:  # standard error: standard output keeps contract 4's lines
            print(f"MTA-STS: policy host (every mta-sts.<domain>) at {policy[0]}:{policy[1]}",
                  file=sys.stderr, flush=True)  # fmt: skip
        if needs_dns(specs):  # every MX host listens on `host`
            addresses = {route.host: host for spec in specs for route in spec.mx_routes}
            dns = stack.enter_context(local_dns(
                specs, addresses, pki, evidence_dir, host, policy[0] if policy else None
            ))  # fmt: skip
            print(f"lab DNS at {dns.host}:{dns.port} (zones and trust anchor in {dns.zones_dir})",
                  file=sys.stderr, flush=True)  # fmt: skip
        yield


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM arrives."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()


def cmd_down(args: argparse.Namespace) -> int:
    """Remove every container and network labelled as a lab run's."""
    from lab.backends.docker import docker_client, remove_run

    removed = remove_run(docker_client(), args.run)
    print(f"removed {removed} lab containers and networks")
    return 0


def _receiver_specs(root: Path, wanted: str | None) -> list[ReceiverSpec]:
    """Load all receivers, or the comma-separated ones asked for, naming unknown ids."""
    folder = root / "receivers"
    known = {p.stem: p for p in sorted(folder.glob("*.yaml"))}
    ids = [w.strip() for w in wanted.split(",") if w.strip()] if wanted else list(known)
    for item in ids:
        if item not in known:
            raise ScenarioError(
                folder / f"{item}.yaml", "--receivers", f"unknown receiver '{item}'",
                f"use some of {sorted(known)}",
            )  # fmt: skip
    return [load_receiver(known[item], root) for item in ids]


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render summary.md, report.html and tlsrpt.json next to a results.json."""
    report = load_results(args.path)
    run_dir = args.path if args.path.is_dir() else args.path.parent
    render_all(report, run_dir)
    print(console.matrix(report))
    print(f"Re-rendered {run_dir}")
    return 0


def cmd_certs(args: argparse.Namespace) -> int:
    """Generate (or reuse) certificates for every receiver in the scenarios folder."""
    specs = _receiver_specs(scenarios_root(args.scenarios), None)
    pki = ensure_certs(specs, certs_dir(args.certs))
    print(json.dumps({"certs": str(pki.root), "ca": str(pki.ca_cert_path)}))
    return 0
