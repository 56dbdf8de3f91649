"""The signed lab DNS on loopback, validated by dnspython from the lab trust anchor: each defect."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from harness.senders.dnssec_resolver import Security, ValidatingResolver
from lab.backends.base import RunningLab
from lab.backends.local import LocalBackend
from lab.dns_signing import ds_text, new_key
from lab.dns_zones import TrustAnchor
from lab.pki import LabPki
from lab.spec import ReceiverSpec

STATES = (
    "dane-ee", "dane-bogus", "dane-expired-rrsig", "dane-insecure", "dane-tlsa-servfail", "tls13",
)  # fmt: skip
MISSING_DS = ReceiverSpec.model_validate(
    {
        "id": "dane-missing-ds",
        "dane": {
            "signing": "missing-ds",
            "tlsa": [{"usage": 3, "selector": 1, "matching": 1, "of": "leaf"}],
        },
    }
)


@pytest.fixture(scope="module")
def lab(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningLab]:
    """Start receivers for a few states (and one signed zone without DS) and the lab DNS."""
    from lab.pki import ensure_certs

    specs = [receiver_specs[s] for s in STATES] + [MISSING_DS]
    pki = ensure_certs(specs, lab_pki.root)
    with LocalBackend().start(specs, pki, tmp_path_factory.mktemp("dnssec")) as running:
        yield running


def resolver(lab: RunningLab, anchor: TrustAnchor | None = None) -> ValidatingResolver:
    """Return a validating resolver against the lab DNS (the run's anchor unless given)."""
    assert lab.dns is not None
    return ValidatingResolver((lab.dns.host, lab.dns.port), anchor or lab.dns.trust_anchor)


def tlsa(state: str) -> str:
    return f"_25._tcp.mx.{state}.lab.test"


def test_secure_tlsa_mx_and_a_validate(lab: RunningLab) -> None:
    check = resolver(lab)
    for name, rdtype in (
        ("dane-ee.lab.test", "MX"),
        ("mx.dane-ee.lab.test", "A"),
        (tlsa("dane-ee"), "TLSA"),
    ):
        found = check.lookup(name, rdtype)
        assert found.security is Security.SECURE, found.as_text()
        assert found.records
    assert check.lookup(tlsa("dane-ee"), "TLSA").records[0].startswith("3 1 1 ")


def test_a_foreign_trust_anchor_makes_the_same_answers_bogus(lab: RunningLab) -> None:
    key = new_key()
    foreign = TrustAnchor("lab.test", key.dnskey.to_text(), ds_text(dns_name("lab.test"), key))
    found = resolver(lab, foreign).lookup(tlsa("dane-ee"), "TLSA")
    assert found.security is Security.BOGUS
    assert "matches its DS" in found.reason


def test_broken_tlsa_signature_is_bogus_while_the_zone_s_mx_is_secure(lab: RunningLab) -> None:
    check = resolver(lab)
    assert check.lookup("dane-bogus.lab.test", "MX").security is Security.SECURE
    found = check.lookup(tlsa("dane-bogus"), "TLSA")
    assert found.security is Security.BOGUS
    assert "does not verify" in found.reason
    assert found.records == ()


def test_expired_tlsa_rrsig_is_bogus_and_says_expired(lab: RunningLab) -> None:
    check = resolver(lab)
    assert check.lookup("mx.dane-expired-rrsig.lab.test", "A").security is Security.SECURE
    found = check.lookup(tlsa("dane-expired-rrsig"), "TLSA")
    assert found.security is Security.BOGUS
    assert "expired at" in found.reason


@pytest.mark.parametrize("state", ["dane-insecure", "dane-missing-ds"])
def test_a_zone_without_ds_is_insecure_and_its_tlsa_still_answers(
    lab: RunningLab, state: str
) -> None:
    check = resolver(lab)
    for name, rdtype in ((f"{state}.lab.test", "MX"), (tlsa(state), "TLSA")):
        found = check.lookup(name, rdtype)
        assert found.security is Security.INSECURE, found.as_text()
        assert found.records
        assert f"unsigned delegation at {state}.lab.test" in found.reason


def test_tlsa_servfail_fails_while_the_address_is_secure(lab: RunningLab) -> None:
    check = resolver(lab)
    assert check.lookup("mx.dane-tlsa-servfail.lab.test", "A").security is Security.SECURE
    found = check.lookup(tlsa("dane-tlsa-servfail"), "TLSA")
    assert found.security is Security.FAILED
    assert "SERVFAIL" in found.reason


def test_no_tlsa_in_the_signed_parent_is_a_secure_denial(lab: RunningLab) -> None:
    found = resolver(lab).lookup(tlsa("tls13"), "TLSA")
    assert (found.security, found.rcode, found.records) == (Security.SECURE, "NXDOMAIN", ())
    nodata = resolver(lab).lookup("mx.tls13.lab.test", "TLSA")
    assert (nodata.security, nodata.rcode) == (Security.SECURE, "NOERROR")


def test_the_parent_answers_ds_for_a_child_apex_and_the_child_its_soa(lab: RunningLab) -> None:
    assert lab.dns is not None
    server = (lab.dns.host, lab.dns.port)
    ds = ask(server, "dane-ee.lab.test", "DS")
    assert ds.flags & dns.flags.AA
    assert {r.rdtype for r in ds.answer} == {dns.rdatatype.DS, dns.rdatatype.RRSIG}
    insecure = ask(server, "dane-insecure.lab.test", "DS")
    assert insecure.answer == []
    assert any(r.name == dns_name("dane-insecure.lab.test") for r in insecure.authority)
    soa = ask(server, "dane-ee.lab.test", "SOA")
    assert soa.answer[0].name == dns_name("dane-ee.lab.test")


def test_the_lab_dns_stops_with_the_lab(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    spec = receiver_specs["dane-ee"]
    with LocalBackend().start([spec], lab_pki, tmp_path) as running:
        assert running.dns is not None
        server = (running.dns.host, running.dns.port)
        assert ask(server, "dane-ee.lab.test", "MX").rcode() == dns.rcode.NOERROR
    with pytest.raises(dns.exception.Timeout):
        ask(server, "dane-ee.lab.test", "MX", timeout=0.5)


def test_a_lab_without_dane_receivers_starts_no_dns(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    with LocalBackend().start([receiver_specs["tls13"]], lab_pki, tmp_path) as running:
        assert running.dns is None


def ask(
    server: tuple[str, int], name: str, rdtype: str, timeout: float = 3.0
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    return dns.query.udp(query, server[0], port=server[1], timeout=timeout)


def dns_name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)
