"""The reference sender's client TLS contexts: made once per (floor, verification, CA file)."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

from harness.model import ReferenceSenderProfile, TlsMode
from harness.senders.reference import client_context
from lab.pki import LabPki
from lab.spec import TlsVersion

VERIFY = ReferenceSenderProfile(id="v", tls=TlsMode.REQUIRED, verify=True)
OPPORTUNISTIC = ReferenceSenderProfile(id="o")


def test_a_context_is_shared_by_profiles_with_the_same_floor_and_ca(
    lab_pki: LabPki, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    shutil.copy(lab_pki.ca_cert_path, ca)
    first = client_context(VERIFY, ca)
    assert first.verify_mode is ssl.CERT_REQUIRED
    assert client_context(VERIFY.model_copy(update={"id": "v2"}), ca) is first
    assert client_context(OPPORTUNISTIC, ca) is not first, "another policy: its own context"
    assert client_context(OPPORTUNISTIC, ca).verify_mode is ssl.CERT_NONE
    floor = VERIFY.model_copy(update={"min_version": TlsVersion.TLS12})
    assert client_context(floor, ca) is not first
    assert client_context(floor, ca).minimum_version is ssl.TLSVersion.TLSv1_2


def test_a_changed_ca_file_makes_a_new_context(lab_pki: LabPki, tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    shutil.copy(lab_pki.ca_cert_path, ca)
    first = client_context(VERIFY, ca)
    shutil.copy(lab_pki.untrusted_ca_cert_path, tmp_path / "other.pem")
    (tmp_path / "other.pem").replace(ca)  # a re-issued CA under the same name
    again = client_context(VERIFY, ca)
    assert again is not first
    assert again.get_ca_certs() != first.get_ca_certs()
