"""Tests for harness.evidence: Received header parsing across MTA formats, junk, messages."""

from __future__ import annotations

import email
import email.policy
import logging
import random
from collections import Counter
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import harness.model
from harness import evidence
from harness.evidence import (
    TlsFacts,
    hops,
    parse_received,
    parse_received_unguarded,
    received_headers,
    received_headers_unguarded,
)
from lab.spec import TlsVersion

V10, V11, V12, V13 = TlsVersion.TLS10, TlsVersion.TLS11, TlsVersion.TLS12, TlsVersion.TLS13
DATE = "Thu, 1 Jan 2025 00:00:00 +0000"

# (id, header, expected version, expected cipher, expected bits)
TLS_CASES: list[tuple[str, str, TlsVersion, str, int | None]] = [
    # --- Postfix (and the lab receiver, which writes Postfix's format) ---
    (
        "postfix-tls12",
        "from a.example (a.example [192.0.2.1]) (using TLSv1.2 with cipher "
        "ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)) (No client certificate requested) "
        f"by mx.example (Postfix) with ESMTPS id 4ABC; {DATE} (UTC)",
        V12,
        "ECDHE-RSA-AES256-GCM-SHA384",
        256,
    ),
    (
        "postfix-tls10-printed-as-TLSv1",
        "from old.example (old.example [192.0.2.9]) (using TLSv1 with cipher "
        "ECDHE-RSA-AES256-SHA (256/256 bits)) (No client certificate requested) "
        f"by mx.example (Postfix) with ESMTPS id 4XYZ; {DATE} (UTC)",
        V10,
        "ECDHE-RSA-AES256-SHA",
        256,
    ),
    (
        "postfix-tls11",
        "from a.example (a.example [192.0.2.1]) (using TLSv1.1 with cipher "
        "ECDHE-RSA-AES128-SHA (128/128 bits)) by mx.example (Postfix) with ESMTPS id 1; "
        f"{DATE}",
        V11,
        "ECDHE-RSA-AES128-SHA",
        128,
    ),
    (
        "postfix-tls13",
        "from a.example (a.example [192.0.2.1]) (using TLSv1.3 with cipher "
        "TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 server-signature RSA-PSS "
        "(2048 bits) server-digest SHA256) (No client certificate requested) "
        f"by mx.example (Postfix) with ESMTPS id 4DEF; {DATE} (UTC)",
        V13,
        "TLS_AES_256_GCM_SHA384",
        256,
    ),
    (
        "postfix-tls13-folded-crlf",
        "Received: from a.example (a.example [192.0.2.1])\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)\r\n"
        "\t key-exchange X25519 server-signature ECDSA (P-256) server-digest SHA256)\r\n"
        "\t(No client certificate requested)\r\n"
        "\tby mx.example (Postfix) with ESMTPS id 4GHI\r\n"
        f"\tfor <r@mx.example>; {DATE} (UTC)",
        V13,
        "TLS_AES_128_GCM_SHA256",
        128,
    ),
    (
        "postfix-tls12-folded-lf-inside-clause",
        "from a.example (a.example [192.0.2.1])\n"
        "        (using TLSv1.2\n"
        "         with cipher ECDHE-RSA-CHACHA20-POLY1305\n"
        "         (256/256 bits))\n"
        f"        by mx.example (Postfix) with ESMTPS id 4JKL; {DATE}",
        V12,
        "ECDHE-RSA-CHACHA20-POLY1305",
        256,
    ),
    (
        "lab-receiver",
        "Received: from sender.lab.test (sender.lab.test [172.30.0.5]) "
        "(using TLSv1.2 with cipher ECDHE-RSA-AES128-GCM-SHA256 (128/128 bits)) "
        f"by mx.tls12.lab.test (Sender TLS Lab) with ESMTPS id abc123; {DATE}",
        V12,
        "ECDHE-RSA-AES128-GCM-SHA256",
        128,
    ),
    # --- Exim ---
    (
        "exim-current-tls13",
        "from mail.example.org ([192.0.2.7]) by mx.example.net with esmtps  (TLS1.3) "
        "tls TLS_AES_256_GCM_SHA384 (Exim 4.96) (envelope-from <a@example.org>) "
        f"id 1tSgXk-0001aB-2c for r@example.net; {DATE}",
        V13,
        "TLS_AES_256_GCM_SHA384",
        None,
    ),
    (
        "exim-current-tls12-folded",
        "from mail.example.org ([192.0.2.7])\n\tby mx.example.net with esmtps  (TLS1.2)\n"
        "\ttls ECDHE-RSA-AES256-GCM-SHA384\n\t(Exim 4.97)\n\tid 1tSgXk-0001aB-2c; " + DATE,
        V12,
        "ECDHE-RSA-AES256-GCM-SHA384",
        None,
    ),
    (
        "exim-older-openssl",
        "from mail.example.org ([192.0.2.7]) by mx.example.net with esmtps "
        "(TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384:256) (Exim 4.89) (envelope-from <a@example.org>) "
        f"id 1aBcDe-0004Xy-Zz; {DATE}",
        V12,
        "ECDHE-RSA-AES256-GCM-SHA384",
        256,
    ),
    (
        "exim-older-gnutls",
        "from mail.example.org ([192.0.2.7]) by mx.example.net with esmtps "
        f"(TLS1.2:ECDHE_RSA_AES_256_GCM_SHA384:256) (Exim 4.84_2) id 1aBcDe-0004Xy-Zz; {DATE}",
        V12,
        "ECDHE_RSA_AES_256_GCM_SHA384",
        256,
    ),
    (
        "exim-older-openssl-tls10",
        "from mail.example.org ([192.0.2.7]) by mx.example.net with esmtps "
        f"(TLSv1:DHE-RSA-AES256-SHA:256) (Exim 4.80) id 1aBcDe-0004Xy-Zz; {DATE}",
        V10,
        "DHE-RSA-AES256-SHA",
        256,
    ),
    (
        "exim-older-gnutls-tls11",
        "from mail.example.org ([192.0.2.7]) by mx.example.net with esmtps "
        f"(TLS1.1:ECDHE_RSA_AES_128_CBC_SHA1:128) (Exim 4.82) id 1aBcDe-0004Xy-Zz; {DATE}",
        V11,
        "ECDHE_RSA_AES_128_CBC_SHA1",
        128,
    ),
    # --- Gmail ---
    (
        "gmail-tls13",
        "by mx.google.com with ESMTPS id x7si1234567qkb.123.2025.01.01.00.00.00 for <r@x> "
        f" (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256); {DATE}",
        V13,
        "TLS_AES_256_GCM_SHA384",
        256,
    ),
    (
        "gmail-tls12-folded",
        "from mail.example.org (mail.example.org. [192.0.2.7])\r\n"
        "        by mx.google.com with ESMTPS id a1si2345678wrb.10.2025.01.01.00.00.00\r\n"
        "        for <r@gmail.com>\r\n"
        "        (version=TLS1_2 cipher=ECDHE-ECDSA-AES128-GCM-SHA256 bits=128/128);\r\n"
        f"        {DATE}",
        V12,
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        128,
    ),
    # --- Microsoft 365 ---
    (
        "m365-tls12",
        "from AM0PR02MB1234.eurprd02.prod.outlook.com (2603:10a6:208:1::1) by "
        "AM0PR02MB5678.eurprd02.prod.outlook.com (2603:10a6:208:2::2) with Microsoft SMTP "
        "Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id "
        f"15.20.1234.5; {DATE}",
        V12,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        None,
    ),
    (
        "m365-tls13",
        "from mail.example.org (192.0.2.7) by DB5PEPF00014B9A.mail.protection.outlook.com "
        "(10.167.8.5) with Microsoft SMTP Server (version=TLS1_3, "
        f"cipher=TLS_AES_256_GCM_SHA384) id 15.20.8293.17 via Frontend Transport; {DATE}",
        V13,
        "TLS_AES_256_GCM_SHA384",
        None,
    ),
    (
        "m365-tls10",
        "from legacy.example.org (192.0.2.8) by BN1NAM02FT012.mail.protection.outlook.com "
        "(10.13.2.10) with Microsoft SMTP Server (version=TLS1_0, "
        f"cipher=TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA) id 15.20.1234.5; {DATE}",
        V10,
        "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
        None,
    ),
    # --- Sendmail ---
    (
        "sendmail-tls13",
        "from mail.example.org (mail.example.org [192.0.2.7]) by mx.example.net "
        "(8.17.1/8.17.1) with ESMTPS id 501AbCdE012345 "
        f"(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384 bits=256 verify=NO); {DATE}",
        V13,
        "TLS_AES_256_GCM_SHA384",
        256,
    ),
    (
        "sendmail-tls11-folded",
        "from mail.example.org (mail.example.org [192.0.2.7])\n"
        "\tby mx.example.net (8.15.2/8.15.2) with ESMTPS id 501AbCdE012345\n"
        "\t(version=TLSv1.1 cipher=ECDHE-RSA-AES256-SHA bits=256 verify=NOT)\n"
        f"\tfor <r@example.net>; {DATE}",
        V11,
        "ECDHE-RSA-AES256-SHA",
        256,
    ),
    # --- OpenSMTPD ---
    (
        "opensmtpd-tls13",
        "from mail.example.org (mail.example.org [192.0.2.7]) by mx.example (OpenSMTPD) "
        f"with ESMTPS id 1a2b3c4d (TLSv1.3:TLS_AES_256_GCM_SHA384:256:NO) for <r@x>; {DATE}",
        V13,
        "TLS_AES_256_GCM_SHA384",
        256,
    ),
    (
        "opensmtpd-tls12",
        "from mail.example.org (mail.example.org [192.0.2.7]) by mx.example (OpenSMTPD) "
        f"with ESMTPS id 9f8e7d6c (TLSv1.2:ECDHE-RSA-AES256-GCM-SHA384:256:YES); {DATE}",
        V12,
        "ECDHE-RSA-AES256-GCM-SHA384",
        256,
    ),
    # --- Cisco IronPort / Secure Email ---
    (
        "ironport-with-version",
        "from mail.example.org ([192.0.2.7]) by esa1.hc1234-56.iphmx.com with "
        "ESMTP/TLS/ECDHE-RSA-AES256-GCM-SHA384 "
        f"(version=TLSv1.2 cipher=ECDHE-RSA-AES256-GCM-SHA384); {DATE}",
        V12,
        "ECDHE-RSA-AES256-GCM-SHA384",
        None,
    ),
    (
        "ironport-cipher-tls13-family",
        "from mail.example.org ([192.0.2.7]) by esa2.example.iphmx.com with "
        f"ESMTP/TLS/TLS_AES_256_GCM_SHA384; {DATE}",
        V13,
        "TLS_AES_256_GCM_SHA384",
        None,
    ),
    (
        "ironport-cipher-tls12-family-gcm",
        "from mail.example.org ([192.0.2.7]) by esa.example with "
        f"ESMTP/TLS/ECDHE-RSA-AES256-GCM-SHA384; {DATE}",
        V12,
        "ECDHE-RSA-AES256-GCM-SHA384",
        None,
    ),
    (
        "ironport-cipher-tls12-family-chacha",
        f"from x ([192.0.2.7]) by esa.example with ESMTP/TLS/ECDHE-RSA-CHACHA20-POLY1305; {DATE}",
        V12,
        "ECDHE-RSA-CHACHA20-POLY1305",
        None,
    ),
    (
        "ironport-cipher-tls12-family-sha384",
        f"from x ([192.0.2.7]) by esa.example with ESMTP/TLS/ECDHE-RSA-AES256-SHA384; {DATE}",
        V12,
        "ECDHE-RSA-AES256-SHA384",
        None,
    ),
    (
        "ironport-cipher-ambiguous-reports-lowest",
        f"from x ([192.0.2.7]) by esa.example with ESMTP/TLS/AES256-SHA; {DATE}",
        V10,
        "AES256-SHA",
        None,
    ),
    (
        "ironport-bare-tls-no-cipher",
        f"from x ([192.0.2.7]) by esa.example with ESMTP/TLS; {DATE}",
        V10,
        evidence.UNKNOWN_CIPHER,
        None,
    ),
    # --- Mimecast ---
    (
        "mimecast-bare-tls",
        "from mail.example.org (mail.example.org [192.0.2.7]) by relay.mimecast.com "
        f"with ESMTP (TLS) id abc-123-XYZ; {DATE}",
        V10,
        evidence.UNKNOWN_CIPHER,
        None,
    ),
    (
        "mimecast-esmtps-version",
        "from mail.example.org (mail.example.org [192.0.2.7]) by relay.mimecast.com "
        "with ESMTPS (version=TLS1_2 cipher=ECDHE-RSA-AES256-GCM-SHA384) "
        f"id us-mta-123-abc; {DATE}",
        V12,
        "ECDHE-RSA-AES256-GCM-SHA384",
        None,
    ),
    (
        "mimecast-starttls-comma",
        "from mail.example.org (mail.example.org [192.0.2.7]) by us-smtp-inbound-1.mimecast.com "
        "with ESMTP with STARTTLS (version=TLSv1.2, "
        f"cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id us-mta-1-abc; {DATE}",
        V12,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        None,
    ),
    # --- Stalwart ---
    (
        "stalwart-key-value",
        "from mail.example.org (mail.example.org [192.0.2.7]) by mx.example (Stalwart SMTP) "
        f"with ESMTPS id 1234 (version=TLSv1.3 cipher=TLS13_AES_256_GCM_SHA384); {DATE}",
        V13,
        "TLS13_AES_256_GCM_SHA384",
        None,
    ),
    (
        "stalwart-word-form",
        "from mail.example.org (mail.example.org [192.0.2.7]) by mx.example (Stalwart SMTP) "
        f"with ESMTPS id 1234 tls TLSv1_3 cipher TLS13_AES_128_GCM_SHA256; {DATE}",
        V13,
        "TLS13_AES_128_GCM_SHA256",
        None,
    ),
    (
        "stalwart-word-form-tls1_2",
        "from m.example (m.example [192.0.2.7]) by mx.example (Stalwart SMTP) with ESMTPS "
        f"id 1 tls TLS1_2 cipher TLS13_AES_128_GCM_SHA256; {DATE}",
        V12,
        "TLS13_AES_128_GCM_SHA256",
        None,
    ),
    (
        "stalwart-postfix-style-with-asn",
        "from sender.example (sender.example [192.0.2.52] (AS2639 EXAMPLE, US))\r\n"
        "\t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n"
        "\tby mx.example.org (Stalwart SMTP) with ESMTPS id 49A5F2B839DB1C2;\r\n"
        f"\t{DATE}",
        V13,
        "TLS13_AES_256_GCM_SHA384",
        None,
    ),
    (
        "stalwart-version-spelled-TLS1.3",
        "from c ([192.0.2.7]) by h (Stalwart SMTP) with ESMTPS id 1 "
        f"(version=TLS1.3 cipher=TLS_AES_256_GCM_SHA384); {DATE}",
        V13,
        "TLS_AES_256_GCM_SHA384",
        None,
    ),
    (
        "version-spelled-TLSv1-is-tls10",
        f"from c ([192.0.2.7]) by h with ESMTPS id 1 (version=TLSv1 cipher=AES128-SHA); {DATE}",
        V10,
        "AES128-SHA",
        None,
    ),
    (
        "esmtps-without-clause-reports-lowest",
        f"from c ([192.0.2.7]) by mx.example (Postfix) with ESMTPS id 4ABC; {DATE}",
        V10,
        evidence.UNKNOWN_CIPHER,
        None,
    ),
]

