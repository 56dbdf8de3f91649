"""The certificate and cipher defect states proven on real handshakes, each with a control.

A verifying client (the lab CA, check_hostname, TLS 1.2-1.3, Python's default ciphers) must fail
on every certificate defect and succeed on `tls13` and `wildcard`; the cipher states are proven
by what each client offers. The local lab runs only the states of this module and `tls13`.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
from test_receiver_states import (
    V12,
    V13,
    Attempt,
    assert_failed_handshake,
    assert_tls_delivery,
    client_context,
    deliver,
    failed_starttls,
    session_record,
    smtp_session,
    verifying_context,
)

from lab.backends.base import RunningLab
from lab.backends.local import LocalBackend
from lab.pki import LabPki
from lab.serve import ReceiverEndpoint
from lab.spec import ReceiverSpec

pytestmark = pytest.mark.integration

# state -> what OpenSSL 3.0 says when a verifying client (security level 2) rejects it
VERIFY_FAILURES = {
    "not-yet-valid": "certificate is not yet valid",
    "missing-intermediate": "unable to get local issuer certificate",
    "weak-key": "EE certificate key too weak",
    "sha1-signature": "CA signature digest algorithm too weak",
    "wrong-eku": "unsuitable certificate purpose",
}
STATES = ["tls13", *VERIFY_FAILURES, "wildcard", "sni-only", "no-pfs", "no-shared-cipher"]


@pytest.fixture(scope="module")
def lab(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningLab]:
    """Run this module's receiver states on the local backend."""
    missing = sorted(set(STATES) - set(receiver_specs))
    assert not missing, f"receiver states missing from scenarios/receivers/: {missing}"
    evidence = tmp_path_factory.mktemp("evidence")
    specs = [receiver_specs[state] for state in STATES]
    with LocalBackend().start(specs, lab_pki, evidence) as running:
        yield running


def verifying_at(pki: LabPki, level: int) -> ssl.SSLContext:
    """Return the verifying client at OpenSSL security level `level` (Postfix verify uses 1)."""
    context = verifying_context(pki)
    context.set_ciphers(f"DEFAULT:@SECLEVEL={level}")
    return context


def served_certificate(
    endpoint: ReceiverEndpoint, context: ssl.SSLContext, server_name: str | None
) -> tuple[bytes, Attempt]:
    """Run EHLO, STARTTLS and a handshake sending SNI server_name (None: no SNI); return the
    DER certificate the receiver served and the attempt."""
    with smtp_session(endpoint) as (smtp, attempt):
        smtp.ehlo()
        code, reply = smtp.docmd("STARTTLS")
        assert code == 220, f"STARTTLS: {code} {reply!r}"
        assert smtp.sock is not None
        smtp.sock = context.wrap_socket(smtp.sock, server_hostname=server_name)
        served = smtp.sock.getpeercert(binary_form=True)
        assert served is not None
    return served, attempt


def assert_no_shared_cipher(endpoint: ReceiverEndpoint, attempt: Attempt) -> None:
    """Assert the receiver recorded a handshake that failed for want of a shared cipher."""
    record = assert_failed_handshake(endpoint, attempt)
    reason = str(record["tls_error"]).lower().replace("_", " ")
    assert "no shared cipher" in reason, record["tls_error"]


# ---------------------------------------------------------------- the certificate family


def test_verifying_client_delivers_to_tls13_the_negative_control(
    lab: RunningLab, lab_pki: LabPki
) -> None:
    endpoint = lab.endpoint("tls13")
    assert_tls_delivery(endpoint, deliver(endpoint, verifying_context(lab_pki)), V13)


@pytest.mark.parametrize("state", list(VERIFY_FAILURES))
def test_verifying_client_rejects_each_certificate_defect(
    lab: RunningLab, lab_pki: LabPki, state: str
) -> None:
    endpoint = lab.endpoint(state)
    attempt, error = failed_starttls(endpoint, verifying_context(lab_pki))
    assert isinstance(error, ssl.SSLCertVerificationError), repr(error)
    assert VERIFY_FAILURES[state] in str(error.verify_message), error.verify_message
    assert_failed_handshake(endpoint, attempt)


@pytest.mark.parametrize("state", [*VERIFY_FAILURES, "wildcard"])
def test_non_verifying_client_delivers_over_tls13_despite_the_certificate(
    lab: RunningLab, receiver_specs: dict[str, ReceiverSpec], state: str
) -> None:
    endpoint = lab.endpoint(state)
    assert_tls_delivery(endpoint, deliver(endpoint, client_context(V12, V13, None)), V13)


def test_wildcard_certificate_verifies_for_the_mx_host(
    lab: RunningLab, lab_pki: LabPki, receiver_specs: dict[str, ReceiverSpec]
) -> None:
    assert receiver_specs["wildcard"].mx_host == "mx.wildcard.lab.test"
    endpoint = lab.endpoint("wildcard")
    assert_tls_delivery(endpoint, deliver(endpoint, verifying_context(lab_pki)), V13)


def test_missing_intermediate_verifies_once_the_client_holds_the_intermediate(
    lab: RunningLab, lab_pki: LabPki
) -> None:
    context = verifying_context(lab_pki)
    context.load_verify_locations(cafile=str(lab_pki.root / "ca" / "lab-intermediate.pem"))
    endpoint = lab.endpoint("missing-intermediate")
    assert_tls_delivery(endpoint, deliver(endpoint, context), V13)


