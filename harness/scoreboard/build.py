"""Assemble a Scoreboard from a finished (or stopped) run: cells, scores, timings, versions."""

from __future__ import annotations

import re
from pathlib import Path

from harness.evidence_links import EVIDENCE, link_evidence
from harness.model import CellRef, CellResult, Outcome, RunReport
from harness.provenance import lab_commit, package_version
from harness.scoreboard.lanes import Span
from harness.scoreboard.model import BoardCell, FamilyTiming, Scoreboard, SoftwareVersion
from harness.scoreboard.plan import BoardPlan
from harness.scoreboard.score import board_cell, column_score
from lab.proxy_record import read_proxy_records


def sender_log(run_dir: Path, sender: str, message_id: str) -> str | None:
    """Return the path (relative to the run) of the sender's own log of one message, if kept."""
    if not message_id or "/" in sender:
        return None
    name = re.sub(r"[^A-Za-z0-9._-]", "_", message_id.strip("<>")) + ".log"
    for found in sorted(run_dir.glob(f"*/{sender}/{name}")):
        if found.is_file():
            return found.relative_to(run_dir).as_posix()
    return None


HANDSHAKE_BROKEN = ("garbage-sent", "handshake-failed")  # a proxy's ended_by: TLS never came up


def broken_by_the_proxy(run_dir: Path, result: CellResult) -> bool:
    """Return True when a man in the middle broke a handshake of the cell, then relayed plaintext.

    The receiver behind the proxy saw no failed handshake, so the runner links no downgrade there.
    The cell's proxy connections are those whose receiver-side end is one of its sessions' peers.
    """
    if result.outcome is not Outcome.DELIVERED or result.tls is not None or not result.sessions:
        return False
    peers = {s.peer for s in result.sessions}
    mine = [
        r
        for r in read_proxy_records(run_dir / EVIDENCE / result.receiver)
        if f"{r.upstream_ip}:{r.upstream_port}" in peers
    ]
    broken = [r.started for r in mine if r.ended_by in HANDSHAKE_BROKEN or r.tls_error]
    plain = [r.started for r in mine if r.data_in_plaintext]
    return bool(broken and plain and min(broken) < max(plain))


def family_timings(
    plan: BoardPlan, cells: tuple[BoardCell, ...], spans: dict[tuple[str, str], Span]
) -> tuple[FamilyTiming, ...]:
    """Return, per family with cells, its wall span and the sum of its cells' seconds."""
    family = {r.id: r.family for r in plan.receivers}
    timings = []
    for name in dict.fromkeys(r.family for r in plan.receivers):
        mine = [c for c in cells if family[c.receiver] is name]
        marks = [spans[(c.receiver, c.sender)] for c in mine if (c.receiver, c.sender) in spans]
        if not mine:
            continue
        wall = max(s.ended for s in marks) - min(s.began for s in marks) if marks else 0.0
        timings.append(
            FamilyTiming(
                family=name,
                cells=len(mine),
                wall_seconds=round(wall, 2),
                cell_seconds=round(sum(c.seconds for c in mine), 2),
            )
        )
    return tuple(timings)


def build_board(
    plan: BoardPlan,
    report: RunReport,
    run_dir: Path,
    spans: dict[tuple[str, str], Span],
    versions: list[SoftwareVersion],
    wall_seconds: float,
    start_seconds: float = 0.0,
) -> Scoreboard:
    """Return the scoreboard of a run: observed cells, stated expectations, column scores."""
    report = link_evidence(report, run_dir)
    info = {r.id: r.info for r in plan.receivers}
    stated = plan.loaded.stated
    cells = []
    for result in report.results:
        key = (result.receiver, result.sender)
        cell = board_cell(
            result,
            stated.get(key),
            info.get(result.receiver),
            sender_log(run_dir, result.sender, result.message_id),
        )
        if not cell.downgraded and broken_by_the_proxy(run_dir, result):
            cell = cell.model_copy(update={"downgraded": True})
        if key in plan.disputed:
            cell = cell.model_copy(update={"note": f"observed only: {plan.disputed[key]}"})
        cells.append(cell)
    order = {key: i for i, key in enumerate(plan.cells)}
    cells.sort(key=lambda c: order.get((c.receiver, c.sender), len(order)))
    done = tuple(cells)
    senders = tuple(
        s.model_copy(update={"score": column_score(s.id, done, plan.receivers)})
        for s in plan.senders
    )
    ran = {(c.receiver, c.sender) for c in done}
    marks = list(spans.values())
    return Scoreboard(
        run_id=report.run_id,
        backend=report.backend,
        started=report.started,
        finished=report.finished,
        complete=report.complete and not (set(plan.cells) - ran),
        stopped_by=report.stopped_by,
        selection=plan.selection,
        lab_version=package_version("sender-tls-lab"),
        lab_commit=lab_commit(),
        receivers=plan.receivers,
        senders=senders,
        cells=done,
        not_run=tuple(CellRef(receiver=r, sender=s) for r, s in plan.cells if (r, s) not in ran),
        versions=tuple(versions),
        wall_seconds=round(wall_seconds, 2),
        start_seconds=round(start_seconds, 2),
        cells_seconds=round(max(m.ended for m in marks) - min(m.began for m in marks), 2)
        if marks
        else 0.0,
        families=family_timings(plan, done, spans),
    )


__all__ = ["build_board", "family_timings", "sender_log"]
