"""Tests of suite policies: `strict` judged per receiver kind x outcome, validation, a real run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import Ran, assert_usage_error, tlslab

from harness.classify import describe_expectation, judge
from harness.expectations import is_safe, policy_expectation, unsafe_reason
from harness.model import (
    NOT_DELIVERED,
    CellExpectation,
    CellResult,
    Outcome,
    SuitePolicy,
    TlsFacts,
    Verdict,
)
from harness.report import expected_label
from harness.scenarios import DEFAULT_ROOT, ScenarioError, load_suite
from lab.spec import CertState, ReceiverSpec, TlsVersion

STRICT = SuitePolicy.STRICT
FACTS = {
    v: TlsFacts(version=v, cipher="TLS_AES_256_GCM_SHA384" if v is TlsVersion.TLS13 else "X")
    for v in TlsVersion
}
# the strict policy reads TLS and PKIX facts only: DNSSEC and TLSA play no part in it
SAFE = [
    "dane-bogus", "dane-ee", "dane-expired-rrsig", "dane-insecure", "dane-mismatch", "dane-ta",
    "dane-tlsa-servfail", "greylist", "mx-fallback", "no-pfs", "sni-only", "starttls-injection",
    "tls12", "tls13", "wildcard",
]  # fmt: skip
UNSAFE = [
    "tls10", "tls11", "no-starttls", "self-signed", "expired", "mismatched", "untrusted-ca",
    "not-yet-valid", "missing-intermediate", "weak-key", "sha1-signature", "wrong-eku",
    "no-shared-cipher", "strip-starttls", "starttls-454", "starttls-501", "starttls-broken",
    "tls-intercept", "dane-ee-expired", "dane-ee-name-mismatch", "dane-ta-name-mismatch",
    "dane-no-starttls", "dane-strip", "dane-unusable",
]  # fmt: skip
HELD = [Outcome.REFUSED, Outcome.DEFERRED, Outcome.FALLBACK]
SUITE = DEFAULT_ROOT / "suites" / "strict-policy.yaml"


def strict(spec: ReceiverSpec, outcome: Outcome, tls: TlsFacts | None = None) -> Verdict:
    return judge(policy_expectation(STRICT, spec), outcome, tls)


# --- which receivers are safe ------------------------------------------------------------


def test_shipped_receivers_split_into_safe_and_unsafe(
    receiver_specs: dict[str, ReceiverSpec],
) -> None:
    assert sorted(n for n, s in receiver_specs.items() if is_safe(s)) == SAFE
    assert sorted(n for n, s in receiver_specs.items() if not is_safe(s)) == sorted(UNSAFE)
    assert unsafe_reason(receiver_specs["no-starttls"]) == "offers no STARTTLS"
    assert unsafe_reason(receiver_specs["tls11"]) == "offers at most TLSv1.1"
    assert unsafe_reason(receiver_specs["strip-starttls"]) == (
        "a man in the middle removes STARTTLS from the EHLO reply"
    )
    assert unsafe_reason(receiver_specs["starttls-injection"]) is None  # TLS still reaches it
    assert unsafe_reason(receiver_specs["expired"]) == "expired certificate"
    assert unsafe_reason(receiver_specs["weak-key"]) == "weak-key certificate"
    assert unsafe_reason(receiver_specs["no-shared-cipher"]) == "offers only NULL-encryption suites"


def test_a_receiver_that_can_do_tls12_among_older_versions_is_safe() -> None:
    wide = ReceiverSpec(id="wide", tls_min=TlsVersion.TLS10, tls_max=TlsVersion.TLS13)
    assert is_safe(wide)
    # negative controls: the same range without STARTTLS, capped at 1.1, or with a bad certificate
    assert not is_safe(wide.model_copy(update={"starttls": False}))
    assert not is_safe(ReceiverSpec(id="old", tls_min=TlsVersion.TLS10, tls_max=TlsVersion.TLS11))
    valid_for_the_mx_host = {CertState.VALID, CertState.WILDCARD, CertState.SNI_ONLY}
    for state in CertState:
        safe = is_safe(wide.model_copy(update={"certificate": state}))
        assert safe is (state in valid_for_the_mx_host), state


def test_a_cipher_list_is_unsafe_only_when_nothing_in_it_encrypts() -> None:
    tls12 = ReceiverSpec(id="r", tls_max=TlsVersion.TLS12, ciphers="AES128-SHA256")
    assert is_safe(tls12)
    null = tls12.model_copy(update={"ciphers": "NULL-SHA256:@SECLEVEL=0"})
    assert unsafe_reason(null) == "offers only NULL-encryption suites"
    mixed = tls12.model_copy(update={"ciphers": "NULL-SHA256:AES128-SHA256:@SECLEVEL=0"})
    assert is_safe(mixed)


# --- strict judged per receiver kind x outcome ------------------------------------------


@pytest.mark.parametrize("name", SAFE)
def test_safe_receiver_passes_delivery_over_tls12_or_newer(
    receiver_specs: dict[str, ReceiverSpec], name: str
) -> None:
    spec = receiver_specs[name]
    assert strict(spec, Outcome.DELIVERED, FACTS[TlsVersion.TLS12]) is Verdict.PASS
    assert strict(spec, Outcome.DELIVERED, FACTS[TlsVersion.TLS13]) is Verdict.PASS
    # negative controls: weak TLS, plaintext and every way of not delivering fail
    assert strict(spec, Outcome.DELIVERED, FACTS[TlsVersion.TLS11]) is Verdict.FAIL
    assert strict(spec, Outcome.DELIVERED, FACTS[TlsVersion.TLS10]) is Verdict.FAIL
    assert strict(spec, Outcome.DELIVERED, None) is Verdict.FAIL
    for held in HELD:
        assert strict(spec, held) is Verdict.FAIL, held


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_receiver_passes_only_when_nothing_is_delivered(
    receiver_specs: dict[str, ReceiverSpec], name: str
) -> None:
    spec = receiver_specs[name]
    for held in HELD:
        assert strict(spec, held) is Verdict.PASS, held
    # negative controls: a delivery of any kind fails, even over TLS 1.3
    for version in TlsVersion:
        assert strict(spec, Outcome.DELIVERED, FACTS[version]) is Verdict.FAIL, version
    assert strict(spec, Outcome.DELIVERED, None) is Verdict.FAIL


@pytest.mark.parametrize("name", SAFE + UNSAFE)
def test_a_lab_error_stays_an_error(receiver_specs: dict[str, ReceiverSpec], name: str) -> None:
    assert strict(receiver_specs[name], Outcome.ERROR) is Verdict.ERROR
    assert strict(receiver_specs[name], Outcome.ERROR, FACTS[TlsVersion.TLS13]) is Verdict.ERROR


def test_strict_expectations_and_their_labels(receiver_specs: dict[str, ReceiverSpec]) -> None:
    safe = policy_expectation(STRICT, receiver_specs["tls12"])
    unsafe = policy_expectation(STRICT, receiver_specs["self-signed"])
    assert (safe.outcome, safe.tls) == (Outcome.DELIVERED, ">=TLSv1.2")
    assert safe.note == "strict: a safe receiver must get the message, over TLS >= 1.2"
    assert (unsafe.outcome, unsafe.tls) == (NOT_DELIVERED, None)
    assert "self-signed certificate" in unsafe.note
    assert describe_expectation(safe) == "delivered TLS>=1.2"
    assert describe_expectation(unsafe) == "not delivered"
    result = CellResult(
        receiver="tls12", sender="s", outcome=Outcome.REFUSED, expected=safe.outcome,
        expected_tls=">=TLSv1.2", verdict=Verdict.FAIL, detail="",
    )  # fmt: skip
    assert expected_label(result) == "delivered TLS>=1.2"
    held = result.model_copy(update={"expected": NOT_DELIVERED, "expected_tls": None})
    assert expected_label(held) == "not delivered"


def test_not_delivered_and_at_least_are_usable_in_cells_too() -> None:
    cell = CellExpectation.model_validate({"outcome": "not-delivered"})
    assert judge(cell, Outcome.DEFERRED, None) is Verdict.PASS
    assert judge(cell, Outcome.DELIVERED, None) is Verdict.FAIL
    at_least = CellExpectation.model_validate({"outcome": "delivered", "tls": ">=TLSv1.1"})
    assert judge(at_least, Outcome.DELIVERED, FACTS[TlsVersion.TLS11]) is Verdict.PASS
    assert judge(at_least, Outcome.DELIVERED, FACTS[TlsVersion.TLS10]) is Verdict.FAIL


# --- validation ------------------------------------------------------------------------------

HEADER = "receivers: [tls10, tls12]\nsenders: [ses-default, paubox]\n"
TLS12_ROW = "  tls12:\n    ses-default: {outcome: delivered}\n    paubox: {outcome: delivered}\n"
FULL_CELLS = (
    "cells:\n  tls10:\n    ses-default: {outcome: delivered}\n    paubox: {outcome: fallback}\n"
    + TLS12_ROW
)


def write_root(base: Path, suite: str) -> Path:
    root = base / "scenarios"
    for folder in ("receivers", "senders"):
        shutil.copytree(DEFAULT_ROOT / folder, root / folder)
    (root / "suites").mkdir()
    (root / "suites" / "p.yaml").write_text(suite, encoding="utf-8")
    return root


def load_error(tmp_path: Path, suite: str) -> ScenarioError:
    root = write_root(tmp_path, suite)
    with pytest.raises(ScenarioError) as excinfo:
        load_suite("p", root)
    assert excinfo.value.path == root / "suites" / "p.yaml"
    assert "\n" not in str(excinfo.value)
    return excinfo.value


def test_a_policy_alone_is_a_complete_suite(tmp_path: Path) -> None:
    loaded = load_suite("p", write_root(tmp_path, HEADER + "policy: strict\n"))
    assert loaded.suite.policy is STRICT
    assert loaded.expectation("tls10", "paubox").outcome == NOT_DELIVERED
    assert loaded.expectation("tls12", "paubox").tls == ">=TLSv1.2"
    # negative control: cells alone work as before, with no policy
    plain = load_suite("p", write_root(tmp_path / "b", HEADER + FULL_CELLS))
    assert plain.suite.policy is None
    assert plain.expectation("tls10", "paubox").outcome is Outcome.FALLBACK


def test_stated_cells_override_the_policy(tmp_path: Path) -> None:
    suite = HEADER + "policy: strict\ncells:\n  tls10:\n    ses-default: {outcome: delivered}\n"
    loaded = load_suite("p", write_root(tmp_path, suite))
    assert loaded.expectation("tls10", "ses-default").outcome is Outcome.DELIVERED
    assert loaded.expectation("tls10", "paubox").outcome == NOT_DELIVERED


def test_unknown_policy_names_the_field_and_allowed_values(tmp_path: Path) -> None:
    error = load_error(tmp_path, HEADER + "policy: lenient\n")
    assert error.field == "policy"
    assert "'strict'" in error.problem
    assert "allowed values" in error.fix


def test_neither_policy_nor_cells(tmp_path: Path) -> None:
    error = load_error(tmp_path, HEADER)
    assert (error.field, error.problem) == ("cells", "the suite states no expectations")
    assert "policy: strict" in error.fix


def test_incomplete_cells_without_a_policy(tmp_path: Path) -> None:
    error = load_error(tmp_path, HEADER + "cells:\n" + TLS12_ROW)
    assert (error.field, error.problem) == ("cells.tls10.ses-default", "missing expectation")
    assert "policy: strict" in error.fix


def test_a_policy_does_not_excuse_a_cell_of_an_unknown_receiver(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, HEADER + "policy: strict\ncells:\n  tls13: {paubox: {outcome: refused}}\n"
    )
    assert error.field == "cells.tls13"


def test_unknown_outcome_is_one_error_listing_not_delivered(tmp_path: Path) -> None:
    error = load_error(tmp_path, HEADER + FULL_CELLS.replace("fallback", "held"))
    assert error.field == "cells.tls10.paubox.outcome"
    assert "'not-delivered'" in error.problem
    assert "'fallback'" in error.problem
    assert "allowed values" in error.fix


def test_cli_bad_policy_exits_2(tmp_path: Path) -> None:
    root = write_root(tmp_path, HEADER + "policy: [strict]\n")
    ran = tlslab("run", "--suite", "p", "--scenarios", root, "--reports", tmp_path / "r")
    assert_usage_error(ran, str(root / "suites" / "p.yaml"), "'policy'", "fix:")
    assert not (tmp_path / "r").exists()


# --- the shipped strict-policy suite, run for real ------------------------------------------


@pytest.fixture(scope="module")
def strict_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Ran, dict[tuple[str, str], dict[str, object]]]:
    base = tmp_path_factory.mktemp("strict")
    ran = tlslab("run", "--suite", SUITE, "--reports", base / "r", "--certs", base / "c")
    data = json.loads((base / "r" / "latest" / "results.json").read_text())
    return ran, {(c["receiver"], c["sender"]): c for c in data["results"]}


def test_strict_suite_exits_1_by_design(
    strict_run: tuple[Ran, dict[tuple[str, str], dict[str, object]]],
) -> None:
    ran, cells = strict_run
    assert "Traceback" not in ran.err
    assert ran.status == 1, ran.out + ran.err
    assert "Suite strict-policy: 27 cells on the local backend" in ran.out
    assert "27 cells: 14 pass, 13 fail, 0 error" in ran.out
    assert len(cells) == 27


def test_strict_suite_paubox_passes_every_cell(
    strict_run: tuple[Ran, dict[tuple[str, str], dict[str, object]]],
) -> None:
    _, cells = strict_run
    paubox = {r: c for (r, s), c in cells.items() if s == "paubox"}
    assert len(paubox) == 9
    assert {c["verdict"] for c in paubox.values()} == {"pass"}
    assert paubox["tls12"]["expected"] == "delivered"
    assert paubox["tls12"]["expected_tls"] == ">=TLSv1.2"
    assert paubox["tls10"]["expected"] == "not-delivered"
    assert paubox["tls10"]["outcome"] == "fallback"


@pytest.mark.parametrize("sender", ["ses-default", "ses-require-tls"])
def test_strict_suite_ses_fails_the_weak_cells_and_passes_the_safe_ones(
    strict_run: tuple[Ran, dict[tuple[str, str], dict[str, object]]], sender: str
) -> None:
    ran, cells = strict_run
    for receiver in ("tls12", "tls13"):  # the safe rows of the strict-policy suite
        assert cells[receiver, sender]["verdict"] == "pass", receiver
    for receiver in ("tls10", "tls11", "self-signed", "expired", "mismatched", "untrusted-ca"):
        assert cells[receiver, sender]["verdict"] == "fail", receiver
        assert "strict: the receiver is not safe" in str(cells[receiver, sender]["detail"])
    # no STARTTLS: SES default sends in plaintext (fail), Require TLS refuses (pass)
    expected = "fail" if sender == "ses-default" else "pass"
    assert cells["no-starttls", sender]["verdict"] == expected
    progress = [line for line in ran.out.splitlines() if f"tls10-{sender} " in line]
    assert len(progress) == 1
    assert "FAIL" in progress[0]
    assert "expected not delivered" in ran.out
