"""A recorded pass of the PKI check answers later checks only for the same bytes, set and time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pki_helpers import SPECS, cert

from lab.pki import RENEW_MARGIN, CertificateError, ensure_certs, load_certs
from lab.pki_stamp import STAMP_NAME, recorded_pass
from lab.spec import CertState

PROJECT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys
from lab.pki import {call}
from lab.spec import CertState, ReceiverSpec
specs = [ReceiverSpec(id=f"r-{{s.value}}", certificate=s) for s in CertState]
{call}(specs, __import__("pathlib").Path(sys.argv[1]))
print(json.dumps("cryptography" in sys.modules))
"""


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a certs folder holding every state's leaf, checked once (so its pass is recorded)."""
    root = tmp_path_factory.mktemp("stamped")
    ensure_certs(SPECS, root)
    return root


def loads_cryptography(call: str, root: Path) -> bool:
    """Run `ensure_certs` or `load_certs` on root in a fresh process; did it load cryptography?"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(call=call), str(root)], cwd=PROJECT, env=env,
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    loaded: bool = json.loads(done.stdout)
    return loaded


@pytest.mark.parametrize("call", ["ensure_certs", "load_certs"])
def test_a_recorded_pass_answers_without_loading_a_certificate(issued: Path, call: str) -> None:
    assert loads_cryptography(call, issued) is False


def test_control_without_the_record_the_full_check_runs_and_records_again(tmp_path: Path) -> None:
    ensure_certs(SPECS, tmp_path)
    (tmp_path / STAMP_NAME).unlink()
    assert loads_cryptography("load_certs", tmp_path) is True  # a reader never records
    assert loads_cryptography("ensure_certs", tmp_path) is True
    assert loads_cryptography("ensure_certs", tmp_path) is False


@pytest.mark.parametrize(
    "changed", ["manifest.json", "ca/lab-ca.pem", "ca/lab-intermediate-key.pem", "r-valid/key.pem",
                "r-sni-only/no-sni-cert.pem"],
)  # fmt: skip
def test_any_changed_byte_of_what_the_check_reads_voids_the_record(
    tmp_path: Path, changed: str
) -> None:
    ensure_certs(SPECS, tmp_path)
    now = datetime.now(UTC)
    assert recorded_pass(tmp_path, SPECS, now) is not None  # control
    path = tmp_path / changed
    path.write_bytes(path.read_bytes() + b"\n")
    assert recorded_pass(tmp_path, SPECS, now) is None


def test_a_changed_certificate_is_still_caught_by_the_full_check(tmp_path: Path) -> None:
    pki = ensure_certs(SPECS, tmp_path)
    other = pki.bundle("r-self-signed").cert_path.read_bytes()
    pki.bundle("r-valid").cert_path.write_bytes(other)
    with pytest.raises(CertificateError, match="fingerprint differs"):
        load_certs(SPECS, tmp_path)


def test_another_receiver_set_or_state_is_not_answered_by_the_record(issued: Path) -> None:
    now = datetime.now(UTC)
    assert recorded_pass(issued, SPECS, now) is not None  # control: the recorded set
    assert recorded_pass(issued, SPECS[:3], now) is None
    moved = [SPECS[0].model_copy(update={"zone": "elsewhere.test"}), *SPECS[1:]]
    assert recorded_pass(issued, moved, now) is None
    restated = [SPECS[0].model_copy(update={"certificate": CertState.EXPIRED}), *SPECS[1:]]
    assert recorded_pass(issued, restated, now) is None


def test_the_record_holds_only_inside_the_interval_of_every_date_condition(issued: Path) -> None:
    manifest = json.loads((issued / "manifest.json").read_text())
    expired = cert(issued / manifest["receivers"]["r-expired"]["cert"]).not_valid_after_utc
    future = cert(issued / manifest["receivers"]["r-not-yet-valid"]["cert"]).not_valid_before_utc
    valid = cert(issued / manifest["receivers"]["r-valid"]["cert"]).not_valid_after_utc
    now = datetime.now(UTC)
    assert recorded_pass(issued, SPECS, now) is not None  # control
    assert recorded_pass(issued, SPECS, expired) is None  # the expired leaf not expired yet
    assert recorded_pass(issued, SPECS, future - RENEW_MARGIN) is None
    assert recorded_pass(issued, SPECS, valid - RENEW_MARGIN) is None
    assert recorded_pass(issued, SPECS, future - RENEW_MARGIN - timedelta(seconds=1)) is not None


def test_an_unreadable_record_means_the_full_check_and_a_fresh_record(tmp_path: Path) -> None:
    first = ensure_certs(SPECS, tmp_path)
    (tmp_path / STAMP_NAME).write_text("{not json")
    assert recorded_pass(tmp_path, SPECS, datetime.now(UTC)) is None
    assert ensure_certs(SPECS, tmp_path) == first
    assert recorded_pass(tmp_path, SPECS, datetime.now(UTC)) == first
