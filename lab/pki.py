"""Lab PKI: a trusted lab CA, its intermediate, an untrusted CA, and one leaf per receiver.

Runs and `tlslab up` processes may share one certs folder: writers hold its lock exclusively and
readers hold it shared; the manifest only ever gains or refreshes entries, never drops another
run's; a CA is replaced only when it is missing, unreadable or expiring, and then every leaf is
reissued under the same lock. The full check (lab.pki_check) runs when the files, the receivers
or the clock are not those of a recorded pass (lab.pki_stamp).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lab.cert_error import FIX, CertificateError
from lab.pki_files import check_root, locked, make_dir, not_a_file, write_atomic
from lab.pki_layout import (
    MANIFEST_NAME,
    MISMATCHED_NAME,
    RENEW_MARGIN,
    VALID_FOR,
    CertBundle,
    LabPki,
)
from lab.pki_stamp import record_pass, recorded_pass
from lab.spec import ReceiverSpec

__all__ = [
    "FIX",
    "MANIFEST_NAME",
    "MISMATCHED_NAME",
    "RENEW_MARGIN",
    "VALID_FOR",
    "CertBundle",
    "CertificateError",
    "LabPki",
    "ensure_certs",
    "load_certs",
]


def ensure_certs(
    specs: Iterable[ReceiverSpec], root: Path, *, now: datetime | None = None
) -> LabPki:
    """Return the PKI under root, issuing only what is missing or stale; other entries stay."""
    spec_list = list(specs)
    ids = [spec.id for spec in spec_list]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate receiver ids in {sorted(ids)}")
    when = _utc(now)
    check_root(root)
    make_dir(root, root, "certs")
    with locked(root, exclusive=True):
        known = recorded_pass(root, spec_list, when)
        if known is not None:
            return known
        from lab import pki_check  # loads cryptography: only when something must be checked

        manifest = _manifest_to_update(root)
        wanted = {s.id: (s.certificate, s.mx_host) for s in spec_list}
        if pki_check.refresh(manifest, wanted, root, when):
            manifest["generated"] = when.isoformat()
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            write_atomic(root, root / MANIFEST_NAME, text.encode("utf-8"), 0o644, "manifest")
        pki = pki_check.check(spec_list, root, when, RENEW_MARGIN)
        record_pass(root, spec_list, pki_check.valid_window(spec_list, root, RENEW_MARGIN))
        return pki


def load_certs(
    specs: Iterable[ReceiverSpec], root: Path, only: Iterable[ReceiverSpec] | None = None
) -> LabPki:
    """Return the PKI under root without generating; raise CertificateError if anything is off.

    A recorded pass of the whole set `specs` answers; without one, the receivers in `only`
    (default: all of `specs`) are checked in full.
    """
    check_root(root)
    spec_list, now = list(specs), _utc(None)
    with locked(root, exclusive=False):
        known = recorded_pass(root, spec_list, now)  # a pass with the renewal margin covers 0
        if known is not None:
            return known
        from lab import pki_check

        checked = spec_list if only is None else list(only)
        return pki_check.check(checked, root, now, timedelta(0))


def _utc(now: datetime | None) -> datetime:
    """Return now as an aware UTC datetime (naive input is taken as UTC; None means the clock)."""
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _manifest_to_update(root: Path) -> dict[str, Any]:
    """Return the manifest as a dict to extend; a missing or unreadable one starts empty."""
    path = root / MANIFEST_NAME
    if path.exists() and not path.is_file():
        raise not_a_file(path, "manifest")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
