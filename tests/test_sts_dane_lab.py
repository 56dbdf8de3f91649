"""One lab DNS per run carries DANE and MTA-STS records; the rfc-sender's MTA-STS seam, for real.

A local lab mixing DANE and MTA-STS receivers: the MTA-STS records validate as secure from the
lab trust anchor (in lab.test and in a DANE subzone), the seam reads real policies from the
policy host, and the rfc-sender lets DANE go first (RFC 8461 section 2).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.model import RfcSenderProfile
from harness.senders import SendAction, TestMessage, open_driver
from harness.senders.dnssec_resolver import Security, ValidatingResolver
from harness.senders.sts_source import LabStsSource
from lab.backends.base import BackendError, RunningLab
from lab.backends.local import LocalBackend
from lab.pki import LabPki
from lab.spec import ReceiverSpec, TlsVersion

STATES = ["dane-mismatch-sts-enforce", "greylist", "sts-enforce", "sts-fetch-404", "tls13"]
RFC = RfcSenderProfile(id="rfc-sender", driver="rfc")


@pytest.fixture(scope="module")
def mixed_lab(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningLab]:
    specs = [receiver_specs[state] for state in STATES]
    with LocalBackend().start(specs, lab_pki, tmp_path_factory.mktemp("mixed")) as lab:
        yield lab


def validator(lab: RunningLab) -> ValidatingResolver:
    assert lab.dns is not None
    return ValidatingResolver((lab.dns.host, lab.dns.port), lab.dns.trust_anchor)


@pytest.mark.parametrize("domain", ["sts-enforce.lab.test", "dane-mismatch-sts-enforce.lab.test"])
def test_the_sts_records_are_in_the_signed_zone_and_validate(
    mixed_lab: RunningLab, domain: str
) -> None:
    resolver = validator(mixed_lab)
    txt = resolver.lookup(f"_mta-sts.{domain}", "TXT")
    assert (txt.security, txt.records) == (Security.SECURE, ('"v=STSv1; id=lab1"',))
    rua = resolver.lookup(f"_smtp._tls.{domain}", "TXT")
    assert rua.security is Security.SECURE
    assert rua.records
    host = resolver.lookup(f"mta-sts.{domain}", "A")
    assert mixed_lab.policy_host is not None
    assert (host.security, host.records) == (Security.SECURE, (mixed_lab.policy_host[0],))
    none = resolver.lookup("_mta-sts.tls13.lab.test", "TXT")  # the control: no MTA-STS there
    assert (none.security, none.records) == (Security.SECURE, ())


def test_the_seam_reads_real_policies_from_the_policy_host(mixed_lab: RunningLab) -> None:
    source = LabStsSource.of_lab(mixed_lab)
    found = source.requirement("sts-enforce.lab.test", "mx.sts-enforce.lab.test")
    assert found is not None
    assert (found.mode, found.mx_matches) == ("enforce", True)
    assert "mode: enforce" in found.policy_text
    other = source.requirement("sts-enforce.lab.test", "mx.elsewhere.lab.test")
    assert other is not None
    assert not other.mx_matches
    assert source.requirement("sts-fetch-404.lab.test", "mx.sts-fetch-404.lab.test") is None
    said = source.account("sts-fetch-404.lab.test", "mx.sts-fetch-404.lab.test")
    assert "TXT 'v=STSv1; id=lab1'" in said
    assert "HTTP 404" in said
    assert source.requirement("tls13.lab.test", "mx.tls13.lab.test") is None
    assert "no _mta-sts TXT" in source.account("tls13.lab.test", "mx.tls13.lab.test")


def send(lab: RunningLab, receiver: str, tmp: Path) -> tuple[SendAction, str]:
    """Deliver one fresh message to `receiver` with the rfc-sender as the registry opens it."""
    driver = open_driver(RFC, lab, tmp)
    try:
        mail_from = f"probe-{secrets.token_hex(4)}@sender.lab.test"
        message_id = f"<{secrets.token_hex(8)}@sender.lab.test>"
        data = f"From: <{mail_from}>\r\nMessage-ID: {message_id}\r\n\r\nhi\r\n".encode()
        rcpt = f"inbox@{lab.endpoint(receiver).domain}"
        report = driver.send(TestMessage(message_id, mail_from, rcpt, data))
    finally:
        driver.close()
    return report.action, report.reason


def test_dane_goes_first_a_failing_tlsa_is_not_overridden_by_mta_sts(
    mixed_lab: RunningLab, tmp_path: Path
) -> None:
    action, reason = send(mixed_lab, "dane-mismatch-sts-enforce", tmp_path)
    assert action is SendAction.DEFERRED, reason
    assert "DANE failed" in reason
    assert "[MTA-STS" not in reason
    action, reason = send(mixed_lab, "sts-enforce", tmp_path)  # the control: MTA-STS alone
    assert action is SendAction.DELIVERED, reason
    assert "under policy sts-enforce" in reason
    assert "matched by mx.sts-enforce.lab.test" in reason


def test_the_rfc_sender_refuses_a_lab_without_its_dns(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    with LocalBackend().start([receiver_specs["tls13"]], lab_pki, tmp_path) as lab:
        assert lab.dns is None
        with pytest.raises(BackendError, match="needs the lab DNS"):
            open_driver(RFC, lab, tmp_path)


def test_mta_sts_enforce_refuses_tls_below_1_2(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    old = receiver_specs["sts-enforce"].model_copy(
        update={"tls_min": TlsVersion.TLS10, "tls_max": TlsVersion.TLS11}
    )  # the same domain, policy and valid certificate, but at most TLS 1.1
    with LocalBackend().start([old], lab_pki, tmp_path / "evidence") as lab:
        action, reason = send(lab, "sts-enforce", tmp_path)
    assert action is SendAction.DEFERRED, reason
    assert "needs TLS 1.2 or later, not TLSv1.1" in reason
    tls12 = old.model_copy(update={"tls_max": TlsVersion.TLS12})  # the control: TLS 1.2
    with LocalBackend().start([tls12], lab_pki, tmp_path / "evidence-12") as lab:
        action, reason = send(lab, "sts-enforce", tmp_path)
    assert action is SendAction.DELIVERED, reason
    assert "over TLSv1.2" in reason


def test_the_rfc_sender_retries_a_greylisted_message_and_delivers_on_the_retry(
    mixed_lab: RunningLab, tmp_path: Path
) -> None:
    action, reason = send(mixed_lab, "greylist", tmp_path)
    assert action is SendAction.DELIVERED, reason
    assert "attempt 1: deferred" in reason, reason
    assert "451" in reason.split("attempt 2", 1)[0], reason
    assert "attempt 2: delivered: " in reason, reason
    assert "over TLSv1.3" in reason.split("attempt 2", 1)[1], reason


def test_negative_control_a_receiver_that_accepts_at_once_gets_no_retry(
    mixed_lab: RunningLab, tmp_path: Path
) -> None:
    action, reason = send(mixed_lab, "tls13", tmp_path)
    assert action is SendAction.DELIVERED, reason
    assert "attempt" not in reason, reason