PLAINTEXT_CASES: list[tuple[str, str]] = [
    (
        "postfix-esmtp",
        "from a.example (a.example [192.0.2.1]) by mx.example (Postfix) with ESMTP id 4ABC "
        f"for <r@mx.example>; {DATE} (UTC)",
    ),
    (
        "postfix-esmtp-folded",
        "Received: from a.example (a.example [192.0.2.1])\r\n"
        "\tby mx.example (Postfix) with ESMTP id 4ABC\r\n"
        f"\tfor <r@mx.example>; {DATE} (UTC)",
    ),
    (
        "lab-receiver-plaintext",
        "Received: from sender.lab.test (sender.lab.test [172.30.0.5]) "
        f"by mx.no-starttls.lab.test (Sender TLS Lab) with ESMTP id abc123; {DATE}",
    ),
    (
        "exim-esmtp",
        "from mail.example.org ([192.0.2.7]) by mx.example.net with esmtp (Exim 4.96) "
        f"(envelope-from <a@example.org>) id 1tSgXk-0001aB-2c for r@example.net; {DATE}",
    ),
    (
        "gmail-smtp",
        "from mail.example.org (mail.example.org. [192.0.2.7]) by mx.google.com with SMTP "
        f"id a1si2345678wrb.10.2025.01.01.00.00.00 for <r@gmail.com>; {DATE}",
    ),
    (
        "m365-plain",
        "from mail.example.org (192.0.2.7) by BN1NAM02FT012.mail.protection.outlook.com "
        f"(10.13.2.10) with Microsoft SMTP Server id 15.20.1234.5 via Frontend Transport; {DATE}",
    ),
    (
        "sendmail-esmtp",
        "from mail.example.org (mail.example.org [192.0.2.7]) by mx.example.net "
        f"(8.17.1/8.17.1) with ESMTP id 501AbCdE012345; {DATE}",
    ),
    (
        "opensmtpd-esmtp",
        f"from mail.example.org (mail.example.org [192.0.2.7]) by mx.example (OpenSMTPD) "
        f"with ESMTP id 1a2b3c4d for <r@x>; {DATE}",
    ),
    (
        "ironport-esmtp",
        f"from mail.example.org ([192.0.2.7]) by esa.example with ESMTP; {DATE}",
    ),
    (
        "mimecast-esmtp",
        f"from m.example (m.example [192.0.2.7]) by relay.mimecast.com with ESMTP id abc; {DATE}",
    ),
    ("local-pickup", "by mx.example (Postfix, from userid 1000) id 4ABC; " + DATE),
]

