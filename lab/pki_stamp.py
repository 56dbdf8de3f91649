"""A record of the lab PKI's passed full checks: a digest of what each read, and when it holds.

The full check (lab.pki_check) loads every certificate and key with `cryptography`, whose import
alone costs more than the rest of a run's certificate work. It is a function of the bytes it reads,
the receivers asked for and the clock, so a pass is recorded against a SHA-256 over exactly those
bytes and receivers, with the interval in which all its date conditions hold (computed with the
renewal margin, the stricter of the two checks). A later check reading the same bytes for the same
receivers inside that interval has the same outcome and is answered from the record; any changed
byte, another receiver set or a clock outside the interval means the full check.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lab.cert_error import CertificateError
from lab.pki_files import write_atomic
from lab.pki_layout import CA_ORGANIZATIONS, INTERMEDIATE, MANIFEST_NAME, CertBundle, LabPki
from lab.spec import ReceiverSpec

STAMP_NAME = ".checked.json"
KEPT = 32  # passed checks remembered (receiver sets used with this folder), newest last
FORMAT = b"tlslab-pki-check-1"


def recorded_pass(root: Path, specs: Sequence[ReceiverSpec], now: datetime) -> LabPki | None:
    """Return the PKI if a recorded pass covers these bytes, receivers and `now`; else None."""
    read = _inputs(root, specs)
    if read is None:
        return None
    digest, pki = read
    window = _stamps(root).get(digest)
    if window is None:
        return None
    try:
        start, until = (datetime.fromisoformat(bound) for bound in window)
    except (TypeError, ValueError):
        return None
    return pki if start <= now < until else None


def record_pass(
    root: Path, specs: Sequence[ReceiverSpec], window: tuple[datetime, datetime]
) -> None:
    """Remember a full check's pass for these receivers over `window` (if the folder allows)."""
    read = _inputs(root, specs)
    if read is None:
        return
    stamps = _stamps(root)
    stamps.pop(read[0], None)
    stamps[read[0]] = [bound.isoformat() for bound in window]
    kept = dict(list(stamps.items())[-KEPT:])
    text = json.dumps(kept, indent=1) + "\n"
    with contextlib.suppress(CertificateError):  # read-only or full: the next run checks in full
        write_atomic(root, root / STAMP_NAME, text.encode("utf-8"), 0o644, "check record")


def _stamps(root: Path) -> dict[str, Any]:
    """Return the recorded passes by digest; a missing or unreadable record holds none."""
    try:
        data = json.loads((root / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _inputs(root: Path, specs: Sequence[ReceiverSpec]) -> tuple[str, LabPki] | None:
    """Return the digest over everything the full check reads for specs, and the PKI it names.

    None when the manifest lacks something the check needs: only the full check reports that.
    """
    try:
        manifest_bytes = (root / MANIFEST_NAME).read_bytes()
        manifest = json.loads(manifest_bytes)
        digest = hashlib.sha256(FORMAT)
        _feed(digest, manifest_bytes)
        fields = [field for field in (*CA_ORGANIZATIONS, INTERMEDIATE) if field in manifest]
        pairs = {("ca", field): _pair(root, manifest[field]) for field in fields}
        bundles: dict[str, CertBundle] = {}
        for spec in sorted(specs, key=lambda s: s.id):
            entry = manifest["receivers"][spec.id]
            _feed(digest, f"{spec.id}\0{spec.certificate.value}\0{spec.mx_host}".encode())
            cert, key = pairs["receiver", spec.id] = _pair(root, entry)
            bundle = CertBundle(spec.id, spec.certificate, spec.mx_host, cert, key)
            if "no_sni" in entry:
                no_sni = pairs["no-sni", spec.id] = _pair(root, entry["no_sni"])
                bundle = CertBundle(spec.id, spec.certificate, spec.mx_host, cert, key, *no_sni)
            bundles[spec.id] = bundle
        for name in sorted(pairs):
            for path in pairs[name]:
                _feed(digest, str(path.relative_to(root)).encode())
                _feed(digest, path.read_bytes())
        lab_ca, untrusted = pairs["ca", "lab-ca"][0], pairs["ca", "untrusted-ca"][0]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    pki = LabPki(root, lab_ca, untrusted, MappingProxyType(bundles))
    return digest.hexdigest(), pki


def _pair(root: Path, entry: Any) -> tuple[Path, Path]:
    """Return the (cert, key) paths a manifest entry names (KeyError/TypeError if malformed)."""
    cert, key = entry["cert"], entry["key"]
    if not isinstance(cert, str) or not isinstance(key, str):
        raise TypeError("manifest entry paths must be strings")
    return root / cert, root / key


def _feed(digest: Any, data: bytes) -> None:
    """Add one length-prefixed item to the digest (so items cannot run into each other)."""
    digest.update(len(data).to_bytes(8, "big"))
    digest.update(data)
