"""Pure tests of harness.classify: evidence -> Outcome, (expected, observed) -> Verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.classify import Arrival, classify, describe_expectation, judge
from harness.model import CellExpectation, Outcome, TlsFacts, Verdict
from harness.senders.base import SendAction, SendReport
from lab.spec import TlsVersion

CIPHER12 = "ECDHE-RSA-AES128-GCM-SHA256"
CIPHER10 = "ECDHE-RSA-AES256-SHA"
TLS12 = TlsFacts(version=TlsVersion.TLS12, cipher=CIPHER12)
TLS10 = TlsFacts(version=TlsVersion.TLS10, cipher=CIPHER10)
HEADER = "from sender (unknown [127.0.0.1]) by mx.tls12.lab.test with ESMTPS id X"
PLAIN_HEADER = "from sender (unknown [127.0.0.1]) by mx.no-starttls.lab.test with ESMTP id X"


def arrival(facts: TlsFacts | None, stored: str | None = None) -> Arrival:
    """Return an arrival the receiver recorded with `facts`; `stored` is the header on disk."""
    header = HEADER if facts else PLAIN_HEADER
    return Arrival(stored if stored is not None else header, header, facts, "A1B2C3D4E5F6.eml")


def sent(action: SendAction, reason: str = "why", **extra: Any) -> SendReport:
    return SendReport(action, reason, (("127.0.0.1", 40001),), **extra)


def expect(outcome: Outcome, tls: Any = None) -> CellExpectation:
    return CellExpectation(outcome=outcome, tls=tls)


DELIVERED = sent(SendAction.DELIVERED, "delivered over TLSv1.2")


# --- classify: a message arrived ------------------------------------------------------------


def test_arrival_with_agreeing_tls_evidence_is_delivered_with_tls() -> None:
    seen = classify(DELIVERED, [arrival(TLS12)], portal_exists=False)
    assert seen.outcome is Outcome.DELIVERED
    assert seen.tls == TLS12
    assert f"arrived over TLSv1.2 ({CIPHER12})" in seen.detail
    assert "delivered over TLSv1.2" in seen.detail
    assert "stored" not in seen.detail


def test_plaintext_arrival_is_delivered_without_tls() -> None:
    seen = classify(sent(SendAction.DELIVERED), [arrival(None)], portal_exists=False)
    assert seen.outcome is Outcome.DELIVERED
    assert seen.tls is None
    assert "arrived in plaintext" in seen.detail


@pytest.mark.parametrize(
    ("facts", "stored", "why"),
    [
        (None, HEADER.replace("ESMTP ", "ESMTPS "), "a TLS marker added on disk"),
        (TLS12, PLAIN_HEADER, "the TLS clause removed on disk"),
        (None, PLAIN_HEADER.replace("sender", "someone"), "any other change"),
        (TLS12, None, "the .eml cannot be read"),
    ],
)
def test_a_stored_header_other_than_the_recorded_one_is_a_lab_error(
    facts: TlsFacts | None, stored: str | None, why: str
) -> None:
    changed = Arrival(stored, HEADER if facts else PLAIN_HEADER, facts, "A1B2C3D4E5F6.eml")
    seen = classify(DELIVERED, [changed], portal_exists=False)
    assert seen.outcome is Outcome.ERROR, why
    assert "evidence changed on disk" in seen.detail
    assert "A1B2C3D4E5F6.eml" in seen.detail
    # negative control: the same record with the header it wrote is a delivery
    assert classify(DELIVERED, [arrival(facts)], False).outcome is Outcome.DELIVERED


def test_tls_facts_come_from_the_record_never_from_the_header() -> None:
    forged = "from x (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384) by mx with ESMTPS id X"
    seen = classify(DELIVERED, [Arrival(forged, forged, None)], portal_exists=False)
    assert (seen.outcome, seen.tls, seen.received) == (Outcome.DELIVERED, None, forged)


def test_receiver_evidence_wins_over_the_senders_account() -> None:
    says_refused = sent(SendAction.REFUSED, "dropped")
    assert classify(says_refused, [arrival(TLS10)], False).outcome is Outcome.DELIVERED
    assert classify(says_refused, [], False).outcome is Outcome.REFUSED


def test_duplicate_arrivals_with_the_same_tls_are_noted() -> None:
    seen = classify(DELIVERED, [arrival(TLS12), arrival(TLS12)], portal_exists=False)
    assert seen.outcome is Outcome.DELIVERED
    assert seen.tls == TLS12
    assert "stored 2 times" in seen.detail
    assert "different TLS" not in seen.detail


TLS12_128 = TLS12.model_copy(update={"bits": 128})
TLS12_256 = TLS12.model_copy(update={"bits": 256})


@pytest.mark.parametrize(
    ("copies", "weakest"),
    [
        ([TLS12, TLS10], TLS10),
        ([TLS10, TLS12], TLS10),
        ([TLS12, None, TLS10], None),
        ([None, TLS12], None),
        ([TLS12_256, TLS12_128], TLS12_128),
    ],
)
def test_copies_with_different_tls_are_judged_on_the_weakest(
    copies: list[TlsFacts | None], weakest: TlsFacts | None
) -> None:
    arrivals = [arrival(facts) for facts in copies]
    seen = classify(DELIVERED, arrivals, portal_exists=False)
    assert seen.outcome is Outcome.DELIVERED
    assert seen.tls == weakest
    assert seen.received == (HEADER if weakest else PLAIN_HEADER)
    assert f"stored {len(copies)} times" in seen.detail
    if len({(f.version, f.cipher) if f else None for f in copies}) > 1:
        assert "with different TLS" in seen.detail
        assert "judged on the weakest copy" in seen.detail
    assert classify(DELIVERED, arrivals[::-1], False).tls == weakest, "order must not matter"


# --- classify: nothing arrived --------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "outcome"),
    [
        (SendAction.REFUSED, Outcome.REFUSED),
        (SendAction.DEFERRED, Outcome.DEFERRED),
    ],
)
def test_no_arrival_takes_the_senders_refusal_or_deferral(
    action: SendAction, outcome: Outcome
) -> None:
    seen = classify(sent(action, "receiver does not offer STARTTLS"), [], portal_exists=False)
    assert seen.outcome is outcome
    assert seen.tls is None
    assert seen.detail == "receiver does not offer STARTTLS"


def test_fallback_with_a_portal_copy_is_fallback() -> None:
    seen = classify(sent(SendAction.FALLBACK, "routed to portal"), [], portal_exists=True)
    assert seen.outcome is Outcome.FALLBACK
    assert seen.detail == "routed to portal"


def test_fallback_without_a_portal_copy_is_an_error() -> None:
    seen = classify(sent(SendAction.FALLBACK, "routed to portal"), [], portal_exists=False)
    assert seen.outcome is Outcome.ERROR
    assert "portal has no copy" in seen.detail


def test_sender_says_delivered_but_nothing_arrived_is_an_error() -> None:
    seen = classify(DELIVERED, [], portal_exists=False)
    assert seen.outcome is Outcome.ERROR
    assert "receiver stored nothing" in seen.detail
    assert "delivered over TLSv1.2" in seen.detail


@pytest.mark.parametrize("action", list(SendAction))
def test_lab_fault_is_an_error_whatever_the_sender_says(action: SendAction) -> None:
    seen = classify(sent(action, "connection refused", lab_fault=True), [], portal_exists=True)
    assert seen.outcome is Outcome.ERROR
    assert seen.detail == "lab failure: connection refused"


def test_sender_failure_without_lab_fault_is_an_error() -> None:
    seen = classify(sent(SendAction.FAILED, "crashed"), [], portal_exists=False)
    assert seen.outcome is Outcome.ERROR
    assert seen.detail == "sender failed: crashed"


def test_classify_takes_a_portal_path_only_as_a_flag(tmp_path: Path) -> None:
    report = sent(SendAction.FALLBACK, "portal", portal_path=tmp_path / "missing.eml")
    assert classify(report, [], portal_exists=False).outcome is Outcome.ERROR
    assert classify(report, [], portal_exists=True).outcome is Outcome.FALLBACK


# --- judge -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "observed"),
    [
        (Outcome.REFUSED, Outcome.DELIVERED),
        (Outcome.DELIVERED, Outcome.REFUSED),
        (Outcome.FALLBACK, Outcome.DEFERRED),
        (Outcome.DEFERRED, Outcome.FALLBACK),
    ],
)
def test_outcome_mismatch_fails(expected: Outcome, observed: Outcome) -> None:
    assert judge(expect(expected), observed, None) is Verdict.FAIL
    assert judge(expect(observed), observed, None) is Verdict.PASS


@pytest.mark.parametrize("outcome", [Outcome.REFUSED, Outcome.DEFERRED, Outcome.FALLBACK])
def test_matching_non_delivery_passes(outcome: Outcome) -> None:
    assert judge(expect(outcome), outcome, None) is Verdict.PASS


def test_delivered_with_the_expected_version_passes() -> None:
    assert judge(expect(Outcome.DELIVERED, TlsVersion.TLS12), Outcome.DELIVERED, TLS12) is (
        Verdict.PASS
    )
    # the YAML spelling validates to the same expectation
    assert judge(expect(Outcome.DELIVERED, "TLSv1.0"), Outcome.DELIVERED, TLS10) is Verdict.PASS


def test_delivered_with_another_version_fails() -> None:
    assert judge(expect(Outcome.DELIVERED, TlsVersion.TLS12), Outcome.DELIVERED, TLS10) is (
        Verdict.FAIL
    )
    assert judge(expect(Outcome.DELIVERED, "TLSv1.0"), Outcome.DELIVERED, TLS12) is Verdict.FAIL


def test_expected_version_but_plaintext_delivery_fails() -> None:
    assert judge(expect(Outcome.DELIVERED, TlsVersion.TLS12), Outcome.DELIVERED, None) is (
        Verdict.FAIL
    )


def test_expected_plaintext_but_tls_delivery_fails() -> None:
    assert judge(expect(Outcome.DELIVERED, "plaintext"), Outcome.DELIVERED, TLS12) is Verdict.FAIL
    assert judge(expect(Outcome.DELIVERED, "plaintext"), Outcome.DELIVERED, None) is Verdict.PASS


def test_expected_any_tls_but_plaintext_fails() -> None:
    assert judge(expect(Outcome.DELIVERED, "any"), Outcome.DELIVERED, None) is Verdict.FAIL
    assert judge(expect(Outcome.DELIVERED, "any"), Outcome.DELIVERED, TLS10) is Verdict.PASS
    assert judge(expect(Outcome.DELIVERED, "any"), Outcome.DELIVERED, TLS12) is Verdict.PASS


def test_delivered_without_a_tls_expectation_accepts_any_delivery() -> None:
    assert judge(expect(Outcome.DELIVERED), Outcome.DELIVERED, None) is Verdict.PASS
    assert judge(expect(Outcome.DELIVERED), Outcome.DELIVERED, TLS10) is Verdict.PASS
    assert judge(expect(Outcome.DELIVERED), Outcome.REFUSED, None) is Verdict.FAIL


@pytest.mark.parametrize("expected", list(Outcome))
def test_error_outcome_is_an_error_verdict_never_a_fail(expected: Outcome) -> None:
    assert judge(expect(expected), Outcome.ERROR, None) is Verdict.ERROR
    assert judge(expect(expected), Outcome.ERROR, TLS12) is Verdict.ERROR


# --- describe_expectation -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "text"),
    [
        (expect(Outcome.DELIVERED, TlsVersion.TLS10), "delivered TLSv1.0"),
        (expect(Outcome.DELIVERED, "TLSv1.3"), "delivered TLSv1.3"),
        (expect(Outcome.DELIVERED, "plaintext"), "delivered plaintext"),
        (expect(Outcome.DELIVERED, "any"), "delivered over any TLS"),
        (expect(Outcome.DELIVERED), "delivered"),
        (expect(Outcome.REFUSED), "refused"),
        (expect(Outcome.DEFERRED), "deferred"),
        (expect(Outcome.FALLBACK), "fallback"),
    ],
)
def test_describe_expectation(expected: CellExpectation, text: str) -> None:
    assert describe_expectation(expected) == text


def test_cell_expectation_rejects_unknown_tls_values() -> None:
    with pytest.raises(ValueError, match="tls"):
        CellExpectation.model_validate({"outcome": "delivered", "tls": "TLSv1.4"})
    assert CellExpectation.model_validate({"outcome": "delivered", "tls": "any"}).tls == "any"