JUNK_CASES: list[tuple[str, str]] = [
    ("empty", ""),
    ("whitespace", " \r\n\t \n"),
    ("name-only", "Received:"),
    ("unknown-version-using", "from x by y (using TLSv9.9 with cipher X (1/1 bits))"),
    ("unknown-version-kv", "by y with SMTP (version=TLS1_9 cipher=FOO bits=1/1)"),
    ("unknown-version-kv-with-esmtps", "by y with ESMTPS id 1 (version=TLS1_9 cipher=FOO)"),
    ("unknown-version-exim", "by y with esmtps (TLS2.0) tls FOO"),
    ("unknown-version-colon", "by y with ESMTPS (TLSv1.7:FOO:256)"),
    ("sslv3", "from x (using SSLv3 with cipher DES-CBC3-SHA (168/168 bits)) by y with ESMTPS"),
    ("near-miss-no-cipher", "from x (using TLSv1.2 with) by y with ESMTP"),
    ("near-miss-versionless", "from x (using with cipher AES) by y with ESMTP"),
    ("parens", "(" * 5000),
    ("closing-parens", ")" * 5000),
    ("nul-bytes", "\x00" * 300),
    ("replacement-chars", "\ufffd" * 200 + "using TLS"),
    ("surrogates", "\udcff\udc80 using TLSv1.2 with cipher"),
]


