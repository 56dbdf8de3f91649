"""Reuse and renewal of the lab PKI: nothing is reissued unless it must be, nothing is dropped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import hashes
from pki_helpers import ALL, LEAVES, SPECS, bundle_for, cert, fingerprints, leaf

import lab.pki
import lab.pki_check
from lab.pki import CertificateError, ensure_certs, load_certs
from lab.pki_sha1 import verify_sha1_issued_by
from lab.spec import CertState


def renewed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Return the names whose certificate changed (every name must be in both)."""
    assert before.keys() == after.keys()
    return {name for name in before if before[name] != after[name]}


def no_generation(*args: object) -> None:
    raise AssertionError("should have reused the files")


def test_second_call_reuses_without_generating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ensure_certs(SPECS, tmp_path)
    manifest = (tmp_path / "manifest.json").read_bytes()
    monkeypatch.setattr(lab.pki, "write_atomic", no_generation)  # the manifest stays as it is
    for name in ("new_ca", "issue_leaf", "write_atomic"):
        monkeypatch.setattr(lab.pki_check, name, no_generation)
    second = ensure_certs(SPECS, tmp_path)  # answered by the recorded pass
    assert second == first
    (tmp_path / ".checked.json").unlink()
    assert ensure_certs(SPECS, tmp_path) == first  # the full check reuses every file too
    assert fingerprints(second) == fingerprints(first)
    assert load_certs(SPECS, tmp_path) == first
    assert (tmp_path / "manifest.json").read_bytes() == manifest


@pytest.mark.parametrize(
    ("victim", "expected"),
    [
        ("manifest.json", ALL),
        ("ca/lab-ca.pem", ALL - {"untrusted-ca"}),  # a new CA: every leaf reissued
        ("ca/untrusted-ca-key.pem", ALL - {"lab-ca"}),
        ("r-valid/key.pem", {"r-valid"}),  # a leaf alone: the CAs and other leaves stay
    ],
)
def test_missing_file_reissues_only_what_depends_on_it(
    tmp_path: Path, victim: str, expected: set[str]
) -> None:
    before = fingerprints(ensure_certs(SPECS, tmp_path))
    (tmp_path / victim).unlink()
    after = ensure_certs(SPECS, tmp_path)
    assert (tmp_path / victim).is_file()
    assert renewed(before, fingerprints(after)) == expected
    assert load_certs(SPECS, tmp_path) == after


def test_a_ca_key_that_does_not_match_its_cert_replaces_that_ca(tmp_path: Path) -> None:
    before = fingerprints(ensure_certs(SPECS, tmp_path))
    stranger = (tmp_path / "r-valid" / "key.pem").read_bytes()
    (tmp_path / "ca" / "lab-ca-key.pem").write_bytes(stranger)
    after = fingerprints(ensure_certs(SPECS, tmp_path))
    assert renewed(before, after) == ALL - {"untrusted-ca"}


def test_corrupt_manifest_or_changed_state_regenerates(tmp_path: Path) -> None:
    before = fingerprints(ensure_certs(SPECS, tmp_path))
    (tmp_path / "manifest.json").write_text("{not json")
    middle = fingerprints(ensure_certs(SPECS, tmp_path))
    assert renewed(before, middle) == ALL
    changed = [s.model_copy(update={"certificate": CertState.VALID}) for s in SPECS]
    after = ensure_certs(changed, tmp_path)
    assert renewed(middle, fingerprints(after)) == LEAVES - {"r-valid"}
    assert all(b.state is CertState.VALID for b in after.bundles.values())


def test_renews_within_two_days_of_expiry_only(tmp_path: Path) -> None:
    first = ensure_certs(SPECS, tmp_path)
    before = fingerprints(first)  # read now: regeneration rewrites the same paths
    not_after = leaf(first, CertState.VALID).not_valid_after_utc
    early = ensure_certs(SPECS, tmp_path, now=not_after - timedelta(days=3))  # control
    # ... except not-yet-valid, renewed once its notBefore is no longer in the future
    assert renewed(before, fingerprints(early)) == {"r-not-yet-valid"}
    before = fingerprints(early)
    late_now = not_after - timedelta(days=1)
    late = ensure_certs(SPECS, tmp_path, now=late_now)
    # the CAs still last; not-yet-valid, reissued at `early`, still starts in the future
    assert renewed(before, fingerprints(late)) == LEAVES - {"r-expired", "r-not-yet-valid"}
    assert leaf(late, CertState.NOT_YET_VALID).not_valid_before_utc > late_now + timedelta(days=2)
    assert leaf(late, CertState.VALID).not_valid_after_utc > late_now + timedelta(days=2)
    assert leaf(late, CertState.EXPIRED).not_valid_after_utc < late_now


