"""Prove each certificate state with cryptography and real TLS handshakes, not our manifest."""

from __future__ import annotations

import json
import ssl
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from pki_helpers import SPECS, bundle_for, cert, leaf

from lab.pki import (
    MISMATCHED_NAME,
    CertBundle,
    CertificateError,
    LabPki,
    ensure_certs,
    load_certs,
)
from lab.spec import CertState, ReceiverSpec

DEFECTS = {
    CertState.SELF_SIGNED: "self-signed certificate",
    CertState.EXPIRED: "certificate has expired",
    CertState.MISMATCHED: "Hostname mismatch",
    CertState.UNTRUSTED_CA: "unable to get local issuer certificate",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LabPki:
    return ensure_certs(SPECS, tmp_path_factory.mktemp("pki"))


def signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Check the raw RSA signature with the issuer's public key, ignoring names."""
    public = issuer.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    assert child.signature_hash_algorithm is not None
    try:
        public.verify(
            child.signature,
            child.tbs_certificate_bytes,
            padding.PKCS1v15(),
            child.signature_hash_algorithm,
        )
    except InvalidSignature:
        return False
    return True


def san_names(certificate: x509.Certificate) -> list[str]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.DNSName)


def common_names(certificate: x509.Certificate) -> list[str]:
    return [str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def verify(
    certificate: x509.Certificate, trust: Path, host: str, when: datetime | None = None
) -> None:
    """Verify with cryptography's WebPKI server verifier; raises VerificationError."""
    builder = PolicyBuilder().store(Store([cert(trust)])).time(when or datetime.now(UTC))
    builder.build_server_verifier(x509.DNSName(host)).verify(certificate, [])


def handshake(bundle: CertBundle, trust: Path, host: str) -> None:
    """Run a TLS handshake in memory between the bundle's cert and a strict client."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(bundle.cert_path, bundle.key_path)
    client_ctx = ssl.create_default_context(cafile=str(trust))
    assert client_ctx.check_hostname
    assert client_ctx.verify_mode == ssl.CERT_REQUIRED
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=host)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(20):
        finished = True
        for end in (client, server):
            try:
                end.do_handshake()
            except ssl.SSLWantReadError:
                finished = False
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if finished:
            assert client.getpeercert() is not None
            return
    raise AssertionError("handshake did not finish")


# --- verification against the lab CA ---------------------------------------------------


def test_valid_leaf_verifies_against_lab_ca(pki: LabPki) -> None:
    bundle = bundle_for(pki, CertState.VALID)
    verify(leaf(pki, CertState.VALID), pki.ca_cert_path, bundle.mx_host)
    handshake(bundle, pki.ca_cert_path, bundle.mx_host)


def test_valid_leaf_control_wrong_trust_or_name_fails(pki: LabPki) -> None:
    bundle = bundle_for(pki, CertState.VALID)
    with pytest.raises(VerificationError):
        verify(leaf(pki, CertState.VALID), pki.untrusted_ca_cert_path, bundle.mx_host)
    with pytest.raises(VerificationError):
        verify(leaf(pki, CertState.VALID), pki.ca_cert_path, "mx.other.lab.test")
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(bundle, pki.untrusted_ca_cert_path, bundle.mx_host)


@pytest.mark.parametrize("state", list(DEFECTS))
def test_defective_leaf_fails_verifier_and_handshake(pki: LabPki, state: CertState) -> None:
    bundle = bundle_for(pki, state)
    with pytest.raises(VerificationError):
        verify(leaf(pki, state), pki.ca_cert_path, bundle.mx_host)
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        handshake(bundle, pki.ca_cert_path, bundle.mx_host)
    assert DEFECTS[state] in caught.value.verify_message
    others = {message for other, message in DEFECTS.items() if other is not state}
    assert not any(message in caught.value.verify_message for message in others)


def test_defect_controls_pass_once_the_defect_is_removed(pki: LabPki) -> None:
    self_signed = bundle_for(pki, CertState.SELF_SIGNED)
    handshake(self_signed, self_signed.cert_path, self_signed.mx_host)  # pinned: it works
    untrusted = bundle_for(pki, CertState.UNTRUSTED_CA)
    handshake(untrusted, pki.untrusted_ca_cert_path, untrusted.mx_host)
    verify(leaf(pki, CertState.UNTRUSTED_CA), pki.untrusted_ca_cert_path, untrusted.mx_host)
    mismatched = bundle_for(pki, CertState.MISMATCHED)
    handshake(mismatched, pki.ca_cert_path, MISMATCHED_NAME)
    verify(leaf(pki, CertState.MISMATCHED), pki.ca_cert_path, MISMATCHED_NAME)
    expired = leaf(pki, CertState.EXPIRED)
    in_window = expired.not_valid_before_utc + timedelta(days=1)
    verify(expired, pki.ca_cert_path, bundle_for(pki, CertState.EXPIRED).mx_host, in_window)


# --- each defect, structurally ----------------------------------------------------------


def test_valid_leaf_structure(pki: LabPki) -> None:
    valid, ca = leaf(pki, CertState.VALID), cert(pki.ca_cert_path)
    mx_host = bundle_for(pki, CertState.VALID).mx_host
    assert valid.issuer == ca.subject != valid.subject
    assert signed_by(valid, ca)
    assert not signed_by(valid, cert(pki.untrusted_ca_cert_path))
    assert san_names(valid) == [mx_host]
    now = datetime.now(UTC)
    assert valid.not_valid_before_utc < now < valid.not_valid_after_utc - timedelta(days=2)


def test_self_signed_is_self_issued_non_ca_and_not_from_lab_ca(pki: LabPki) -> None:
    self_signed = leaf(pki, CertState.SELF_SIGNED)
    assert self_signed.issuer == self_signed.subject
    assert signed_by(self_signed, self_signed)
    assert not signed_by(self_signed, cert(pki.ca_cert_path))
    constraints = self_signed.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca is False
    assert san_names(self_signed) == [bundle_for(pki, CertState.SELF_SIGNED).mx_host]
    # control: a CA-issued leaf is not self-signed
    valid = leaf(pki, CertState.VALID)
    assert valid.issuer != valid.subject
    assert not signed_by(valid, valid)


def test_expired_is_past_not_after_but_otherwise_right(pki: LabPki) -> None:
    expired, now = leaf(pki, CertState.EXPIRED), datetime.now(UTC)
    assert expired.not_valid_after_utc < now
    assert signed_by(expired, cert(pki.ca_cert_path))
    assert san_names(expired) == [bundle_for(pki, CertState.EXPIRED).mx_host]
    assert leaf(pki, CertState.VALID).not_valid_after_utc > now  # control


def test_mismatched_names_exclude_mx_host_but_lab_ca_signed(pki: LabPki) -> None:
    mismatched, now = leaf(pki, CertState.MISMATCHED), datetime.now(UTC)
    mx_host = bundle_for(pki, CertState.MISMATCHED).mx_host
    assert mx_host not in san_names(mismatched)
    assert mx_host not in common_names(mismatched)
    assert san_names(mismatched) == [MISMATCHED_NAME]
    assert signed_by(mismatched, cert(pki.ca_cert_path))
    assert mismatched.not_valid_before_utc < now < mismatched.not_valid_after_utc
    valid = leaf(pki, CertState.VALID)  # control
    assert bundle_for(pki, CertState.VALID).mx_host in san_names(valid)


def test_untrusted_ca_leaf_is_issued_by_second_ca_only(pki: LabPki) -> None:
    untrusted_leaf = leaf(pki, CertState.UNTRUSTED_CA)
    lab_ca, untrusted_ca = cert(pki.ca_cert_path), cert(pki.untrusted_ca_cert_path)
    assert lab_ca.subject != untrusted_ca.subject
    assert untrusted_leaf.issuer == untrusted_ca.subject
    assert signed_by(untrusted_leaf, untrusted_ca)
    assert not signed_by(untrusted_leaf, lab_ca)
    assert san_names(untrusted_leaf) == [bundle_for(pki, CertState.UNTRUSTED_CA).mx_host]
    assert signed_by(leaf(pki, CertState.VALID), lab_ca)  # control


def test_cas_are_cas_and_distinct(pki: LabPki) -> None:
    for path in (pki.ca_cert_path, pki.untrusted_ca_cert_path):
        ca = cert(path)
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert signed_by(ca, ca)
    assert not signed_by(cert(pki.ca_cert_path), cert(pki.untrusted_ca_cert_path))


# --- keys -------------------------------------------------------------------------------


def key_files(pki: LabPki) -> dict[Path, Path]:
    pairs = {b.cert_path: b.key_path for b in pki.bundles.values()}
    for b in pki.bundles.values():
        if b.no_sni_cert_path is not None and b.no_sni_key_path is not None:
            pairs[b.no_sni_cert_path] = b.no_sni_key_path
    intermediate = pki.root / "ca" / "lab-intermediate.pem"
    for ca in (pki.ca_cert_path, pki.untrusted_ca_cert_path, intermediate):
        pairs[ca] = ca.with_name(ca.stem + "-key.pem")
    return pairs


def test_keys_are_rsa_2048_match_their_certs_and_are_private(pki: LabPki) -> None:
    pairs = key_files(pki)
    assert len(pairs) == len(SPECS) + 4  # three CAs and sni-only's pair for clients without SNI
    weak = bundle_for(pki, CertState.WEAK_KEY).cert_path
    for cert_path, key_path in pairs.items():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        assert key.key_size == (1024 if cert_path == weak else 2048)
        public = cert(cert_path).public_key()
        assert isinstance(public, rsa.RSAPublicKey)
        assert public.public_numbers() == key.public_key().public_numbers()
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(cert_path.stat().st_mode) != 0o600  # control: certs are public


def test_key_pairs_differ_control(pki: LabPki) -> None:
    valid = cert(bundle_for(pki, CertState.VALID).cert_path).public_key()
    other = serialization.load_pem_private_key(
        bundle_for(pki, CertState.EXPIRED).key_path.read_bytes(), password=None
    )
    assert isinstance(valid, rsa.RSAPublicKey)
    assert isinstance(other, rsa.RSAPrivateKey)
    assert valid.public_numbers() != other.public_key().public_numbers()


# --- errors -----------------------------------------------------------------------------


def test_load_certs_names_the_missing_file(tmp_path: Path) -> None:
    pki = ensure_certs(SPECS, tmp_path)
    assert load_certs(SPECS, tmp_path) == pki  # control
    missing = bundle_for(pki, CertState.MISMATCHED).cert_path
    missing.unlink()
    with pytest.raises(CertificateError) as caught:
        load_certs(SPECS, tmp_path)
    error = caught.value
    assert error.path == missing
    assert error.field == "r-mismatched"
    assert "tlslab certs" in error.fix
    assert "\n" not in str(error)
    assert all(part in str(error) for part in (str(missing), "r-mismatched", error.fix))
    assert not missing.exists()  # load_certs never generates


def test_load_certs_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(CertificateError) as caught:
        load_certs(SPECS, tmp_path)
    assert caught.value.path == tmp_path / "manifest.json"
    assert "tlslab certs" in str(caught.value)


def test_unknown_receiver_names_manifest_and_fix(pki: LabPki) -> None:
    assert pki.bundle("r-valid").mx_host == "mx.r-valid.lab.test"  # control
    with pytest.raises(CertificateError) as caught:
        pki.bundle("nope")
    assert caught.value.path == pki.root / "manifest.json"
    assert caught.value.field == "nope"
    assert "make certs" in str(caught.value)


def test_swapped_cert_file_is_detected_not_trusted_from_manifest(tmp_path: Path) -> None:
    pki = ensure_certs(SPECS, tmp_path)
    valid = bundle_for(pki, CertState.VALID).cert_path
    valid.write_bytes(bundle_for(pki, CertState.EXPIRED).cert_path.read_bytes())
    with pytest.raises(CertificateError, match="fingerprint") as caught:
        load_certs(SPECS, tmp_path)
    assert caught.value.path == valid
    regenerated = ensure_certs(SPECS, tmp_path)
    assert san_names(leaf(regenerated, CertState.VALID)) == ["mx.r-valid.lab.test"]


def test_manifest_records_relative_paths_dates_and_fingerprints(pki: LabPki) -> None:
    manifest = json.loads(pki.manifest_path.read_text())
    assert datetime.fromisoformat(manifest["generated"]).tzinfo is not None
    assert manifest["lab-ca"]["cert"] == "ca/lab-ca.pem"
    assert manifest["untrusted-ca"]["cert"] == "ca/untrusted-ca.pem"
    for name, bundle in pki.bundles.items():
        entry = manifest["receivers"][name]
        assert entry["state"] == bundle.state.value
        assert entry["mx_host"] == bundle.mx_host
        assert pki.root / entry["cert"] == bundle.cert_path
        assert pki.root / entry["key"] == bundle.key_path
        actual = cert(bundle.cert_path)
        assert entry["sha256"] == actual.fingerprint(hashes.SHA256()).hex()
        assert datetime.fromisoformat(entry["not_after"]) == actual.not_valid_after_utc


def test_duplicate_receiver_ids_are_rejected(tmp_path: Path) -> None:
    twins = [ReceiverSpec(id="twin"), ReceiverSpec(id="twin", certificate=CertState.EXPIRED)]
    with pytest.raises(ValueError, match="duplicate"):
        ensure_certs(twins, tmp_path)
    assert not (tmp_path / "manifest.json").exists()