def _facts(version: TlsVersion, cipher: str, bits: int | None) -> TlsFacts:
    return TlsFacts(version=version, cipher=cipher, bits=bits)


@pytest.mark.parametrize(
    ("header", "version", "cipher", "bits"),
    [pytest.param(*case[1:], id=case[0]) for case in TLS_CASES],
)
def test_tls_headers(header: str, version: TlsVersion, cipher: str, bits: int | None) -> None:
    assert parse_received(header) == _facts(version, cipher, bits)


@pytest.mark.parametrize(
    ("header", "version", "cipher", "bits"),
    [pytest.param(*case[1:], id=case[0]) for case in TLS_CASES],
)
def test_tls_headers_with_name_and_lf_folding(
    header: str, version: TlsVersion, cipher: str, bits: int | None
) -> None:
    bare = header.removeprefix("Received: ")
    folded = "Received: " + bare.replace(" by ", "\n\tby ").replace(" (", "\r\n    (")
    assert parse_received(folded) == _facts(version, cipher, bits)


def first_parser(header: str) -> int:
    """Return the index in evidence._PARSERS of the first parser that reads the header."""
    text = evidence._prepare(header)
    return next(i for i, parse in enumerate(evidence._PARSERS) if parse(text) is not None)


def test_all_versions_covered_across_formats() -> None:
    parsed = [parse_received(case[1]) for case in TLS_CASES]
    assert {facts.version for facts in parsed if facts is not None} == set(TlsVersion)
    # every format is the first to read some case: none is dead, shadowed by an earlier one
    assert {first_parser(case[1]) for case in TLS_CASES} == set(range(len(evidence._PARSERS)))


