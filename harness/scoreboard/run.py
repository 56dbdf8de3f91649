"""`tlslab scoreboard`: run the board on a backend, write it, point reports/scoreboard at it."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness import console
from harness.model import CellResult, Verdict
from harness.paths import certs_dir, reports_dir
from harness.run_start import backend_named, new_run_id, open_run
from harness.scenarios import scenarios_root
from harness.scoreboard.build import build_board
from harness.scoreboard.files import point_link, write_board
from harness.scoreboard.lanes import Lanes
from harness.scoreboard.model import Scoreboard
from harness.scoreboard.plan import BOARD_ID, POLICY_GROUP, BoardPlan, build_plan
from harness.scoreboard.versions import read_versions
from lab.backends import BACKENDS, Backend, BackendError

NEIGHBOUR_LIMIT = Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3")
SubParsers = argparse._SubParsersAction  # argparse has no public name for it


def run_board(
    plan: BoardPlan,
    backend: Backend,
    certs: Path,
    reports: Path,
    per_sender: int = 1,
    on_result: Callable[[CellResult], None] = lambda result: None,
) -> tuple[Scoreboard, Path]:
    """Run every cell of the plan, one lane per sender; write the board into its run folder.

    An interrupted run still writes its (incomplete) board, then re-raises; only a complete
    board moves `reports/scoreboard`.
    """
    began = time.perf_counter()
    run_id = new_run_id(BOARD_ID, backend.name)
    lanes = Lanes(plan.cells, per_sender)
    driver_of = {s.id: s.driver for s in plan.senders}
    stopped, versions = "", []
    with open_run(plan.loaded, backend, certs, reports, run_id) as run:
        started = time.perf_counter() - began
        try:
            lanes.run(run, on_result)
        except KeyboardInterrupt as stop:
            # harness.cli's Terminated, matched by name: under `python -m harness.cli` that
            # class lives in __main__, and importing harness.cli here would make a second one
            stopped = "SIGTERM" if type(stop).__name__ == "Terminated" else "SIGINT"
            raise
        except BaseException as error:
            stopped = f"a lab failure ({type(error).__name__})"
            raise
        finally:
            if not stopped:
                versions = read_versions(run.drivers, driver_of)  # while the senders still run
            partial = run.report(stopped)
            if stopped:
                board = build_board(plan, partial, run.run_dir, lanes.spans, versions, 0.0)
                write_board(board, run.run_dir)
                print(
                    f"tlslab: scoreboard stopped by {stopped}; its partial board is in "
                    f"{run.run_dir}; {reports / 'scoreboard'} not moved",
                    file=sys.stderr,
                )
    wall = time.perf_counter() - began
    board = build_board(plan, run.report(), run.run_dir, lanes.spans, versions, wall, started)
    write_board(board, run.run_dir)
    if board.complete and not board.selection:  # only the whole board is `reports/scoreboard`
        point_link(reports, run.run_dir)
    return board, run.run_dir


def add_scoreboard_command(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Add the `scoreboard` sub-command to the `tlslab` parser."""
    board = sub.add_parser(
        "scoreboard",
        help="every receiver state x every real sender and policy model, into reports/scoreboard/",
    )
    board.add_argument(
        "--backend", default="docker", metavar="{" + ",".join(sorted(BACKENDS)) + "}",
        help="where receivers run (default: docker; real MTAs need it)",
    )  # fmt: skip
    board.add_argument("--receivers", help="comma-separated receiver ids (default: every one)")
    board.add_argument("--senders", help="comma-separated sender ids (default: every one)")
    board.add_argument("--families", help="comma-separated receiver families (default: all)")
    board.add_argument(
        "--per-sender", type=int, default=1, choices=range(1, 9), metavar="N",
        help="cells of one sender run at once (1-8, default 1); senders always run together",
    )  # fmt: skip
    board.add_argument("--scenarios", type=Path, help="scenarios folder (default: the project's)")
    board.add_argument("--certs", type=Path, help="certificate folder (default: certs/)")
    board.add_argument("--reports", type=Path, help="reports folder (default: reports/)")
    board.set_defaults(handler=cmd_scoreboard)


