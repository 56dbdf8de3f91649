"""The `tlslab` command: run a suite, keep receivers up, re-render reports, make certificates."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from harness import console, ses_setup, up_public
from harness.commands import EvidenceFileError, add_commands, report_drift
from harness.listing import add_list_command
from harness.paths import certs_dir, reports_dir
from harness.provenance import package_version
from harness.prune import add_prune_command
from harness.report import ReportError, load_results, render_all, write_report
from harness.runner import backend_named, open_run
from harness.scenarios import (
    LoadedSuite,
    ScenarioError,
    load_receiver,
    load_suite,
    scenarios_root,
)
from harness.scoreboard.run import add_scoreboard_command
from harness.up_lock import hold_evidence_dir
from lab.backends import BACKENDS, BackendError
from lab.backends.docker import docker_client, remove_run
from lab.pki import CertificateError, ensure_certs
from lab.serve import print_endpoints_json
from lab.spec import ReceiverSpec

USAGE_ERRORS = (ScenarioError, CertificateError, ReportError, BackendError, EvidenceFileError)
EXIT_USAGE = 2
BACKEND_CHOICES = "{" + ",".join(sorted(BACKENDS)) + "}"
BACKEND_HELP = "where receivers run (default: local)"
EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal number, as shells report it


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every started resource is cleaned up."""


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the sub-command, map known errors to exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return handler(args)
    except USAGE_ERRORS as error:
        print(f"tlslab: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as stop:
        print("tlslab: interrupted; evidence recorded so far stays on disk", file=sys.stderr)
        return EXIT_SIGTERM if isinstance(stop, Terminated) else EXIT_SIGINT
    except BrokenPipeError:  # e.g. `tlslab evidence x.eml | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _positive(text: str) -> int:
    """Parse a positive whole number; the error names the value (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _interrupt(signum: int, frame: object) -> None:
    """Turn SIGTERM into Terminated (a KeyboardInterrupt) so every resource is cleaned up."""
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with one sub-command per verb."""
    parser = argparse.ArgumentParser(prog="tlslab", description=__doc__)
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {package_version('sender-tls-lab')}"
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--scenarios", type=Path, help="scenarios folder (default: the project's)")
    common.add_argument("--certs", type=Path, help="certificate folder (default: certs/)")

    run = sub.add_parser("run", parents=[common], help="run a suite and write its report")
    run.add_argument("--suite", default="ses-2025", help="suite id or path (default: ses-2025)")
    run.add_argument("--backend", default="local", metavar=BACKEND_CHOICES, help=BACKEND_HELP)
    run.add_argument("--reports", type=Path, help="reports folder (default: reports/)")
    run.add_argument(
        "--baseline", type=Path, help="a stored run (results.json or folder); exit 1 on any change"
    )
    run.add_argument(
        "--receivers", help="comma-separated receiver ids: run only their rows (default: all)"
    )
    run.add_argument(
        "--jobs", type=_positive, default=4, help="cells run at once (default: 4; 1 = in order)"
    )
    run.set_defaults(handler=cmd_run)

    up = sub.add_parser("up", parents=[common], help="start receivers until Ctrl-C")
    up.add_argument("--backend", default="local", metavar=BACKEND_CHOICES, help=BACKEND_HELP)
    up.add_argument("--receivers", help="comma-separated receiver ids (default: all)")
    up.add_argument("--evidence-dir", type=Path, default=Path("evidence"))
    up.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    up.add_argument("--json", action="store_true", help="print endpoints as JSON lines")
    up_public.add_options(up)
    up.set_defaults(handler=cmd_up)

    report = sub.add_parser("report", help="re-render a results.json (file or run folder)")
    report.add_argument("path", type=Path)
    report.set_defaults(handler=cmd_report)

    certs = sub.add_parser("certs", parents=[common], help="generate the lab certificates")
    certs.set_defaults(handler=cmd_certs)

    down = sub.add_parser("down", help="remove Docker containers and networks a lab run left")
    down.add_argument("--run", help="only this run id (default: every lab run)")
    down.set_defaults(handler=cmd_down)
    add_commands(sub)
    add_list_command(sub)
    add_prune_command(sub)
    ses_setup.register(sub)
    add_scoreboard_command(sub)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    """Run every cell of a suite with progress, write the report; exit 1 on a non-pass or drift."""
    loaded = load_suite(args.suite, args.scenarios)
    baseline = load_results(args.baseline) if args.baseline else None  # before `latest` moves
    backend = backend_named(args.backend)
    reports = reports_dir(args.reports)
    cells = _cells_of(loaded, args.receivers)
    total = len(cells)
    print(f"Suite {loaded.suite.id}: {total} cells on the {backend.name} backend")
    with open_run(loaded, backend, certs_dir(args.certs), reports) as run:
        done = iter(range(1, total + 1))
        stopped = ""
        try:
            run.run_cells(
                cells, args.jobs, lambda result: console.progress(next(done), total, result)
            )
        except KeyboardInterrupt as stop:
            stopped = "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"
            raise
        except BaseException as error:
            stopped = f"a lab failure ({type(error).__name__})"
            raise
        finally:
            run_dir = write_report(run.report(stopped), reports)
            if stopped:
                latest = reports / "latest"
                kept = "still points at the last complete run" if latest.exists() else "not made"
                print(
                    f"tlslab: run stopped by {stopped}; its partial report is in {run_dir}; "
                    f"{latest} {kept}",
                    file=sys.stderr,
                )
    report = run.report()
    print()
    print(console.matrix(report))
    print(console.totals(report))
    print(f"Report: {run_dir}")
    drift = baseline is not None and report_drift(baseline, args.baseline, report)
    return 0 if console.all_passed(report) and not drift else 1


def _cells_of(loaded: LoadedSuite, wanted: str | None) -> list[tuple[str, str]]:
    """Return the suite's cells, or those of the comma-separated receivers asked for."""
    if not wanted:
        return loaded.suite.cell_ids
    rows = [w.strip() for w in wanted.split(",") if w.strip()]
    for row in rows:
        if row not in loaded.suite.receivers:
            raise ScenarioError(
                loaded.path, "--receivers", f"'{row}' is not a receiver of this suite",
                f"use some of {list(loaded.suite.receivers)}",
            )  # fmt: skip
    return [(r, s) for r, s in loaded.suite.cell_ids if r in rows]


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
    plan.serve(pki, args.evidence_dir, args.host, on_ready, live_log=not args.json)
    if not args.json:
        print("receivers stopped")
    return 0


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM arrives."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()


def cmd_down(args: argparse.Namespace) -> int:
    """Remove every container and network labelled as a lab run's."""
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


__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