@pytest.mark.parametrize("header", [pytest.param(c[1], id=c[0]) for c in PLAINTEXT_CASES])
def test_plaintext_is_none(header: str) -> None:
    assert parse_received(header) is None


@pytest.mark.parametrize("header", [pytest.param(c[1], id=c[0]) for c in JUNK_CASES])
def test_junk_is_none(header: str) -> None:
    assert parse_received(header) is None


@pytest.mark.parametrize("value", [None, 42, b"using TLSv1.2 with cipher X", object(), [1]])
def test_non_str_is_none(value: Any) -> None:
    assert parse_received(cast(str, value)) is None


def test_random_bytes_never_raise() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        text = rng.randbytes(rng.randint(0, 4096)).decode("utf-8", errors="replace")
        result = parse_received(text)
        assert result is None or isinstance(result.version, TlsVersion)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("(" * 1_000_000, id="1MB-open-parens"),
        pytest.param("(TLSv1.2:" * 200_000, id="colon-prefix-repeated"),
        pytest.param("(using TLSv1.2 with cipher " * 50_000, id="postfix-prefix-repeated"),
        pytest.param("version=TLS1_2 " * 100_000, id="kv-version-repeated"),
        pytest.param("a" * 1_000_000 + " (TLS1.3) tls X", id="clause-past-cap"),
        pytest.param(" \t\r\n" * 300_000, id="whitespace-1MB"),
        pytest.param("ESMTP/TLS/" + "A" * 1_000_000, id="ironport-huge-cipher"),
    ],
)
def test_giant_inputs_are_cut_at_the_cap(header: str) -> None:
    # no timing here: what bounds the work is that only the first MAX_HEADER_CHARS are read
    assert len(header) > evidence.MAX_HEADER_CHARS
    assert len(evidence._prepare(header)) <= evidence.MAX_HEADER_CHARS
    result = parse_received_unguarded(header)
    assert result == parse_received_unguarded(header[: evidence.MAX_HEADER_CHARS])
    assert result is None or isinstance(result.version, TlsVersion)


