"""Build the lab's certificates: the two CAs (trustme), the intermediate and one leaf per state."""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from lab.pki_layout import (  # noqa: F401  (re-exported: the names issuing uses)
    CA_ORGANIZATIONS,
    INTERMEDIATE,
    MISMATCHED_NAME,
    NOT_YET_VALID_IN,
    VALID_FOR,
)
from lab.pki_sha1 import issue_sha1
from lab.spec import CertState

Issuer = tuple[x509.Certificate, rsa.RSAPrivateKey]

KEY_BITS = {CertState.WEAK_KEY: 1024}  # every other leaf: 2048
_DAY = timedelta(days=1)
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
_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def new_ca(field: str) -> tuple[bytes, bytes]:
    """Return (cert PEM, key PEM) of a fresh RSA CA for `lab-ca` or `untrusted-ca`."""
    import trustme  # only when issuing: most runs reuse their CAs and skip this import

    ca = trustme.CA(key_type=trustme.KeyType.RSA, organization_name=CA_ORGANIZATIONS[field])
    return ca.cert_pem.bytes(), ca.private_key_pem.bytes()


def issuer_from_pem(cert_pem: bytes, key_pem: bytes) -> Issuer:
    """Return a CA's certificate and RSA key; raise ValueError if unusable or mismatched."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    # the lab made this key; skip OpenSSL's RSA self-consistency proof (50 ms a key): the check
    # that matters, key against certificate, follows
    key = serialization.load_pem_private_key(
        key_pem, password=None, unsafe_skip_rsa_key_validation=True
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"lab CAs use RSA keys, not {type(key).__name__}")
    if key.public_key() != cert.public_key():
        raise ValueError("the key does not match the certificate")
    return cert, key


def new_intermediate(issuer: Issuer, now: datetime) -> tuple[bytes, bytes]:
    """Return (cert PEM, key PEM) of a lab intermediate CA issued by `issuer` (the lab CA)."""
    ca_cert, ca_key = issuer
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Sender TLS Lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Sender TLS Lab intermediate CA"),
        ]
    )
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(min(now + VALID_FOR, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def leaf_names(state: CertState, mx_host: str) -> str:
    """Return the DNS name a state's leaf is issued for (its CN and only SAN)."""
    if state is CertState.MISMATCHED:
        return MISMATCHED_NAME
    if state is CertState.WILDCARD:
        return "*." + mx_host.partition(".")[2]
    return mx_host


def issue_leaf(
    state: CertState, mx_host: str, issuer: Issuer | None, now: datetime
) -> tuple[bytes, bytes]:
    """Return (cert PEM, key PEM) for the state's leaf; issuer None means self-signed."""
    name = leaf_names(state, mx_host)
    if state is CertState.EXPIRED:
        not_before, not_after = now - 400 * _DAY, now - 30 * _DAY
    elif state is CertState.NOT_YET_VALID:
        not_before, not_after = now + NOT_YET_VALID_IN, now + VALID_FOR
    else:
        not_before, not_after = now - _DAY, now + VALID_FOR
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS.get(state, 2048))
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Sender TLS Lab ({state.value})"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    extensions: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (x509.SubjectAlternativeName([x509.DNSName(name)]), False),
        (x509.ExtendedKeyUsage([_purpose(state)]), False),
        (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False),
    ]
    if issuer is not None:
        extensions.append((_SERVER_KEY_USAGE, True))
    if issuer is not None and state is CertState.SHA1_SIGNATURE:
        request = x509.CertificateSigningRequestBuilder().subject_name(subject)
        for extension, critical in extensions:
            request = request.add_extension(extension, critical=critical)
        dates = (not_before, not_after)
        return issue_sha1(request.sign(key, hashes.SHA256()), issuer, dates), _key_pem(key)
    # Built here rather than by trustme, whose leaves mark the SAN critical next to a
    # non-empty subject, which RFC 5280 forbids and strict (WebPKI) verifiers reject.
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    if issuer is None:
        # Issuer == subject and signed by its own key, yet still CA=false (no KeyUsage/AKI).
        cert = builder.issuer_name(subject).sign(key, hashes.SHA256())
    else:
        ca_cert, ca_key = issuer
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        builder = builder.add_extension(aki, critical=False).issuer_name(ca_cert.subject)
        cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _purpose(state: CertState) -> x509.ObjectIdentifier:
    """Return the one extendedKeyUsage a state's leaf carries: clientAuth for wrong-eku."""
    if state is CertState.WRONG_EKU:
        return ExtendedKeyUsageOID.CLIENT_AUTH
    return ExtendedKeyUsageOID.SERVER_AUTH


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    """Return an RSA key as unencrypted traditional PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
