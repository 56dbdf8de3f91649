"""Shared by the PKI tests: one receiver per certificate state, and readers of what was issued."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from lab.pki import CertBundle, LabPki
from lab.spec import CertState, ReceiverSpec

SPECS = [ReceiverSpec(id=f"r-{state.value}", certificate=state) for state in CertState]
LEAVES = {spec.id for spec in SPECS}
ALL = LEAVES | {"lab-ca", "untrusted-ca"}


def bundle_for(pki: LabPki, state: CertState) -> CertBundle:
    """Return the bundle of the receiver in SPECS pinned to `state`."""
    return pki.bundle(f"r-{state.value}")


def cert(path: Path) -> x509.Certificate:
    """Return the PEM certificate stored at path."""
    return x509.load_pem_x509_certificate(path.read_bytes())


def leaf(pki: LabPki, state: CertState) -> x509.Certificate:
    """Return the leaf certificate of the receiver pinned to `state`."""
    return cert(bundle_for(pki, state).cert_path)


def fingerprint(path: Path) -> str:
    """Return the SHA-256 fingerprint (hex) of the certificate stored at path."""
    return cert(path).fingerprint(hashes.SHA256()).hex()


def fingerprints(pki: LabPki) -> dict[str, str]:
    """Return name -> fingerprint for both CAs and every bundle of pki."""
    paths = {name: b.cert_path for name, b in pki.bundles.items()}
    paths |= {"lab-ca": pki.ca_cert_path, "untrusted-ca": pki.untrusted_ca_cert_path}
    return {name: fingerprint(p) for name, p in paths.items()}