def test_giant_input_clause_past_cap_is_ignored() -> None:
    assert parse_received("x" * evidence.MAX_HEADER_CHARS + " (TLS1.3) tls X") is None
    assert parse_received(" (TLS1.3) tls X " + "x" * 1_000_000) == _facts(V13, "X", None)


def test_overlong_cipher_is_not_truncated() -> None:
    header = "by y with ESMTP/TLS/" + "A" * 500
    facts = parse_received(header)
    # The cipher is not reported truncated; the hop still counts as TLS, at the lowest version.
    assert facts == _facts(V10, evidence.UNKNOWN_CIPHER, None)


def test_first_clause_wins_and_postfix_bits_ignore_signature_bits() -> None:
    header = (
        "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519 "
        "server-signature RSA-PSS (4096 bits)) by mx with ESMTPS (version=TLS1_2 cipher=Y)"
    )
    assert parse_received(header) == _facts(V13, "TLS_AES_256_GCM_SHA384", 256)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("TLSv1", V10),
        ("TLSv1.0", V10),
        ("TLS1", V10),
        ("TLS1_0", V10),
        ("TLSv1.1", V11),
        ("TLS1_1", V11),
        ("TLS1.2", V12),
        ("TLSv1_2", V12),
        ("tlsv1.3", V13),
        ("TLS1_3", V13),
        ("TLSv1_3", V13),
        ("TLSv1.4", None),
        ("TLSv2", None),
        ("SSLv3", None),
        ("TLSv1.2.1", None),
        ("", None),
    ],
)
def test_normalise_version(name: str, expected: TlsVersion | None) -> None:
    assert evidence.normalise_version(name) is expected


def test_normalise_version_agrees_with_openssl_names() -> None:
    for name in ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"):
        assert evidence.normalise_version(name) is TlsVersion.from_openssl(name)


