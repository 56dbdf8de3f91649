"""Find the receiver processes serving an evidence folder (from /proc), forked or not."""

from __future__ import annotations

import os
from pathlib import Path


def lab_serve_pids(evidence_root: Path) -> list[int]:
    """Return the pids of `lab.serve` processes serving `evidence_root` (from /proc).

    A `python -m lab.serve` names the folder on its command line; the local backend's forked
    child is named `lab.serve` and logs to `<evidence_root>/receivers.log` on its stderr.
    """
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit():
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            forked = (entry / "comm").read_text().strip() == "lab.serve"
            log = os.readlink(entry / "fd" / "2") if forked else ""
        except OSError:
            continue  # exited meanwhile
        spawned = b"lab.serve" in argv and str(evidence_root).encode() in argv
        if spawned or (forked and log == str(evidence_root / "receivers.log")):
            found.append(int(entry.name))
    return found
