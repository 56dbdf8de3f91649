"""The lab PKI's full check and refresh: every certificate and key loaded and verified.

`refresh` brings the manifest's CAs and the wanted leaves up to date (issuing what is missing or
stale); `check` verifies what a run will present: files, fingerprints, key pairs, issuers, dates;
`valid_window` says in which interval of time every date condition of that check holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from lab.cert_error import CertificateError
from lab.pki_files import not_a_file, write_atomic
from lab.pki_issue import (
    Issuer,
    issue_leaf,
    issuer_from_pem,
    new_ca,
    new_intermediate,
)
from lab.pki_layout import (
    CA_ORGANIZATIONS,
    INTERMEDIATE,
    MANIFEST_NAME,
    RENEW_MARGIN,
    CertBundle,
    LabPki,
)
from lab.pki_sha1 import verify_sha1_issued_by
from lab.spec import CertState, ReceiverSpec

Wanted = tuple[CertState, str]  # the state and MX host a receiver's leaf must have


def refresh(manifest: dict[str, Any], wanted: dict[str, Wanted], root: Path, now: datetime) -> bool:
    """Bring the manifest's CAs and wanted leaves up to date in place; return whether it changed."""
    issuers: dict[str, Issuer] = {}
    renewed = False
    for field in CA_ORGANIZATIONS:
        try:
            issuers[field] = _current_ca(root, manifest, field, now)
        except CertificateError:
            cert_pem, key_pem = new_ca(field)
            pair = (f"ca/{field}.pem", f"ca/{field}-key.pem")
            manifest[field] = _write_pair(root, field, pair, cert_pem, key_pem)
            issuers[field] = issuer_from_pem(cert_pem, key_pem)
            renewed = True
    changed = renewed
    receivers = manifest.get("receivers")
    if not isinstance(receivers, dict):
        receivers = manifest["receivers"] = {}
        changed = True
    if renewed:  # a new CA: reissue every leaf, other runs' too, so none is left unverifiable
        wanted = {**_recorded(receivers), **wanted}
    try:
        issuers[INTERMEDIATE] = _current_intermediate(root, manifest, issuers["lab-ca"][0], now)
    except CertificateError:
        cert_pem, key_pem = new_intermediate(issuers["lab-ca"], now)
        pair = (f"ca/{INTERMEDIATE}.pem", f"ca/{INTERMEDIATE}-key.pem")
        manifest[INTERMEDIATE] = _write_pair(root, INTERMEDIATE, pair, cert_pem, key_pem)
        issuers[INTERMEDIATE] = issuer_from_pem(cert_pem, key_pem)
        changed = True
        if not renewed:  # the leaves it signs, other runs' too, must chain to the new one
            stale = _recorded(receivers).items()
            issued = {r: w for r, w in stale if _issuing_ca(w[0]) == INTERMEDIATE}
            wanted = {**issued, **wanted}
    cas = {field: cert for field, (cert, _) in issuers.items()}
    for receiver, (state, mx_host) in wanted.items():
        if not renewed:
            try:
                _check_leaf(root, receivers, receiver, (state, mx_host), cas, now, RENEW_MARGIN)
                continue
            except CertificateError:
                pass
        issuer = None if state is CertState.SELF_SIGNED else issuers[_issuing_ca(state)]
        cert_pem, key_pem = issue_leaf(state, mx_host, issuer, now)
        pair = (f"{receiver}/cert.pem", f"{receiver}/key.pem")
        entry: dict[str, Any] = dict(_write_pair(root, receiver, pair, cert_pem, key_pem))
        if state is CertState.SNI_ONLY:
            cert_pem, key_pem = issue_leaf(CertState.SELF_SIGNED, mx_host, None, now)
            pair = (f"{receiver}/no-sni-cert.pem", f"{receiver}/no-sni-key.pem")
            entry["no_sni"] = _write_pair(root, receiver, pair, cert_pem, key_pem)
        receivers[receiver] = {"state": state.value, "mx_host": mx_host, **entry}
        changed = True
    return changed


def _recorded(receivers: dict[str, Any]) -> dict[str, Wanted]:
    """Return the state and MX host of every well-formed receiver entry in the manifest."""
    found: dict[str, Wanted] = {}
    for receiver, entry in receivers.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("mx_host"), str):
            continue
        try:
            ReceiverSpec(id=receiver)  # only a valid receiver id may name a folder
            found[receiver] = (CertState(str(entry.get("state"))), entry["mx_host"])
        except ValueError:
            continue
    return found


def _issuing_ca(state: CertState) -> str:
    """Return the manifest field of the CA that signs a leaf in this state."""
    if state is CertState.MISSING_INTERMEDIATE:
        return INTERMEDIATE
    return "untrusted-ca" if state is CertState.UNTRUSTED_CA else "lab-ca"


