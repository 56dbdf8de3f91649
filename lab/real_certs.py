"""Real certificates for `tlslab up --cert`: check that a PEM pair is usable for one receiver."""

from __future__ import annotations

import dataclasses
import ssl
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from lab.pki import CertBundle, CertificateError, LabPki
from lab.spec import CertState, ReceiverSpec

CERT_FIX = (
    "pass the full chain and its private key, issued for the MX host (e.g. by an ACME client)"
)


def _public_der(key: object) -> bytes:
    """Return a public key as DER SubjectPublicKeyInfo bytes."""
    return key.public_bytes(  # type: ignore[attr-defined,no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def names_of(cert: x509.Certificate) -> list[str]:
    """Return the DNS names a certificate is for: its SAN entries, else its common name."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [name.lower() for name in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [
            str(a.value).lower() for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]


def matches(name: str, host: str) -> bool:
    """Return True when a certificate name (exact, or one-label wildcard) covers `host`."""
    if name.startswith("*."):
        return "." in host and host.split(".", 1)[1] == name[2:]
    return name == host


def check_real_cert(
    spec: ReceiverSpec, cert_path: Path, key_path: Path, now: datetime | None = None
) -> None:
    """Raise CertificateError naming the file unless the pair is a current cert for the MX host."""
    field = f"--cert {spec.id}"
    if spec.certificate is not CertState.VALID or not spec.starttls:
        raise CertificateError(
            cert_path, field, f"receiver '{spec.id}' is a defective or no-TLS state",
            "give real certificates only to valid-certificate states (tls10..tls13)",
        )  # fmt: skip
    try:
        chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except (OSError, ValueError) as error:
        problem = f"not a PEM certificate ({error})"
        raise CertificateError(cert_path, field, problem, CERT_FIX) from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        problem = f"not an unencrypted PEM private key ({error})"
        raise CertificateError(key_path, field, problem, CERT_FIX) from None
    leaf = chain[0]
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        raise CertificateError(key_path, field, f"does not match the certificate {cert_path}",
                               "pass the private key that belongs to this certificate")  # fmt: skip
    names = names_of(leaf)
    if not any(matches(name, spec.mx_host) for name in names):
        raise CertificateError(cert_path, field, f"names {names}, not the MX host {spec.mx_host}",
                               f"issue it for {spec.mx_host}")  # fmt: skip
    when = now or datetime.now(UTC)
    if not leaf.not_valid_before_utc <= when < leaf.not_valid_after_utc:
        raise CertificateError(
            cert_path, field,
            f"not valid now (valid {leaf.not_valid_before_utc} to {leaf.not_valid_after_utc})",
            "renew it",
        )  # fmt: skip
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert_path, key_path)
    except ssl.SSLError as error:
        raise CertificateError(cert_path, field, f"OpenSSL refuses it: {error}", CERT_FIX) from None


def with_real_certs(
    pki: LabPki, specs: list[ReceiverSpec], real: dict[str, tuple[Path, Path]]
) -> LabPki:
    """Return the PKI with the given receivers' bundles replaced by their real certificates."""
    if not real:
        return pki
    bundles = dict(pki.bundles)
    for spec in specs:
        if spec.id in real:
            cert, key = real[spec.id]
            bundles[spec.id] = CertBundle(spec.id, CertState.VALID, spec.mx_host, cert, key)
    return dataclasses.replace(pki, bundles=MappingProxyType(bundles))