def test_an_expiring_ca_is_replaced_with_every_leaf_other_runs_included(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC)
    with monkeypatch.context() as patched:  # CAs that expire in ten days
        patched.setattr(trustme, "DEFAULT_EXPIRY", (now + timedelta(days=10)).replace(tzinfo=None))
        ensure_certs(SPECS[:2], tmp_path, now=now)  # the first run
    before = fingerprints(ensure_certs(SPECS, tmp_path, now=now))  # a second run adds its own
    control = fingerprints(ensure_certs(SPECS[2:], tmp_path, now=now + timedelta(days=7)))
    assert control == {name: before[name] for name in control}  # three days left: kept
    late = now + timedelta(days=9)  # within two days of the CAs' expiry
    ensure_certs(SPECS[2:], tmp_path, now=late)  # the second run alone renews the CAs ...
    with monkeypatch.context() as patched:
        for name in ("new_ca", "issue_leaf"):
            patched.setattr(lab.pki_check, name, no_generation)
        pki = ensure_certs(SPECS, tmp_path, now=late)  # ... and the first run's leaves with them
    assert renewed(before, fingerprints(pki)) == ALL
    assert cert(pki.ca_cert_path).not_valid_after_utc > late + timedelta(days=2)
    intermediate = cert(pki.root / "ca" / "lab-intermediate.pem")
    intermediate.verify_directly_issued_by(cert(pki.ca_cert_path))
    for spec in SPECS:
        leaf_cert = cert(pki.bundle(spec.id).cert_path)
        if spec.certificate is CertState.MISSING_INTERMEDIATE:
            leaf_cert.verify_directly_issued_by(intermediate)
        elif spec.certificate is CertState.SHA1_SIGNATURE:
            verify_sha1_issued_by(leaf_cert, cert(pki.ca_cert_path))
        elif spec.certificate not in (CertState.SELF_SIGNED, CertState.UNTRUSTED_CA):
            leaf_cert.verify_directly_issued_by(cert(pki.ca_cert_path))


def test_new_receiver_keeps_the_ca_and_the_others(tmp_path: Path) -> None:
    before = fingerprints(ensure_certs(SPECS[:2], tmp_path))
    after = fingerprints(ensure_certs(SPECS, tmp_path))
    assert set(after) == ALL
    assert {name: after[name] for name in before} == before


def test_a_run_with_other_receivers_drops_no_entry(tmp_path: Path) -> None:
    first = ensure_certs(SPECS[:2], tmp_path)
    kept = fingerprints(first)
    ensure_certs(SPECS[2:], tmp_path)  # another run, disjoint receivers
    assert load_certs(SPECS[:2], tmp_path) == first
    assert fingerprints(load_certs(SPECS[:2], tmp_path)) == kept
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["receivers"]) == LEAVES


def test_a_leaf_not_issued_by_the_current_ca_is_detected_and_reissued(tmp_path: Path) -> None:
    elsewhere = ensure_certs(SPECS, tmp_path / "other")
    pki = ensure_certs(SPECS, tmp_path / "here")
    foreign = bundle_for(elsewhere, CertState.VALID)
    here = bundle_for(pki, CertState.VALID)
    here.cert_path.write_bytes(foreign.cert_path.read_bytes())
    here.key_path.write_bytes(foreign.key_path.read_bytes())
    manifest_path = pki.manifest_path
    manifest = json.loads(manifest_path.read_text())
    sha = cert(foreign.cert_path).fingerprint(hashes.SHA256()).hex()
    manifest["receivers"]["r-valid"]["sha256"] = sha  # a manifest that agrees with the file
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CertificateError, match="not issued by the current lab-ca") as caught:
        load_certs(SPECS, tmp_path / "here")
    assert caught.value.path == here.cert_path
    fixed = ensure_certs(SPECS, tmp_path / "here")
    cert(bundle_for(fixed, CertState.VALID).cert_path).verify_directly_issued_by(
        cert(fixed.ca_cert_path)
    )


def test_a_key_from_another_issue_is_detected(tmp_path: Path) -> None:
    pki = ensure_certs(SPECS, tmp_path)
    valid = bundle_for(pki, CertState.VALID)
    valid.key_path.write_bytes(bundle_for(pki, CertState.MISMATCHED).key_path.read_bytes())
    with pytest.raises(CertificateError, match="does not match the certificate") as caught:
        load_certs(SPECS, tmp_path)
    assert caught.value.path == valid.key_path