def _current_intermediate(
    root: Path, manifest: dict[str, Any], lab_ca: x509.Certificate, now: datetime
) -> Issuer:
    """Return the manifest's intermediate if intact, current and issued by lab_ca, else raise."""
    issuer = _current_ca(root, manifest, INTERMEDIATE, now)
    path = root / str(manifest[INTERMEDIATE]["cert"])
    _check_issued(issuer[0], (lab_ca, "lab-ca"), path, INTERMEDIATE)
    return issuer


def _check_issued(
    cert: x509.Certificate, ca: tuple[x509.Certificate, str], path: Path, field: str
) -> None:
    """Raise CertificateError naming path unless the (CA, name) signed cert (SHA-1 included)."""
    ca_cert, ca_field = ca
    try:
        if isinstance(cert.signature_hash_algorithm, hashes.SHA1):
            verify_sha1_issued_by(cert, ca_cert)
        else:
            cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(path, field, f"not issued by the current {ca_field}") from None


def _current_ca(root: Path, manifest: dict[str, Any], field: str, now: datetime) -> Issuer:
    """Return the manifest's CA if its files are intact and current, else raise CertificateError."""
    manifest_path = root / MANIFEST_NAME
    cert_path, key_path, _ = _check_entry(
        root, manifest_path, field, manifest, None, now, RENEW_MARGIN
    )
    try:
        return issuer_from_pem(cert_path.read_bytes(), key_path.read_bytes())
    except (OSError, ValueError) as error:
        raise CertificateError(key_path, field, f"unusable CA key ({error})") from None


def check(specs: list[ReceiverSpec], root: Path, now: datetime, margin: timedelta) -> LabPki:
    """Return the PKI described by the manifest, or raise CertificateError at the first problem."""
    manifest_path = root / MANIFEST_NAME
    if manifest_path.exists() and not manifest_path.is_file():
        raise not_a_file(manifest_path, "manifest")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CertificateError(manifest_path, "manifest", "file is missing") from None
    except (OSError, ValueError) as exc:
        raise CertificateError(manifest_path, "manifest", f"unreadable ({exc})") from None
    receivers = _section(manifest, "receivers", manifest_path, "manifest")
    cas: dict[str, x509.Certificate] = {}
    paths: dict[str, Path] = {}
    for field in CA_ORGANIZATIONS:
        paths[field], _, cas[field] = _check_entry(
            root, manifest_path, field, manifest, None, now, margin
        )
    if any(_issuing_ca(spec.certificate) == INTERMEDIATE for spec in specs):
        paths[INTERMEDIATE], _, cas[INTERMEDIATE] = _check_entry(
            root, manifest_path, INTERMEDIATE, manifest, None, now, margin
        )
        _check_issued(
            cas[INTERMEDIATE], (cas["lab-ca"], "lab-ca"), paths[INTERMEDIATE], INTERMEDIATE
        )
    bundles: dict[str, CertBundle] = {}
    for spec in specs:
        wanted = (spec.certificate, spec.mx_host)
        pairs = _check_leaf(root, receivers, spec.id, wanted, cas, now, margin)
        bundles[spec.id] = CertBundle(spec.id, spec.certificate, spec.mx_host, *pairs)
    return LabPki(root, paths["lab-ca"], paths["untrusted-ca"], MappingProxyType(bundles))


def _section(parent: Any, key: str, manifest_path: Path, field: str) -> dict[str, Any]:
    """Return parent[key] as a dict, or raise CertificateError naming the manifest and field."""
    value = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(value, dict):
        raise CertificateError(manifest_path, field, f"manifest has no {key!r} entry")
    return value


def _check_leaf(
    root: Path,
    receivers: dict[str, Any],
    receiver: str,
    wanted: Wanted,
    cas: Mapping[str, x509.Certificate],
    now: datetime,
    margin: timedelta,
) -> tuple[Path, Path, Path | None, Path | None]:
    """Return a receiver's cert and key (and no-SNI pair) after checking files, keys, issuer."""
    manifest_path = root / MANIFEST_NAME
    state, mx_host = wanted
    entry = _section(receivers, receiver, manifest_path, receiver)
    want = {"state": state.value, "mx_host": mx_host}
    have = {key: entry.get(key) for key in want}
    if have != want:
        raise CertificateError(manifest_path, receiver, f"manifest has {have}, spec wants {want}")
    cert_path, key_path, cert = _check_entry(
        root, manifest_path, receiver, receivers, state, now, margin
    )
    _check_key(cert_path, key_path, cert, receiver)
    if state is not CertState.SELF_SIGNED:
        ca = _issuing_ca(state)
        _check_issued(cert, (cas[ca], ca), cert_path, receiver)
    if state is not CertState.SNI_ONLY:
        return cert_path, key_path, None, None
    no_sni_cert, no_sni_key, self_signed = _check_entry(
        root, manifest_path, "no_sni", entry, CertState.SELF_SIGNED, now, margin
    )
    _check_key(no_sni_cert, no_sni_key, self_signed, receiver)
    return cert_path, key_path, no_sni_cert, no_sni_key