@pytest.mark.parametrize(
    ("cipher", "expected"),
    [
        ("TLS_AES_256_GCM_SHA384", V13),
        ("TLS_CHACHA20_POLY1305_SHA256", V13),
        ("TLS13_AES_128_GCM_SHA256", V13),
        ("ECDHE-RSA-AES256-GCM-SHA384", V12),
        ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", V12),
        ("ECDHE-ECDSA-CHACHA20-POLY1305", V12),
        ("ECDHE-RSA-AES128-SHA256", V12),
        ("TLS_RSA_WITH_AES_256_CBC_SHA256", V12),
        ("AES256-SHA", V10),
        ("ECDHE-RSA-AES256-SHA", V10),
        ("DES-CBC3-SHA", V10),
        ("RC4-MD5", V10),
    ],
)
def test_infer_version_never_overstates(cipher: str, expected: TlsVersion) -> None:
    assert evidence.infer_version(cipher) is expected


# The property tests run the parsers without their guard: a crash on any input fails them.
@settings(max_examples=500, deadline=None)
@given(st.text(max_size=3000))
def test_property_never_raises_on_text(text: str) -> None:
    result = parse_received_unguarded(text)
    assert result is None or (
        isinstance(result, TlsFacts) and isinstance(result.version, TlsVersion)
    )


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "(",
                ")",
                " ",
                "\r\n\t",
                ":",
                "=",
                ",",
                ";",
                "/",
                "using ",
                " with cipher ",
                "TLSv1",
                "TLSv1.2",
                "TLS1_3",
                "TLS9",
                "SSLv3",
                "version=",
                "cipher=",
                "bits=",
                "256/256 bits",
                "256",
                "tls ",
                "ESMTP/TLS/",
                "with ESMTPS",
                "(TLS)",
                "AES-GCM",
                "TLS_AES_",
                "\x00",
                "\ufffd",
            ]
        ),
        max_size=60,
    ).map("".join)
)
def test_property_never_raises_on_near_misses(text: str) -> None:
    result = parse_received_unguarded(text)
    assert result is None or isinstance(result.version, TlsVersion)


@settings(max_examples=200, deadline=None)
@given(
    version=st.sampled_from(["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]),
    cipher=st.from_regex(r"[A-Z0-9][A-Z0-9_-]{0,40}", fullmatch=True),
    bits=st.integers(min_value=1, max_value=99999),
)
def test_property_postfix_round_trip(version: str, cipher: str, bits: int) -> None:
    header = (
        f"from a (a [192.0.2.1]) (using {version} with cipher {cipher} ({bits}/{bits} bits)) "
        f"by mx (Postfix) with ESMTPS id 1; {DATE}"
    )
    assert parse_received(header) == _facts(TlsVersion.from_openssl(version), cipher, bits)


MESSAGE = (
    b"From sender@example.org Thu Jan  1 00:00:00 2025\r\n"
    b"Return-Path: <a@example.org>\r\n"
    b"Received: from relay.example.net (relay.example.net [192.0.2.2])\r\n"
    b"\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
    b"\tby mx.example (Postfix) with ESMTPS id 4ABC\r\n"
    b"\tfor <r@mx.example>; Thu, 1 Jan 2025 00:00:02 +0000 (UTC)\r\n"
    b"X-Other: value\r\n"
    b"  continued\r\n"
    b"received: from mail.example.org ([192.0.2.7]) by relay.example.net with esmtp\r\n"
    b"\t(Exim 4.96) id 1t-2; Thu, 1 Jan 2025 00:00:01 +0000\r\n"
    b"Received:   by mail.example.org (Postfix, from userid 1000) id 9Z;"
    b" Thu, 1 Jan 2025 00:00:00 +0000\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"Received: this is body text, not a header\r\n"
)


def test_received_headers_in_order_as_written() -> None:
    values = received_headers(MESSAGE)
    assert values == [
        "from relay.example.net (relay.example.net [192.0.2.2])\r\n"
        "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n"
        "\tby mx.example (Postfix) with ESMTPS id 4ABC\r\n"
        "\tfor <r@mx.example>; Thu, 1 Jan 2025 00:00:02 +0000 (UTC)",
        "from mail.example.org ([192.0.2.7]) by relay.example.net with esmtp\r\n"
        "\t(Exim 4.96) id 1t-2; Thu, 1 Jan 2025 00:00:01 +0000",
        "by mail.example.org (Postfix, from userid 1000) id 9Z; Thu, 1 Jan 2025 00:00:00 +0000",
    ]


@pytest.mark.parametrize("newline", [b"\r\n", b"\n"])
def test_received_headers_match_compat32(newline: bytes) -> None:
    data = MESSAGE.replace(b"\r\n", newline)
    parsed = email.message_from_bytes(data, policy=email.policy.compat32)
    expected = [str(v) for v in parsed.get_all("Received") or []]
    assert received_headers(data) == expected


def test_hops_pairs_values_with_facts() -> None:
    result = hops(MESSAGE)
    assert [facts for _, facts in result] == [
        _facts(V13, "TLS_AES_256_GCM_SHA384", 256),
        None,
        None,
    ]
    assert [value for value, _ in result] == received_headers(MESSAGE)


def test_received_headers_decode_bad_bytes_with_replacement() -> None:
    data = b"Received: from h\xff\xfe by mx with ESMTP; x\r\n\r\nbody"
    assert received_headers(data) == ["from h\ufffd\ufffd by mx with ESMTP; x"]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"no header here at all",
        b"\tcontinuation first\r\nReceived: x\r\n",
        b"Received:",
        b"Received:\r\n\tfrom folded-only",
        bytes(range(256)) * 100,
        b"Received: " + b"(" * 1_000_000,
    ],
)
def test_received_headers_never_raise(data: bytes) -> None:
    values = received_headers(data)
    assert all(isinstance(v, str) for v in values)
    assert all(isinstance(f, TlsFacts | None) for _, f in hops(data))


