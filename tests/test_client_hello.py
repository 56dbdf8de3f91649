"""What the client offered: the receiver parses every ClientHello, failed handshake or not.

`openssl s_client` offers exactly what its options say (versions, cipher suites, groups,
signature algorithms, SNI, ALPN, a session to resume) to the shipped tls13 state; each fact
is checked against a client that did not offer it. JA4 is checked against FoxIO's example.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_hostile import Receiver, _start
from tools import require_tool
from waiting import eventually

from lab.backends.local import LocalBackend
from lab.client_hello import ja4, parse_client_hello
from lab.pki import LabPki
from lab.session_facts import EndedBy, Handshake, SessionFacts, read_session_facts
from lab.spec import ReceiverSpec

WAIT = 15.0
OPENSSL = "openssl"


@pytest.fixture(autouse=True)
def _openssl_installed() -> None:
    """Require the openssl command these tests drive (a missing one fails under the switch)."""
    require_tool("openssl", "openssl")


def test_ja4_matches_foxios_published_example() -> None:
    ciphers = "002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"
    types = "0000,0010,0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"
    sigalgs = "0403,0804,0401,0503,0805,0501,0806,0601"
    codes = [[int(c, 16) for c in text.split(",")] for text in (ciphers, types, sigalgs)]
    fingerprint = ja4(0x0304, codes[0], codes[1], codes[2], "example.test", ("h2",))
    assert fingerprint == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    without_sni = ja4(0x0304, codes[0], codes[1], codes[2], None, ())
    assert without_sni.startswith("t13i151600_")


def test_garbage_is_no_offer() -> None:
    assert parse_client_hello(b"\x01\x00\x00\x05hello") is None
    assert parse_client_hello(b"") is None


@pytest.fixture(scope="module")
def tls13(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Receiver]:
    """Run the shipped tls13 state for this module."""
    with _start(receiver_specs["tls13"], lab_pki, tmp_path_factory.mktemp("hello")) as running:
        yield running


def offer(receiver: Receiver, *options: str, quit_after: bool = False) -> SessionFacts:
    """Run `openssl s_client -starttls smtp` with `options`; return the receiver's record.

    With `quit_after` it says EHLO and QUIT over TLS and waits for the receiver to close (so
    it has read the session tickets); otherwise it hangs up right after the handshake.
    """
    name = f"c{secrets.token_hex(4)}.client.test"
    host, port = receiver.address
    command = [OPENSSL, "s_client", "-starttls", "smtp", "-name", name]
    script = f"EHLO {name}\r\nQUIT\r\n".encode() if quit_after else b""
    waiting = ["-ign_eof"] if quit_after else []
    subprocess.run(
        [*command, "-connect", f"{host}:{port}", *waiting, *options],
        input=script,
        capture_output=True,
        timeout=WAIT,
        check=False,
    )

    def probe() -> list[SessionFacts] | None:
        directory = receiver.endpoint.evidence_dir
        found = [r for r in read_session_facts(directory) if r.ehlo == name]
        return found or None

    [record] = eventually(probe, f"the session record of {name}", WAIT)
    return record


LEGACY = ("-cipher", "AES128-SHA:@SECLEVEL=0")


@pytest.mark.integration
def test_a_refused_tls10_offer_is_recorded_with_its_ciphers(tls13: Receiver) -> None:
    record = offer(tls13, "-tls1", *LEGACY)
    assert record.handshake is Handshake.FAILED
    assert record.alert_sent == "protocol_version"
    assert record.offered is not None
    assert (record.offered.legacy_version, record.offered.versions) == ("TLSv1.0", ("TLSv1.0",))
    suites = [(c.iana, c.openssl) for c in record.offered.cipher_suites]
    assert ("TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA") in suites
    assert record.offered.ja4.startswith("t10i")


@pytest.mark.integration
def test_a_client_that_did_not_offer_tls10_is_not_recorded_as_offering_it(
    tls13: Receiver,
) -> None:
    record = offer(tls13, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert record.handshake is Handshake.FAILED
    assert record.offered is not None
    assert "TLSv1.0" not in record.offered.versions
    assert record.offered.versions == ("TLSv1.2",)
    suites = [c.iana for c in record.offered.cipher_suites]
    assert "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" in suites
    assert "TLS_RSA_WITH_AES_128_CBC_SHA" not in suites


@pytest.mark.integration
def test_a_tls13_offer_is_recorded_with_sni_alpn_groups_and_signature_algorithms(
    tls13: Receiver,
) -> None:
    record = offer(
        tls13,
        "-tls1_3",
        "-servername", "sni.client.test",
        "-alpn", "smtp,h2",
        "-groups", "P-256:X25519",
        "-sigalgs", "rsa_pss_rsae_sha384:rsa_pss_rsae_sha256",
        "-ciphersuites", "TLS_AES_128_GCM_SHA256",
    )  # fmt: skip
    # s_client, its input empty, hangs up after the handshake without EHLO
    assert (record.handshake, record.ended_by) == (Handshake.OK, EndedBy.CLOSED_AFTER_HANDSHAKE)
    offered = record.offered
    assert offered is not None
    assert offered.supported_versions == ("TLSv1.3",)
    assert (offered.sni, offered.alpn) == ("sni.client.test", ("smtp", "h2"))
    assert offered.groups == ("secp256r1", "x25519")
    assert offered.signature_algorithms == ("rsa_pss_rsae_sha384", "rsa_pss_rsae_sha256")
    assert offered.cipher_suites[0].iana == "TLS_AES_128_GCM_SHA256"
    assert offered.ja4.startswith("t13d")
    assert offered.ja4.split("_")[0].endswith("sp")  # ALPN `smtp`: first and last character
    # the receiver prefers SHA-256 among what the client allows (server preference)
    assert (record.group, record.signature_scheme) == ("secp256r1", "rsa_pss_rsae_sha256")
    assert record.sni == "sni.client.test"
    assert offered.resumption is None
    assert record.resumed is False


@pytest.mark.integration
def test_a_default_offer_without_sni_negotiates_x25519(tls13: Receiver) -> None:
    record = offer(tls13, "-tls1_3", "-noservername", "-sigalgs", "rsa_pss_rsae_sha384")
    assert record.handshake is Handshake.OK
    assert record.offered is not None
    assert record.offered.sni is None
    assert record.offered.ja4.startswith("t13i")
    assert (record.group, record.signature_scheme) == ("x25519", "rsa_pss_rsae_sha384")


@pytest.mark.integration
def test_a_resumption_attempt_is_recorded(tls13: Receiver, tmp_path: Path) -> None:
    session = tmp_path / "session.pem"
    first = offer(tls13, "-tls1_3", "-sess_out", str(session), quit_after=True)
    assert first.offered is not None
    assert (first.offered.resumption, first.resumed, first.ended_by) == (None, False, "quit")
    assert session.exists()
    second = offer(tls13, "-tls1_3", "-sess_in", str(session), quit_after=True)
    assert second.offered is not None
    assert second.offered.resumption == "psk"
    assert second.resumed is True


@pytest.fixture(scope="module")
def legacy(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Receiver]]:
    """Run the shipped tls12 and tls10 states for this module."""
    specs = [receiver_specs["tls12"], receiver_specs["tls10"]]
    with LocalBackend().start(specs, lab_pki, tmp_path_factory.mktemp("legacy")) as lab:
        yield {spec.id: Receiver(lab.endpoint(spec.id), lab_pki) for spec in specs}


@pytest.mark.integration
def test_tls12_records_the_ecdhe_group_and_signature_scheme(legacy: dict[str, Receiver]) -> None:
    record = offer(
        legacy["tls12"], "-tls1_2", "-groups", "P-384", "-sigalgs", "rsa_pss_rsae_sha384"
    )
    assert (record.handshake, record.version) == (Handshake.OK, "TLSv1.2")
    assert (record.group, record.signature_scheme) == ("secp384r1", "rsa_pss_rsae_sha384")


@pytest.mark.integration
def test_tls10_records_the_group_but_no_signature_scheme(legacy: dict[str, Receiver]) -> None:
    record = offer(legacy["tls10"], "-tls1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert (record.handshake, record.version) == (Handshake.OK, "TLSv1.0")
    assert record.group == "x25519"
    assert record.signature_scheme is None  # TLS 1.0 signatures name no scheme
