"""RFC 8461 parsing, MX matching and per-MX decisions, with properties over generated input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.senders.sts_policy import (
    Requirement,
    StsLookup,
    StsPolicyError,
    decide,
    mx_matches,
    parse_policy,
    parse_txt,
)
from lab.sts_spec import StsMode, StsSpec, policy_text

LABEL = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
HOST = st.lists(LABEL, min_size=2, max_size=5).map(".".join)
BOUNDED = settings(max_examples=100, deadline=None)


def lookup(mode: StsMode, *mx: str) -> StsLookup:
    lines = ["version: STSv1", f"mode: {mode.value}", *(f"mx: {p}" for p in mx), "max_age: 600"]
    text = "".join(f"{line}\r\n" for line in lines)
    return StsLookup("d.lab.test", "v=STSv1; id=1", "1", parse_policy(text), "fetched")


@BOUNDED
@given(mode=st.sampled_from(list(StsMode)), mx=st.lists(HOST, min_size=1, max_size=4),
       age=st.integers(0, 31_557_600), crlf=st.booleans())  # fmt: skip
def test_a_policy_the_lab_serves_parses_back_to_what_it_says(
    mode: StsMode, mx: list[str], age: int, crlf: bool
) -> None:
    text = policy_text(StsSpec(mode=mode, mx=tuple(mx), max_age=age), "unused.lab.test")
    policy = parse_policy(text if crlf else text.replace("\r\n", "\n"))
    assert (policy.mode, policy.mx, policy.max_age) == (mode, tuple(mx), age)


@BOUNDED
@given(text=st.text(max_size=300))
def test_junk_is_a_policy_error_or_a_policy_never_a_crash(text: str) -> None:
    try:
        policy = parse_policy(text)
    except StsPolicyError:
        return
    assert policy.mode in StsMode  # only a text that has every required key gets here


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("version: STSv1\nmode: enforce\nmax_age: 60\n", "at least one mx"),
        ("version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 60\n", "not STSv1"),
        ("version: STSv1\nmode: strict\nmx: a.b\nmax_age: 60\n", "not enforce"),
        ("version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n", "whole number"),
        ("version: STSv1\nmode: enforce\nmode: none\nmx: a.b\nmax_age: 1\n", "exactly once"),
        ("version: STSv1\nmode: enforce\nmx: *.*.b\nmax_age: 1\n", "wildcard"),
        ("<html>not a policy</html>\n", "key: value"),
    ],
)
def test_invalid_policies_are_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(StsPolicyError, match=problem):
        parse_policy(text)
    valid = "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 60\n"  # the control parses
    assert parse_policy(valid).mx == ("a.b",)


@BOUNDED
@given(label=LABEL, parent=HOST, extra=LABEL)
def test_a_wildcard_matches_exactly_one_extra_label(label: str, parent: str, extra: str) -> None:
    pattern = f"*.{parent}"
    assert mx_matches(pattern, f"{label}.{parent}")
    assert mx_matches(pattern, f"{label.upper()}.{parent}.")  # case and a trailing dot ignored
    assert not mx_matches(pattern, parent)  # the parent itself is not matched
    assert not mx_matches(pattern, f"{extra}.{label}.{parent}")  # nor two labels deep


@BOUNDED
@given(host=HOST, other=HOST)
def test_a_plain_pattern_matches_only_its_own_host(host: str, other: str) -> None:
    assert mx_matches(host, host)
    assert mx_matches(host, host.upper() + ".")
    assert mx_matches(host, other) == (host == other)


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        (["v=STSv1; id=20240101T0000"], "20240101T0000"),
        (["v=STSv1;id=abc;"], "abc"),
        (["v=spf1 -all", "v=STSv1; id=x1"], "x1"),  # other TXT records are ignored
        (["v=STSv1; id=a", "v=STSv1; id=b"], None),  # two STS records: no policy
        (["v=STSv1; id=not-alnum"], None),
        (["v=STSv1"], None),
        ([], None),
    ],
)
def test_txt_discovery(records: list[str], expected: str | None) -> None:
    assert parse_txt(records)[1] == expected


def test_enforce_requires_authentication_for_a_matched_mx_and_skips_an_unmatched_one() -> None:
    enforce = lookup(StsMode.ENFORCE, "*.d.lab.test")
    assert decide(enforce, "mx.d.lab.test").requirement is Requirement.AUTHENTICATED
    assert decide(enforce, "mx.other.lab.test").requirement is Requirement.SKIP
    testing = lookup(StsMode.TESTING, "*.d.lab.test")  # the same MX hosts under testing
    assert decide(testing, "mx.other.lab.test").requirement is Requirement.OPPORTUNISTIC
    assert decide(testing, "mx.other.lab.test").report
    none = lookup(StsMode.NONE)
    assert decide(none, "mx.d.lab.test").requirement is Requirement.OPPORTUNISTIC
    absent = StsLookup("d.lab.test", None, None, None, "no TXT")
    assert decide(absent, "mx.d.lab.test").requirement is Requirement.OPPORTUNISTIC
