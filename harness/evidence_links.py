"""Find each cell's evidence files in its run folder, as relative paths a report can link to."""

from __future__ import annotations

from pathlib import Path

from harness.model import CellResult, EvidenceLink, RunReport
from lab.evidence_store import read_messages

EVIDENCE, PORTAL, SESSIONS = "evidence", "portal", "sessions.jsonl"


def portal_name(message_id: str) -> str:
    """Return the portal copy's file name the reference sender gives a message id."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in message_id.strip("<>")) + ".eml"


def _plain_name(name: object) -> str | None:
    """Return a file name that stays inside its folder, or None."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        return None
    return name


def cell_evidence(cell: CellResult, run_dir: Path) -> tuple[EvidenceLink, ...]:
    """Return the message copies, session records and portal copy stored for one cell."""
    if not cell.message_id or "/" in cell.receiver or "/" in cell.sender:
        return ()
    folder = run_dir / EVIDENCE / cell.receiver
    links = []
    for stored in read_messages(folder):
        name = _plain_name(stored.get("eml"))
        if stored.get("message_id") == cell.message_id and name and (folder / name).is_file():
            links.append(EvidenceLink(kind="message", path=f"{EVIDENCE}/{cell.receiver}/{name}"))
    if cell.sessions and (folder / SESSIONS).is_file():
        links.append(EvidenceLink(kind="sessions", path=f"{EVIDENCE}/{cell.receiver}/{SESSIONS}"))
    portal = f"{PORTAL}/{cell.sender}/{portal_name(cell.message_id)}"
    if (run_dir / portal).is_file():
        links.append(EvidenceLink(kind="portal", path=portal))
    return tuple(links)


def link_evidence(report: RunReport, run_dir: Path) -> RunReport:
    """Return the report with each cell's evidence found in run_dir (kept when none is found)."""
    cells = tuple(
        c.model_copy(update={"evidence": found}) if (found := cell_evidence(c, run_dir)) else c
        for c in report.results
    )
    return report.model_copy(update={"results": cells})


__all__ = ["cell_evidence", "link_evidence", "portal_name"]