def test_weak_key_passes_a_level_1_verifier_and_fails_at_level_2(
    lab: RunningLab, lab_pki: LabPki
) -> None:
    endpoint = lab.endpoint("weak-key")
    assert_tls_delivery(endpoint, deliver(endpoint, verifying_at(lab_pki, 1)), V13)
    _attempt, error = failed_starttls(endpoint, verifying_at(lab_pki, 2))
    assert isinstance(error, ssl.SSLCertVerificationError), repr(error)
    assert "EE certificate key too weak" in str(error.verify_message)


def test_sha1_signature_fails_a_level_1_verifier_and_passes_at_level_0(
    lab: RunningLab, lab_pki: LabPki
) -> None:
    endpoint = lab.endpoint("sha1-signature")
    _attempt, error = failed_starttls(endpoint, verifying_at(lab_pki, 1))
    assert isinstance(error, ssl.SSLCertVerificationError), repr(error)
    assert "CA signature digest algorithm too weak" in str(error.verify_message)
    assert_tls_delivery(endpoint, deliver(endpoint, verifying_at(lab_pki, 0)), V13)


def test_sni_only_serves_the_valid_certificate_to_a_client_naming_the_mx_host(
    lab: RunningLab, lab_pki: LabPki
) -> None:
    endpoint = lab.endpoint("sni-only")
    assert_tls_delivery(endpoint, deliver(endpoint, verifying_context(lab_pki)), V13)


def test_sni_only_serves_a_self_signed_certificate_without_sni(
    lab: RunningLab, lab_pki: LabPki
) -> None:
    endpoint = lab.endpoint("sni-only")
    bundle = lab_pki.bundle("sni-only")
    assert bundle.no_sni_cert_path is not None
    verifying = verifying_context(lab_pki)
    verifying.check_hostname = False  # no SNI means no name to check; the chain still is
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        served_certificate(endpoint, verifying, None)
    assert "self-signed certificate" in str(caught.value.verify_message)
    served, attempt = served_certificate(endpoint, client_context(V12, V13, None), None)
    assert served == ssl.PEM_cert_to_DER_cert(bundle.no_sni_cert_path.read_text())
    assert served != ssl.PEM_cert_to_DER_cert(bundle.cert_path.read_text())
    assert session_record(endpoint, attempt)["sni"] is None


def test_sni_only_serves_the_self_signed_certificate_for_another_name(
    lab: RunningLab, lab_pki: LabPki
) -> None:
    endpoint = lab.endpoint("sni-only")
    bundle = lab_pki.bundle("sni-only")
    assert bundle.no_sni_cert_path is not None
    served, attempt = served_certificate(endpoint, client_context(V12, V13, None), "x.lab.test")
    assert served == ssl.PEM_cert_to_DER_cert(bundle.no_sni_cert_path.read_text())
    assert session_record(endpoint, attempt)["sni"] == "x.lab.test"


# ---------------------------------------------------------------- the cipher family


def test_no_pfs_negotiates_exactly_aes128_sha256_with_a_client_offering_it(
    lab: RunningLab, lab_pki: LabPki
) -> None:
    context = verifying_context(lab_pki)
    context.set_ciphers("ECDHE+AESGCM:AES128-SHA256")  # PFS first: the receiver has none
    endpoint = lab.endpoint("no-pfs")
    attempt = deliver(endpoint, context)
    assert (attempt.version, attempt.cipher) == ("TLSv1.2", "AES128-SHA256")
    assert_tls_delivery(endpoint, attempt, V12)


def test_no_pfs_fails_with_a_client_offering_only_forward_secret_suites(
    lab: RunningLab, lab_pki: LabPki
) -> None:
    context = verifying_context(lab_pki)
    context.set_ciphers("kECDHE:kDHE:@SECLEVEL=2")  # whatever this Python's default list is
    assert all(suite["kea"] in ("kx-ecdhe", "kx-dhe", "kx-any") for suite in context.get_ciphers())
    endpoint = lab.endpoint("no-pfs")
    attempt, _error = failed_starttls(endpoint, context)
    assert_no_shared_cipher(endpoint, attempt)


def test_no_shared_cipher_fails_with_a_default_client(lab: RunningLab) -> None:
    endpoint = lab.endpoint("no-shared-cipher")
    for context in (ssl.create_default_context(), client_context(V12, V13, None)):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # every suite OpenSSL enables by default
        attempt, _error = failed_starttls(endpoint, context)
        assert_no_shared_cipher(endpoint, attempt)


def test_no_shared_cipher_serves_a_client_that_offers_null_encryption(lab: RunningLab) -> None:
    context = client_context(V12, V12, None)
    context.set_ciphers("NULL-SHA256:@SECLEVEL=0")
    endpoint = lab.endpoint("no-shared-cipher")
    attempt = deliver(endpoint, context)
    assert attempt.cipher == "NULL-SHA256"
    assert_tls_delivery(endpoint, attempt, V12)


def test_a_plaintext_sender_still_delivers_to_no_shared_cipher(lab: RunningLab) -> None:
    endpoint = lab.endpoint("no-shared-cipher")
    attempt = deliver(endpoint, None)
    record = session_record(endpoint, attempt)
    assert record["handshake"] == "none"
    assert [m["queue_id"] for m in record["messages"]] == [attempt.queue_id]
