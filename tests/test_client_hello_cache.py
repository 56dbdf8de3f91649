"""Offers are cached by sender: a hello's per-hello bytes are zeroed, nothing else is ignored."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab import client_hello
from lab.client_hello import parse_client_hello, parse_uncached


def hello(
    maximum: ssl.TLSVersion, ciphers: str | None = None, sni: str | None = "mx.example.test"
) -> bytes:
    """Return a fresh ClientHello handshake message (header included) from Python's client."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()[5:]  # the record header off


VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]


@pytest.mark.parametrize("maximum", VERSIONS)
def test_two_hellos_of_one_client_share_one_parse(
    maximum: ssl.TLSVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = hello(maximum), hello(maximum)
    assert first != second  # fresh random (and key shares) each time
    client_hello._parse_zeroed.cache_clear()
    parses: list[bytes] = []
    real = client_hello.parse_uncached

    def counted(message: bytes) -> client_hello.ClientOffer | None:
        parses.append(message)
        return real(message)

    monkeypatch.setattr(client_hello, "parse_uncached", counted)
    offers = parse_client_hello(first), parse_client_hello(second)
    assert offers[0] is not None
    assert offers[0] == offers[1] == real(first) == real(second)
    assert len(parses) == 1  # the second hello was answered from the cache


def test_hellos_that_differ_in_what_they_offer_are_not_conflated() -> None:
    # negative control: the zeroing keeps everything an offer is made of
    client_hello._parse_zeroed.cache_clear()
    plain = parse_client_hello(hello(ssl.TLSVersion.TLSv1_2))
    fewer = parse_client_hello(hello(ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-GCM-SHA256"))
    other_name = parse_client_hello(hello(ssl.TLSVersion.TLSv1_2, sni="other.example.test"))
    assert plain is not None
    assert fewer is not None
    assert other_name is not None
    assert fewer.cipher_suites != plain.cipher_suites
    assert fewer.ja4 != plain.ja4
    assert other_name.sni == "other.example.test" != plain.sni
    assert client_hello._parse_zeroed.cache_info().currsize == 3


def test_ill_framed_hellos_are_parsed_by_tlslite_alone() -> None:
    message = hello(ssl.TLSVersion.TLSv1_3)
    assert client_hello._fresh_ranges(message) is not None
    for broken in (message[:-1], message + b"\x00", message[:50], b"\x02" + message[1:]):
        assert client_hello._fresh_ranges(broken) is None
        assert parse_client_hello(broken) == parse_uncached(broken)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([0, 1]),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=4),
    st.integers(0, 400),
)
def test_cached_offer_equals_tlslite_offer_for_altered_hellos(
    which: int, changes: list[tuple[int, int]], cut: int
) -> None:
    message = bytearray(SAMPLES[which])
    for at, value in changes:
        if at < len(message):
            message[at] = value
    altered = bytes(message[: max(cut, 4)]) if cut < len(message) else bytes(message)
    assert parse_client_hello(altered) == parse_uncached(altered)


SAMPLES = [hello(v) for v in VERSIONS]
