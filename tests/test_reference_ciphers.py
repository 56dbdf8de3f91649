"""The reference sender's cipher offer is named, not left to how Python was built."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from harness.model import ReferenceSenderProfile
from harness.scenarios import load_sender
from harness.senders.reference import client_context

SENDERS = Path(__file__).resolve().parents[1] / "scenarios" / "senders"


def profile(name: str) -> ReferenceSenderProfile:
    """Return a shipped reference sender profile."""
    loaded = load_sender(SENDERS / f"{name}.yaml")
    assert isinstance(loaded, ReferenceSenderProfile)
    return loaded


@pytest.mark.parametrize(("name", "level"), [("paubox", 2), ("ses-default", 0)])
def test_every_profile_offers_openssls_default_suites_static_rsa_included(
    name: str, level: int, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    context = client_context(profile(name), ca)
    suites = {suite["name"] for suite in context.get_ciphers()}
    assert "AES128-SHA256" in suites  # a python.org build's default list lacks it
    assert "ECDHE-RSA-AES128-GCM-SHA256" in suites
    assert context.security_level == level