def test_received_headers_edge_values() -> None:
    assert received_headers(b"Received:") == [""]
    assert received_headers(b"Received:\r\n\tfrom folded-only") == ["\r\n\tfrom folded-only"]
    assert received_headers(b"\tcontinuation first\r\nReceived: x\r\n") == ["x"]


@pytest.mark.parametrize("value", [None, 42, "Received: x\r\n\r\n", bytearray(b"Received: y\n")])
def test_received_headers_odd_types(value: Any) -> None:
    result = received_headers(cast(bytes, value))
    assert isinstance(result, list)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000))
def test_property_received_headers_never_raise(data: bytes) -> None:
    for value in received_headers_unguarded(data):
        assert isinstance(value, str)
        facts = parse_received_unguarded(value)
        assert facts is None or isinstance(facts.version, TlsVersion)


def crash(*_args: object) -> None:
    raise RuntimeError("a parser bug")


def test_a_parser_crash_is_logged_and_counted_not_silently_plaintext(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(evidence, "_CRASHES", Counter())
    monkeypatch.setattr(evidence, "_PARSERS", (crash,))
    header = "from a (using TLSv1.2 with cipher X) by mx"
    with pytest.raises(RuntimeError, match="a parser bug"):
        parse_received_unguarded(header)
    assert evidence.parser_crashes() == {}
    with caplog.at_level(logging.ERROR, logger="harness.evidence"):
        assert parse_received(header) is None
    assert evidence.parser_crashes() == {"parse_received": 1}
    (logged,) = caplog.records
    assert logged.levelno == logging.ERROR
    assert "parse_received crashed" in logged.getMessage()
    assert "using TLSv1.2" in logged.getMessage()
    assert logged.exc_info is not None


def test_a_reader_crash_keeps_what_was_read_and_is_counted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(evidence, "_CRASHES", Counter())
    top = received_headers(MESSAGE)[0]
    decode = evidence._decode_value
    calls: list[int] = []

    def decode_once(parts: list[bytes]) -> str:
        calls.append(1)
        if len(calls) > 1:
            crash()
        return decode(parts)

    monkeypatch.setattr(evidence, "_decode_value", decode_once)
    with caplog.at_level(logging.ERROR, logger="harness.evidence"):
        assert received_headers(MESSAGE) == [top]
    assert evidence.parser_crashes() == {"received_headers": 1}
    assert "received_headers crashed" in caplog.text


def test_reexports() -> None:
    # the model's own class, not a copy: facts from the parser compare equal to the runner's
    assert evidence.TlsFacts is harness.model.TlsFacts
    assert all(hasattr(evidence, name) for name in evidence.__all__)
    public = {n for n, v in vars(evidence).items() if callable(v) and not n.startswith("_")}
    own = {n for n in public if getattr(vars(evidence)[n], "__module__", "") == evidence.__name__}
    assert own <= set(evidence.__all__)  # every function this module defines is exported