def cmd_scoreboard(args: argparse.Namespace) -> int:
    """Run the scoreboard; exit 1 when a cell differs from its stated expectation or broke."""
    root = scenarios_root(args.scenarios)
    plan = build_plan(root, args.receivers, args.senders, args.families)
    backend = backend_named(args.backend)
    real = [s.id for s in plan.senders if s.software != POLICY_GROUP]
    if real and backend.name != "docker":
        raise BackendError(
            f"the real senders {real} run only on the docker backend",
            "use --backend docker, or --senders with policy models only",
        )
    if backend.name == "docker":
        check_neighbour_room(plan)
    reports = reports_dir(args.reports)
    total = len(plan.cells)
    print(
        f"Scoreboard: {len(plan.receivers)} receiver states x {len(plan.senders)} senders = "
        f"{total} cells on the {backend.name} backend"
    )
    done = iter(range(1, total + 1))
    board, run_dir = run_board(
        plan, backend, certs_dir(args.certs), reports, args.per_sender,
        lambda result: _progress(next(done), total, result, plan),
    )  # fmt: skip
    print()
    for sender in board.senders:
        print(f"{sender.id}: {sender.score}")
    print(f"{board.wall_seconds:g} s; scoreboard: {run_dir / 'index.html'}")
    if board.complete and not board.selection:
        print(f"{reports / 'scoreboard'} -> {run_dir.name}")
    bad = [c for c in board.cells if c.verdict in (Verdict.FAIL, Verdict.ERROR)]
    for cell in bad:
        print(f"{cell.id}: {cell.verdict.value if cell.verdict else ''}: expected {cell.expected}"
              f" ({cell.expected_from}); {cell.detail}", file=sys.stderr)  # fmt: skip
    return 1 if bad or not board.complete else 0


def neighbour_entries(plan: BoardPlan) -> int:
    """Return the ARP entries a board may hold (its senders towards every container, twice)."""
    receivers = plan.loaded.receivers.values()
    containers = sum(len(spec.mx_routes) for spec in receivers) + len(plan.senders) + 4
    return 2 * containers * (len(plan.senders) + 4)


def check_neighbour_room(plan: BoardPlan, limit_file: Path | None = None) -> None:
    """Raise BackendError when the kernel's neighbour table cannot hold the board's entries.

    The table is shared by every network namespace; once full, a new entry fails and a sender's
    connect says "No route to host", which the board would read as the sender's failure.
    """
    limit_file = limit_file or NEIGHBOUR_LIMIT
    try:
        limit = int(limit_file.read_text().strip())
    except (OSError, ValueError):
        return  # not Linux, or not readable: nothing to judge
    needed = neighbour_entries(plan)
    if limit < needed:
        raise BackendError(
            f"the kernel's neighbour table holds {limit} entries ({limit_file}); this board's "
            f"containers may need {needed}, and a full table fails connections as a sender's",
            f"as root: sysctl -w net.ipv4.neigh.default.gc_thresh3={max(needed, 16384)} "
            "(make docker-engine does it), or run a subset (--receivers/--senders)",
        )


def _progress(index: int, total: int, result: CellResult, plan: BoardPlan) -> None:
    """Print a progress line; a cell without a stated expectation says `observed only`."""
    if (result.receiver, result.sender) in plan.loaded.stated:
        console.progress(index, total, result)
        return
    width = len(str(total))
    print(
        f"[{index:>{width}}/{total}] {result.id:<32} {result.outcome.value:<20} observed only "
        f"({result.seconds:.2f} s)",
        flush=True,
    )


__all__ = ["add_scoreboard_command", "run_board"]
