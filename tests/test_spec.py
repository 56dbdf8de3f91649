"""Tests of lab.spec: TlsVersion, CertState and the frozen, validated ReceiverSpec."""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from pydantic import ValidationError

from lab.bounds import TEXT_MAX_LENGTH
from lab.spec import LAB_ZONE, CertState, ReceiverSpec, TlsVersion

V10, V11, V12, V13 = TlsVersion.TLS10, TlsVersion.TLS11, TlsVersion.TLS12, TlsVersion.TLS13


def test_defaults_are_modern_tls_with_a_valid_certificate() -> None:
    spec = ReceiverSpec(id="tls13")
    assert spec.starttls is True
    assert (spec.tls_min, spec.tls_max) == (V12, V13)
    assert spec.certificate is CertState.VALID
    assert spec.max_message_bytes > 0


def test_spec_is_frozen() -> None:
    spec = ReceiverSpec(id="tls13")
    with pytest.raises(ValidationError, match="frozen"):
        spec.starttls = False  # type: ignore[misc]
    assert spec.starttls is True


def test_spec_is_hashable_and_compares_by_value() -> None:
    assert ReceiverSpec(id="a") == ReceiverSpec(id="a")
    assert ReceiverSpec(id="a") != ReceiverSpec(id="b")
    assert len({ReceiverSpec(id="a"), ReceiverSpec(id="a")}) == 1


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError) as excinfo:
        ReceiverSpec.model_validate({"id": "tls10", "tls_maximum": "TLSv1.0"})
    (error,) = excinfo.value.errors()
    assert error["type"] == "extra_forbidden"
    assert error["loc"] == ("tls_maximum",)
    # negative control: the correctly spelled field is accepted
    assert ReceiverSpec.model_validate({"id": "tls10", "tls_max": "TLSv1.2"}).tls_max is V12


def test_tls_min_newer_than_tls_max_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"tls_min TLSv1\.3 is newer than tls_max TLSv1\.0"):
        ReceiverSpec(id="bad", tls_min=V13, tls_max=V10)


@pytest.mark.parametrize(("low", "high"), [(V10, V10), (V10, V13), (V12, V13), (V13, V13)])
def test_tls_min_at_most_tls_max_is_accepted(low: TlsVersion, high: TlsVersion) -> None:
    spec = ReceiverSpec(id="ok", tls_min=low, tls_max=high)
    assert (spec.tls_min, spec.tls_max) == (low, high)


@pytest.mark.parametrize("good", ["tls10", "no-starttls", "a", "0day", "untrusted-ca"])
def test_id_pattern_accepts_lowercase_ids(good: str) -> None:
    assert ReceiverSpec(id=good).id == good