def _check_key(cert_path: Path, key_path: Path, cert: x509.Certificate, field: str) -> None:
    """Raise CertificateError unless key_path holds the private key of cert."""
    try:
        # the lab wrote this key; the RSA self-consistency proof (50 ms a key) adds nothing to the
        # pairing check below, and ssl's load_cert_chain checks key against certificate again
        key = serialization.load_pem_private_key(
            key_path.read_bytes(), password=None, unsafe_skip_rsa_key_validation=True
        )
    except (OSError, ValueError, TypeError):
        raise CertificateError(key_path, field, "not a PEM private key") from None
    if key.public_key() != cert.public_key():
        raise CertificateError(key_path, field, f"does not match the certificate {cert_path}")


def _check_entry(
    root: Path,
    manifest_path: Path,
    field: str,
    parent: dict[str, Any],
    state: CertState | None,
    now: datetime,
    margin: timedelta,
) -> tuple[Path, Path, x509.Certificate]:
    """Return (cert path, key path, cert) of parent[field] after checking fingerprint and dates."""
    entry = _section(parent, field, manifest_path, field)
    paths = []
    for key in ("cert", "key"):
        rel = entry.get(key)
        if not isinstance(rel, str):
            raise CertificateError(manifest_path, field, f"manifest entry lacks {key!r}")
        path = root / rel
        if path.exists() and not path.is_file():
            raise not_a_file(path, field)
        if not path.is_file():
            raise CertificateError(path, field, "file is missing")
        paths.append(path)
    cert_path, key_path = paths
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        raise CertificateError(cert_path, field, "not a PEM certificate") from None
    if cert.fingerprint(hashes.SHA256()).hex() != entry.get("sha256"):
        raise CertificateError(cert_path, field, "sha256 fingerprint differs from the manifest")
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if state is CertState.EXPIRED:
        if not_after >= now:
            raise CertificateError(cert_path, field, f"should be expired, valid to {not_after}")
    elif state is CertState.NOT_YET_VALID:
        if not_before - margin <= now:
            problem = f"should not be valid yet, valid from {not_before} (now {now})"
            raise CertificateError(cert_path, field, problem)
    elif not_before > now:
        raise CertificateError(cert_path, field, f"not valid before {not_before} (now {now})")
    elif not_after - margin <= now:
        problem = f"expires {not_after}, within {margin} of {now}"
        raise CertificateError(cert_path, field, problem)
    return cert_path, key_path, cert


def _write_pair(
    root: Path, field: str, pair: tuple[str, str], cert_pem: bytes, key_pem: bytes
) -> dict[str, str]:
    """Write the (cert, key) pair of relative paths (0644, 0600) and return their manifest entry."""
    cert_rel, key_rel = pair
    for rel in pair:  # refuse before writing either, so a pair is never left half replaced
        if (root / rel).exists() and not (root / rel).is_file():
            raise not_a_file(root / rel, field)
    write_atomic(root, root / key_rel, key_pem, 0o600, field)
    write_atomic(root, root / cert_rel, cert_pem, 0o644, field)
    cert = x509.load_pem_x509_certificate(cert_pem)
    return {
        "cert": cert_rel,
        "key": key_rel,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def valid_window(
    specs: list[ReceiverSpec], root: Path, margin: timedelta
) -> tuple[datetime, datetime]:
    """Return [from, until): when every date condition of refresh and check holds for specs.

    Call after both passed: it reads the same certificates (the CAs, the intermediate, each
    receiver's leaf and no-SNI pair) and states each condition of `_check_entry` as an interval.
    """
    manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    receivers = manifest["receivers"]
    dated: list[tuple[dict[str, Any], CertState | None]] = [
        (manifest[field], None) for field in (*CA_ORGANIZATIONS, INTERMEDIATE) if field in manifest
    ]
    for spec in specs:
        entry = receivers[spec.id]
        dated.append((entry, spec.certificate))
        if "no_sni" in entry:
            dated.append((entry["no_sni"], CertState.SELF_SIGNED))
    start, until = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    for entry, state in dated:
        cert = x509.load_pem_x509_certificate((root / entry["cert"]).read_bytes())
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
        if state is CertState.EXPIRED:  # passes while now > not_after
            start = max(start, not_after + timedelta(microseconds=1))
        elif state is CertState.NOT_YET_VALID:  # passes while not_before - margin > now
            until = min(until, not_before - margin)
        else:  # passes while not_before <= now < not_after - margin
            start, until = max(start, not_before), min(until, not_after - margin)
    return start, until
