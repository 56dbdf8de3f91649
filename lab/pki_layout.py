"""The lab PKI's names and shapes: CA fields, lifetimes, the manifest, bundles (no crypto)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from lab.cert_error import CertificateError
from lab.spec import CertState

CA_ORGANIZATIONS = {"lab-ca": "Sender TLS Lab", "untrusted-ca": "Untrusted (no sender)"}
INTERMEDIATE = "lab-intermediate"  # issued by lab-ca; signs the missing-intermediate leaf
VALID_FOR = timedelta(days=825)
NOT_YET_VALID_IN = timedelta(days=30)
MISMATCHED_NAME = "wrong-host.invalid-name.lab.test"
MANIFEST_NAME = "manifest.json"
RENEW_MARGIN = timedelta(days=2)


@dataclass(frozen=True)
class CertBundle:
    """The certificate and key one receiver presents, and the state they are pinned to."""

    receiver: str
    state: CertState
    mx_host: str
    cert_path: Path
    key_path: Path
    no_sni_cert_path: Path | None = None  # sni-only: the self-signed pair for clients without SNI
    no_sni_key_path: Path | None = None


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
