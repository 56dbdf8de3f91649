"""Build the lab's certificates: the two CAs (trustme) and one leaf per CertState (cryptography)."""

from __future__ import annotations

from datetime import datetime, timedelta

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.spec import CertState

Issuer = tuple[x509.Certificate, rsa.RSAPrivateKey]

CA_ORGANIZATIONS = {"lab-ca": "Sender TLS Lab", "untrusted-ca": "Untrusted (no sender)"}
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


def new_ca(field: str) -> tuple[bytes, bytes]:
    """Return (cert PEM, key PEM) of a fresh RSA CA for `lab-ca` or `untrusted-ca`."""
    ca = trustme.CA(key_type=_RSA, organization_name=CA_ORGANIZATIONS[field])
    return ca.cert_pem.bytes(), ca.private_key_pem.bytes()


def issuer_from_pem(cert_pem: bytes, key_pem: bytes) -> Issuer:
    """Return a CA's certificate and RSA key; raise ValueError if unusable or mismatched."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"lab CAs use RSA keys, not {type(key).__name__}")
    if key.public_key() != cert.public_key():
        raise ValueError("the key does not match the certificate")
    return cert, key


def issue_leaf(
    state: CertState, mx_host: str, issuer: Issuer | None, now: datetime
) -> tuple[bytes, bytes]:
    """Return (cert PEM, key PEM) for the state's leaf; issuer None means self-signed."""
    name = MISMATCHED_NAME if state is CertState.MISMATCHED else mx_host
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
