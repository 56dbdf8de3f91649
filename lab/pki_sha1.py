"""Issue a leaf signed with SHA-1 through the `openssl` CLI (cryptography refuses to sign SHA-1)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

OPENSSL_TIMEOUT = 30.0
# A throwaway `openssl ca` (not `x509 -req`, which cannot set notBefore in OpenSSL 3.0).
CA_CONFIG = """[ca]
default_ca = lab
[lab]
database = index.txt
new_certs_dir = .
serial = serial
policy = any
unique_subject = no
copy_extensions = copyall
x509_extensions = leaf
[any]
organizationName = optional
commonName = supplied
[leaf]
authorityKeyIdentifier = keyid:always
"""


def issue_sha1(
    request: x509.CertificateSigningRequest,
    issuer: tuple[x509.Certificate, rsa.RSAPrivateKey],
    dates: tuple[datetime, datetime],
) -> bytes:
    """Return the PEM certificate issuer signs for request with SHA-1 for the (from, to) dates."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ValueError("the openssl command is missing; install OpenSSL to issue sha1-signature")
    ca_cert, ca_key = issuer
    with tempfile.TemporaryDirectory(prefix="tlslab-sha1-") as folder:
        work = Path(folder)  # private (0700): the CA key is written here for openssl only
        (work / "leaf.csr").write_bytes(request.public_bytes(serialization.Encoding.PEM))
        (work / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        key_pem = ca_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        (work / "ca-key.pem").write_bytes(key_pem)
        (work / "ca.cnf").write_text(CA_CONFIG, encoding="ascii")
        (work / "index.txt").write_text("", encoding="ascii")
        (work / "serial").write_text(f"{x509.random_serial_number():040X}\n", encoding="ascii")
        start, end = (when.astimezone(UTC).strftime("%Y%m%d%H%M%SZ") for when in dates)
        command = [
            openssl, "ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem",
            "-keyfile", "ca-key.pem", "-in", "leaf.csr", "-out", "sha1.pem", "-md", "sha1",
            "-startdate", start, "-enddate", end, "-preserveDN", "-notext",
        ]  # fmt: skip
        done = subprocess.run(
            command, cwd=work, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT, check=False
        )
        if done.returncode != 0:
            raise ValueError(f"openssl could not sign with SHA-1: {done.stderr.strip()}")
        signed = (work / "sha1.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(signed)
    if not isinstance(cert.signature_hash_algorithm, hashes.SHA1):
        raise ValueError(f"openssl signed with {cert.signature_algorithm_oid}, not SHA-1")
    return signed


def verify_sha1_issued_by(cert: x509.Certificate, ca: x509.Certificate) -> None:
    """Raise ValueError or InvalidSignature unless ca's RSA key signed cert with SHA-1."""
    # cryptography's verify_directly_issued_by refuses SHA-1 signatures, so check by hand
    if cert.issuer != ca.subject:
        raise ValueError("the issuer name is not the CA's subject")
    if not isinstance(cert.signature_hash_algorithm, hashes.SHA1):
        raise ValueError("not signed with SHA-1")
    key = ca.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("lab CAs use RSA keys")
    key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hashes.SHA1())
