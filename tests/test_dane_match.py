"""TLSA matching as RFC 7672 section 3 says, on the lab's real certificates."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harness.senders.dane_match import Tlsa, authenticate
from lab.dane_spec import TlsaRecord, TlsaSubject
from lab.dns_zones import tlsa_data
from lab.pki import LabPki


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def record(pki: LabPki, receiver: str, usage: int, of: TlsaSubject, matching: int = 1) -> Tlsa:
    leaf = pki.bundle(receiver).cert_path.read_bytes()
    spec = TlsaRecord(usage=usage, selector=1, matching=matching, of=of)
    return Tlsa.parse(tlsa_data(spec, leaf, pki.ca_cert_path.read_bytes()))


def chain(pki: LabPki, receiver: str, *, with_ca: bool) -> list[bytes]:
    leaf = der(pki.bundle(receiver).cert_path.read_bytes())
    return [leaf, der(pki.ca_cert_path.read_bytes())] if with_ca else [leaf]


def test_dane_ee_matches_the_leaf_whatever_its_name_and_dates(lab_pki: LabPki) -> None:
    for receiver in ("dane-ee", "dane-ee-expired", "dane-ee-name-mismatch"):
        for matching in (0, 1, 2):
            ee = record(lab_pki, receiver, 3, TlsaSubject.LEAF, matching)
            result = authenticate(
                chain(lab_pki, receiver, with_ca=False), f"mx.{receiver}.lab.test", [ee]
            )
            assert result.ok, (receiver, matching, result.reason)


def test_dane_ee_for_another_key_fails(lab_pki: LabPki) -> None:
    other = record(lab_pki, "dane-ee", 3, TlsaSubject.OTHER)
    result = authenticate(chain(lab_pki, "dane-ee", with_ca=True), "mx.dane-ee.lab.test", [other])
    assert not result.ok
    assert "matches the presented chain" in result.reason


def test_dane_ta_needs_the_anchor_in_the_chain_and_the_mx_host_name(lab_pki: LabPki) -> None:
    ta = record(lab_pki, "dane-ta", 2, TlsaSubject.CA)
    host = "mx.dane-ta.lab.test"
    assert authenticate(chain(lab_pki, "dane-ta", with_ca=True), host, [ta]).ok
    assert not authenticate(chain(lab_pki, "dane-ta", with_ca=False), host, [ta]).ok
    wrong = authenticate(chain(lab_pki, "dane-ta", with_ca=True), "mx.elsewhere.lab.test", [ta])
    assert not wrong.ok
    assert "does not verify" in wrong.reason
    misnamed = authenticate(
        chain(lab_pki, "dane-ta-name-mismatch", with_ca=True),
        "mx.dane-ta-name-mismatch.lab.test",
        [ta],
    )
    assert not misnamed.ok


def test_usages_0_and_1_are_not_usable_even_when_they_match(lab_pki: LabPki) -> None:
    pkix_ee = record(lab_pki, "dane-ee", 1, TlsaSubject.LEAF)
    pkix_ta = record(lab_pki, "dane-ee", 0, TlsaSubject.CA)
    assert not pkix_ee.usable
    assert not pkix_ta.usable
    result = authenticate(
        chain(lab_pki, "dane-ee", with_ca=True), "mx.dane-ee.lab.test", [pkix_ee, pkix_ta]
    )
    assert not result.ok
