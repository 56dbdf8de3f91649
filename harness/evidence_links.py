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


StoredNames = dict[str, list[str]]  # a folder's message ids -> their `.eml` names, in order


def stored_names(folder: Path) -> StoredNames:
    """Return the `.eml` names messages.jsonl gives each message id, in stored order."""
    names: StoredNames = {}
    for stored in read_messages(folder):
        name, message_id = _plain_name(stored.get("eml")), stored.get("message_id")
        if name and isinstance(message_id, str):
            names.setdefault(message_id, []).append(name)
    return names


def cell_evidence(
    cell: CellResult, run_dir: Path, names: StoredNames | None = None
) -> tuple[EvidenceLink, ...]:
    """Return the message copies, session records and portal copy stored for one cell.

    `names` is stored_names() of the cell's receiver folder, when the caller already read it.
    """
    if not cell.message_id or "/" in cell.receiver or "/" in cell.sender:
        return ()
    folder = run_dir / EVIDENCE / cell.receiver
    links = []
    for name in (stored_names(folder) if names is None else names).get(cell.message_id, ()):
        if (folder / name).is_file():
            links.append(EvidenceLink(kind="message", path=f"{EVIDENCE}/{cell.receiver}/{name}"))
    if cell.sessions and (folder / SESSIONS).is_file():
        links.append(EvidenceLink(kind="sessions", path=f"{EVIDENCE}/{cell.receiver}/{SESSIONS}"))
    portal = f"{PORTAL}/{cell.sender}/{portal_name(cell.message_id)}"
    if (run_dir / portal).is_file():
        links.append(EvidenceLink(kind="portal", path=portal))
    return tuple(links)


class EvidenceFinder:
    """Finds each cell's evidence in one run folder, reading each receiver's messages.jsonl once."""

    def __init__(self, run_dir: Path) -> None:
        """Bind the finder to the run folder."""
        self.run_dir = run_dir
        self._folders: dict[str, StoredNames] = {}

    def __call__(self, cell: CellResult) -> tuple[EvidenceLink, ...]:
        """Return the cell's evidence files (cell_evidence), the receiver's names read once."""
        if not cell.message_id or "/" in cell.receiver:
            return cell_evidence(cell, self.run_dir)  # nothing to read
        if cell.receiver not in self._folders:
            self._folders[cell.receiver] = stored_names(self.run_dir / EVIDENCE / cell.receiver)
        return cell_evidence(cell, self.run_dir, self._folders[cell.receiver])


def link_evidence(report: RunReport, run_dir: Path) -> RunReport:
    """Return the report with each cell's evidence found in run_dir (kept when none is found).

    Each receiver's messages.jsonl is read once, not once per cell.
    """
    evidence = EvidenceFinder(run_dir)
    cells = tuple(
        c.model_copy(update={"evidence": found}) if (found := evidence(c)) else c
        for c in report.results
    )
    return report.model_copy(update={"results": cells})


__all__ = ["EvidenceFinder", "cell_evidence", "link_evidence", "portal_name", "stored_names"]
