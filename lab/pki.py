"""Lab PKI: a trusted lab CA, an untrusted CA, and one leaf per receiver pinned to its CertState."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.spec import CertState, ReceiverSpec

MANIFEST_NAME = "manifest.json"
FIX = "run `tlslab certs` (or `make certs`) to regenerate the lab certificates"
RENEW_MARGIN = timedelta(days=2)
VALID_FOR = timedelta(days=825)
MISMATCHED_NAME = "wrong-host.invalid-name.lab.test"
_DAY = timedelta(days=1)
_RSA = trustme.KeyType.RSA  # trustme's RSA keys are 2048-bit
_SERVER_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=True,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=False,
    crl_sign=False,
    encipher_only=False,
    decipher_only=False,
)


class CertificateError(Exception):
    """A lab certificate file is missing, stale or unreadable; str() names path, field and fix."""

    def __init__(self, path: Path, field: str, problem: str, fix: str = FIX) -> None:
        """Record which file and field are wrong, what is wrong, and how to fix it."""
        self.path = path
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path} [{field}]: {problem}; fix: {fix}")

    def __reduce__(self) -> tuple[type[CertificateError], tuple[Path, str, str, str]]:
        """Pickle with all four constructor arguments so the error survives process boundaries."""
        return (type(self), (self.path, self.field, self.problem, self.fix))


@dataclass(frozen=True)
class CertBundle:
    """The certificate and key one receiver presents, and the state they are pinned to."""

    receiver: str
    state: CertState
    mx_host: str
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class LabPki:
    """The lab CA senders trust, the CA nobody trusts, and each receiver's bundle."""

    root: Path
    ca_cert_path: Path
    untrusted_ca_cert_path: Path
    bundles: Mapping[str, CertBundle]

    @property
    def manifest_path(self) -> Path:
        """Return the path of the manifest that lists every generated file."""
        return self.root / MANIFEST_NAME

    def bundle(self, receiver: str) -> CertBundle:
        """Return the receiver's bundle; raise CertificateError naming the manifest if unknown."""
        try:
            return self.bundles[receiver]
        except KeyError:
            known = ", ".join(sorted(self.bundles)) or "none"
            problem = f"no certificate for receiver {receiver!r} (known: {known})"
            raise CertificateError(self.manifest_path, receiver, problem) from None


def ensure_certs(
    specs: Iterable[ReceiverSpec], root: Path, *, now: datetime | None = None
) -> LabPki:
    """Return the PKI under root, regenerating everything (new CAs) unless all of it is current."""
    spec_list = list(specs)
    ids = [spec.id for spec in spec_list]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate receiver ids in {sorted(ids)}")
    when = _utc(now)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root):
        try:
            return _check(spec_list, root, when, RENEW_MARGIN)
        except CertificateError:
            _generate(spec_list, root, when)
        return _check(spec_list, root, when, RENEW_MARGIN)


def load_certs(specs: Iterable[ReceiverSpec], root: Path) -> LabPki:
    """Return the PKI under root without generating; raise CertificateError if anything is off."""
    return _check(list(specs), root, _utc(None), timedelta(0))