@pytest.mark.parametrize("bad", ["", "TLS10", "-tls", "tls_10", "tls 10", "tls.10", "tls10/x"])
def test_id_pattern_rejects_other_ids(bad: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        ReceiverSpec(id=bad)
    assert excinfo.value.errors()[0]["loc"] == ("id",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("starttls", "maybe"),
        ("tls_min", "TLSv1.4"),
        ("tls_max", "SSLv3"),
        ("certificate", "revoked"),
        ("max_message_bytes", 0),
        ("max_message_bytes", -1),
    ],
)
def test_bad_field_values_are_rejected(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as excinfo:
        ReceiverSpec.model_validate({"id": "x", field: value})
    assert excinfo.value.errors()[0]["loc"] == (field,)


def test_domain_and_mx_host_derive_from_the_id() -> None:
    spec = ReceiverSpec(id="tls10")
    assert LAB_ZONE == "lab.test"
    assert spec.domain == "tls10.lab.test"
    assert spec.mx_host == "mx.tls10.lab.test"
    other = ReceiverSpec(id="expired")
    assert other.domain == "expired.lab.test"
    assert other.mx_host != spec.mx_host


def test_offered_versions_span_min_to_max_oldest_first() -> None:
    assert ReceiverSpec(id="a", tls_min=V10, tls_max=V10).offered_versions == [V10]
    assert ReceiverSpec(id="a", tls_min=V11, tls_max=V13).offered_versions == [V11, V12, V13]
    assert ReceiverSpec(id="a").offered_versions == [V12, V13]


def test_offered_versions_is_empty_without_starttls() -> None:
    assert ReceiverSpec(id="a", starttls=False).offered_versions == []
    assert ReceiverSpec(id="a", starttls=True).offered_versions != []


@pytest.mark.parametrize(
    ("openssl", "expected"),
    [("TLSv1", V10), ("TLSv1.0", V10), ("TLSv1.1", V11), ("TLSv1.2", V12), ("TLSv1.3", V13)],
)
def test_from_openssl_normalises_names(openssl: str, expected: TlsVersion) -> None:
    assert TlsVersion.from_openssl(openssl) is expected


@pytest.mark.parametrize("bad", ["SSLv3", "TLSv1.4", "tlsv1.2", ""])
def test_from_openssl_rejects_unknown_names(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a valid TlsVersion"):
        TlsVersion.from_openssl(bad)


def test_values_are_the_results_json_spelling() -> None:
    assert [v.value for v in TlsVersion] == ["TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
    assert TlsVersion("TLSv1.2") is V12


def test_is_legacy_only_for_tls10_and_tls11() -> None:
    assert V10.is_legacy
    assert V11.is_legacy
    assert not V12.is_legacy
    assert not V13.is_legacy


def test_rank_orders_versions_oldest_to_newest() -> None:
    assert [v.rank for v in (V10, V11, V12, V13)] == [0, 1, 2, 3]
    assert sorted([V13, V10, V12, V11], key=lambda v: v.rank) == [V10, V11, V12, V13]
    assert V12.rank > V11.rank
    assert not V10.rank > V11.rank


def test_ssl_version_maps_to_the_stdlib_enum() -> None:
    assert V10.ssl_version is ssl.TLSVersion.TLSv1
    assert V11.ssl_version is ssl.TLSVersion.TLSv1_1
    assert V12.ssl_version is ssl.TLSVersion.TLSv1_2
    assert V13.ssl_version is ssl.TLSVersion.TLSv1_3


def test_cert_state_vocabulary() -> None:
    assert [c.value for c in CertState] == [
        "valid",
        "self-signed",
        "expired",
        "mismatched",
        "untrusted-ca",
        "not-yet-valid",
        "missing-intermediate",
        "weak-key",
        "sha1-signature",
        "wrong-eku",
        "wildcard",
        "sni-only",
    ]
    with pytest.raises(ValueError, match="revoked"):
        CertState("revoked")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("starttls", "off"),
        ("starttls", "true"),
        ("starttls", 0),
        ("max_sessions", "100"),
        ("max_sessions", True),
        ("max_sessions", 0),
        ("max_sessions", 10_001),
        ("max_message_bytes", 10**30),
        ("idle_timeout_seconds", float("inf")),
        ("idle_timeout_seconds", float("nan")),
        ("idle_timeout_seconds", "30"),
        ("command_timeout_seconds", -1.0),
        ("command_timeout_seconds", 86_400.5),
        ("description", "x" * (TEXT_MAX_LENGTH + 1)),
        ("id", "a" * 64),  # longer than a DNS label
    ],
)
def test_strict_types_and_bounds_reject(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as excinfo:
        ReceiverSpec.model_validate({"id": "x", field: value})
    assert excinfo.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("starttls", False),
        ("max_sessions", 1),
        ("max_sessions", 10_000),
        ("max_message_bytes", 256 * 1024 * 1024),
        ("idle_timeout_seconds", 0.01),
        ("command_timeout_seconds", 86_400),  # an int is a fine float
        ("description", "x" * TEXT_MAX_LENGTH),
        ("id", "a" * 63),
    ],
)
def test_values_at_their_bounds_are_accepted(field: str, value: Any) -> None:
    assert getattr(ReceiverSpec.model_validate({"id": "x", field: value}), field) == value


def test_range_error_states_the_whole_allowed_range() -> None:
    with pytest.raises(ValidationError) as excinfo:
        ReceiverSpec(id="x", idle_timeout_seconds=float("inf"))
    assert excinfo.value.errors()[0]["msg"] == "must be a finite number from 0.01 to 86400"


def test_specs_survive_the_json_the_receiver_child_reads() -> None:
    spec = ReceiverSpec(id="x", starttls=False, max_sessions=7, idle_timeout_seconds=2)
    assert ReceiverSpec.model_validate_json(spec.model_dump_json()) == spec


def test_ciphers_accepts_a_suite_openssl_knows_for_tls12_and_older() -> None:
    spec = ReceiverSpec(id="no-pfs", tls_max=TlsVersion.TLS12, ciphers="AES128-SHA256")
    assert spec.ciphers == "AES128-SHA256"
    assert ReceiverSpec(id="default").ciphers is None  # control: unset by default


@pytest.mark.parametrize("bad", ["NO-SUCH-SUITE", "!ALL", "TLS_AES_128_GCM_SHA256"])
def test_ciphers_rejects_a_string_openssl_selects_nothing_from(bad: str) -> None:
    with pytest.raises(ValidationError, match="OpenSSL selects no cipher"):
        ReceiverSpec(id="r", tls_max=TlsVersion.TLS12, ciphers=bad)


def test_ciphers_with_tls13_offered_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"set tls_max: TLSv1\.2"):
        ReceiverSpec(id="r", ciphers="AES128-SHA256")
