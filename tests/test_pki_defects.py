"""Each certificate defect state proven on the issued files with cryptography, against `valid`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from pki_helpers import SPECS, bundle_for, cert, leaf

from lab.pki import LabPki, ensure_certs, load_certs
from lab.pki_sha1 import verify_sha1_issued_by
from lab.spec import CertState, ReceiverSpec


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPki:
    """Issue one receiver per certificate state."""
    return ensure_certs(SPECS, tmp_path_factory.mktemp("certs"))


def intermediate(pki: LabPki) -> x509.Certificate:
    """Return the lab intermediate CA."""
    return cert(pki.root / "ca" / "lab-intermediate.pem")


def names(certificate: x509.Certificate) -> list[str]:
    """Return the certificate's DNS subjectAltNames."""
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName)


def purposes(certificate: x509.Certificate) -> list[x509.ObjectIdentifier]:
    """Return the certificate's extendedKeyUsage purposes."""
    return list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def rsa_bits(certificate: x509.Certificate) -> int:
    """Return the size of the certificate's RSA key."""
    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    return key.key_size


def test_valid_leaf_is_the_control_for_every_property(pki: LabPki) -> None:
    valid = leaf(pki, CertState.VALID)
    now = datetime.now(UTC)
    assert valid.not_valid_before_utc < now < valid.not_valid_after_utc
    valid.verify_directly_issued_by(cert(pki.ca_cert_path))
    assert isinstance(valid.signature_hash_algorithm, hashes.SHA256)
    assert rsa_bits(valid) == 2048
    assert purposes(valid) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert names(valid) == ["mx.r-valid.lab.test"]


def test_not_yet_valid_starts_in_the_future(pki: LabPki) -> None:
    defect = leaf(pki, CertState.NOT_YET_VALID)
    assert defect.not_valid_before_utc > datetime.now(UTC)
    defect.verify_directly_issued_by(cert(pki.ca_cert_path))


def test_missing_intermediate_is_issued_by_the_intermediate_and_sent_alone(pki: LabPki) -> None:
    bundle = bundle_for(pki, CertState.MISSING_INTERMEDIATE)
    chain = x509.load_pem_x509_certificates(bundle.cert_path.read_bytes())
    assert len(chain) == 1, "the receiver must send the leaf only"
    defect, middle = chain[0], intermediate(pki)
    with pytest.raises((ValueError, InvalidSignature)):
        defect.verify_directly_issued_by(cert(pki.ca_cert_path))
    defect.verify_directly_issued_by(middle)
    middle.verify_directly_issued_by(cert(pki.ca_cert_path))
    assert middle.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_weak_key_is_rsa_1024(pki: LabPki) -> None:
    defect = leaf(pki, CertState.WEAK_KEY)
    assert rsa_bits(defect) == 1024
    defect.verify_directly_issued_by(cert(pki.ca_cert_path))


def test_sha1_signature_is_signed_with_sha1_by_the_lab_ca(pki: LabPki) -> None:
    defect = leaf(pki, CertState.SHA1_SIGNATURE)
    assert isinstance(defect.signature_hash_algorithm, hashes.SHA1)
    assert defect.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA1
    verify_sha1_issued_by(defect, cert(pki.ca_cert_path))
    with pytest.raises((ValueError, InvalidSignature)):
        verify_sha1_issued_by(defect, cert(pki.untrusted_ca_cert_path))
    assert names(defect) == ["mx.r-sha1-signature.lab.test"]
    assert purposes(defect) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_wrong_eku_allows_client_auth_only(pki: LabPki) -> None:
    defect = leaf(pki, CertState.WRONG_EKU)
    assert purposes(defect) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    defect.verify_directly_issued_by(cert(pki.ca_cert_path))


def test_wildcard_names_the_mx_hosts_parent_domain(pki: LabPki) -> None:
    wildcard = leaf(pki, CertState.WILDCARD)
    assert names(wildcard) == ["*.r-wildcard.lab.test"]
    wildcard.verify_directly_issued_by(cert(pki.ca_cert_path))


def test_sni_only_has_a_valid_leaf_and_a_self_signed_one_for_no_sni(pki: LabPki) -> None:
    bundle = bundle_for(pki, CertState.SNI_ONLY)
    named = cert(bundle.cert_path)
    named.verify_directly_issued_by(cert(pki.ca_cert_path))
    assert names(named) == ["mx.r-sni-only.lab.test"]
    assert bundle.no_sni_cert_path is not None
    unnamed = cert(bundle.no_sni_cert_path)
    unnamed.verify_directly_issued_by(unnamed)
    assert unnamed.issuer == unnamed.subject
    assert bundle_for(pki, CertState.VALID).no_sni_cert_path is None


def test_a_state_change_reissues_the_leaf(tmp_path: Path) -> None:
    before = ensure_certs([ReceiverSpec(id="r", certificate=CertState.VALID)], tmp_path)
    assert rsa_bits(cert(before.bundle("r").cert_path)) == 2048
    after = ensure_certs([ReceiverSpec(id="r", certificate=CertState.WEAK_KEY)], tmp_path)
    assert rsa_bits(cert(after.bundle("r").cert_path)) == 1024
    again = ensure_certs([ReceiverSpec(id="r", certificate=CertState.SNI_ONLY)], tmp_path)
    assert again.bundle("r").no_sni_cert_path is not None


def test_a_broken_no_sni_pair_is_refused_and_reissued(tmp_path: Path) -> None:
    specs = [ReceiverSpec(id="r", certificate=CertState.SNI_ONLY)]
    pki = ensure_certs(specs, tmp_path)
    path = pki.bundle("r").no_sni_cert_path
    assert path is not None
    path.write_bytes(pki.bundle("r").cert_path.read_bytes())
    with pytest.raises(Exception, match="fingerprint"):
        load_certs(specs, tmp_path)
    repaired = ensure_certs(specs, tmp_path)
    assert cert(path).issuer == cert(path).subject
    load_certs(specs, repaired.root)


def test_a_replaced_intermediate_reissues_every_leaf_it_signed(tmp_path: Path) -> None:
    mine = [ReceiverSpec(id="mine", certificate=CertState.MISSING_INTERMEDIATE)]
    other = [ReceiverSpec(id="other", certificate=CertState.MISSING_INTERMEDIATE)]
    ensure_certs(mine + other, tmp_path)
    (tmp_path / "ca" / "lab-intermediate.pem").unlink()
    pki = ensure_certs(mine, tmp_path)  # another run's leaf must follow the new intermediate
    load_certs(mine + other, tmp_path)
    manifest = json.loads(pki.manifest_path.read_text())
    assert set(manifest["receivers"]) == {"mine", "other"}
    cert(tmp_path / "other" / "cert.pem").verify_directly_issued_by(intermediate(pki))
