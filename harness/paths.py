"""Default locations of generated material: certificates and reports."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def certs_dir(explicit: Path | None = None) -> Path:
    """Return the certificate folder: explicit, then $TLSLAB_CERTS, then `<project>/certs`."""
    return explicit or Path(os.environ.get("TLSLAB_CERTS", PROJECT_ROOT / "certs"))


def reports_dir(explicit: Path | None = None) -> Path:
    """Return the reports folder: explicit, then $TLSLAB_REPORTS, then `<project>/reports`."""
    return explicit or Path(os.environ.get("TLSLAB_REPORTS", PROJECT_ROOT / "reports"))