def _utc(now: datetime | None) -> datetime:
    """Return now as an aware UTC datetime (naive input is taken as UTC; None means the clock)."""
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on root/.lock so concurrent callers do not generate twice."""
    with open(root / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _check(specs: list[ReceiverSpec], root: Path, now: datetime, margin: timedelta) -> LabPki:
    """Return the PKI described by the manifest, or raise CertificateError at the first problem."""
    manifest_path = root / MANIFEST_NAME
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CertificateError(manifest_path, "manifest", "file is missing") from None
    except (OSError, ValueError) as exc:
        raise CertificateError(manifest_path, "manifest", f"unreadable ({exc})") from None
    receivers = _section(manifest, "receivers", manifest_path, "manifest")
    ca_cert, _ = _check_entry(root, manifest_path, "lab-ca", manifest, None, now, margin)
    untrusted_cert, _ = _check_entry(
        root, manifest_path, "untrusted-ca", manifest, None, now, margin
    )
    bundles: dict[str, CertBundle] = {}
    for spec in specs:
        entry = _section(receivers, spec.id, manifest_path, spec.id)
        want = {"state": spec.certificate.value, "mx_host": spec.mx_host}
        have = {key: entry.get(key) for key in want}
        if have != want:
            problem = f"manifest has {have}, spec wants {want}"
            raise CertificateError(manifest_path, spec.id, problem)
        cert_path, key_path = _check_entry(
            root, manifest_path, spec.id, receivers, spec.certificate, now, margin
        )
        bundles[spec.id] = CertBundle(spec.id, spec.certificate, spec.mx_host, cert_path, key_path)
    return LabPki(root, ca_cert, untrusted_cert, MappingProxyType(bundles))


def _section(parent: Any, key: str, manifest_path: Path, field: str) -> dict[str, Any]:
    """Return parent[key] as a dict, or raise CertificateError naming the manifest and field."""
    value = parent.get(key) if isinstance(parent, dict) else None
    if not isinstance(value, dict):
        raise CertificateError(manifest_path, field, f"manifest has no {key!r} entry")
    return value


def _check_entry(
    root: Path,
    manifest_path: Path,
    field: str,
    parent: dict[str, Any],
    state: CertState | None,
    now: datetime,
    margin: timedelta,
) -> tuple[Path, Path]:
    """Return (cert, key) paths of parent[field] after checking files, fingerprint and dates."""
    entry = _section(parent, field, manifest_path, field)
    paths = []
    for key in ("cert", "key"):
        rel = entry.get(key)
        if not isinstance(rel, str):
            raise CertificateError(manifest_path, field, f"manifest entry lacks {key!r}")
        path = root / rel
        if not path.is_file():
            raise CertificateError(path, field, "file is missing")
        paths.append(path)
    cert_path, key_path = paths
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        raise CertificateError(cert_path, field, "not a PEM certificate") from None
    if cert.fingerprint(hashes.SHA256()).hex() != entry.get("sha256"):
        raise CertificateError(cert_path, field, "sha256 fingerprint differs from the manifest")
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    if state is CertState.EXPIRED:
        if not_after >= now:
            raise CertificateError(cert_path, field, f"should be expired, valid to {not_after}")
    elif not_before > now:
        raise CertificateError(cert_path, field, f"not valid before {not_before} (now {now})")
    elif not_after - margin <= now:
        problem = f"expires {not_after}, within {margin} of {now}"
        raise CertificateError(cert_path, field, problem)
    return cert_path, key_path


def _generate(specs: list[ReceiverSpec], root: Path, now: datetime) -> None:
    """Write fresh CAs, one leaf per spec, and then the manifest, all atomically per file."""
    cas = {
        "lab-ca": trustme.CA(key_type=_RSA, organization_name="Sender TLS Lab"),
        "untrusted-ca": trustme.CA(key_type=_RSA, organization_name="Untrusted (no sender)"),
    }
    receivers: dict[str, Any] = {}
    manifest: dict[str, Any] = {"generated": now.isoformat(), "receivers": receivers}
    for field, ca in cas.items():
        pems = ca.cert_pem.bytes(), ca.private_key_pem.bytes()
        manifest[field] = _write_pair(root, f"ca/{field}.pem", f"ca/{field}-key.pem", *pems)
    lab_ca, untrusted_ca = (_issuer(ca) for ca in cas.values())
    for spec in specs:
        state = spec.certificate
        issuer = untrusted_ca if state is CertState.UNTRUSTED_CA else lab_ca
        pems = _leaf(spec, None if state is CertState.SELF_SIGNED else issuer, now)
        entry = _write_pair(root, f"{spec.id}/cert.pem", f"{spec.id}/key.pem", *pems)
        receivers[spec.id] = {"state": state.value, "mx_host": spec.mx_host, **entry}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    _write_atomic(root / MANIFEST_NAME, text.encode("utf-8"), 0o644)


def _issuer(ca: trustme.CA) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """Return the trustme CA's certificate and RSA private key as cryptography objects."""
    key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"lab CAs must use RSA keys, got {type(key).__name__}")
    return x509.load_pem_x509_certificate(ca.cert_pem.bytes()), key


def _leaf(
    spec: ReceiverSpec, issuer: tuple[x509.Certificate, rsa.RSAPrivateKey] | None, now: datetime
) -> tuple[bytes, bytes]:
    """Return (cert PEM, key PEM) for the spec's state; issuer None means self-signed."""
    state = spec.certificate
    name = MISMATCHED_NAME if state is CertState.MISMATCHED else spec.mx_host
    if state is CertState.EXPIRED:
        not_before, not_after = now - 400 * _DAY, now - 30 * _DAY
    else:
        not_before, not_after = now - _DAY, now + VALID_FOR
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Sender TLS Lab ({state.value})"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    # Built here rather than by trustme, whose leaves mark the SAN critical next to a
    # non-empty subject, which RFC 5280 forbids and strict (WebPKI) verifiers reject.
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is None:
        # Issuer == subject and signed by its own key, yet still CA=false (no KeyUsage/AKI).
        cert = builder.issuer_name(subject).sign(key, hashes.SHA256())
    else:
        ca_cert, ca_key = issuer
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        cert = (
            builder.issuer_name(ca_cert.subject)
            .add_extension(_SERVER_KEY_USAGE, critical=True)
            .add_extension(aki, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_pair(
    root: Path, cert_rel: str, key_rel: str, cert_pem: bytes, key_pem: bytes
) -> dict[str, str]:
    """Write the cert (0644) and key (0600) under root and return their manifest entry."""
    _write_atomic(root / key_rel, key_pem, 0o600)
    _write_atomic(root / cert_rel, cert_pem, 0o644)
    cert = x509.load_pem_x509_certificate(cert_pem)
    return {
        "cert": cert_rel,
        "key": key_rel,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write data to path via a temp file in the same directory and a rename, with mode set."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
