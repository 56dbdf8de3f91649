"""Tests of `tlslab evidence`: every Received hop of a saved message with its TLS facts."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from cli_helpers import assert_usage_error, tlslab

from harness.commands import MAX_MESSAGE_FILE_BYTES
from harness.evidence import by_host, parse_received
from harness.labels import facts_text

# A message as the recipient's Gmail mailbox shows it: newest hop first. Hop 4 is the sending
# application handing the message to its local Postfix in plaintext, hop 3 that Postfix relaying
# over TLS 1.2, hop 2 Gmail's MX receiving over TLS 1.3, hop 1 Gmail's internal plaintext hand-off.
MESSAGE = (
    b"Delivered-To: alice@gmail.com\r\n"
    b"Received: by 2002:a05:6a20:9150:b0:1e0:d5c3:4b61 with SMTP id x16csp1234567pzh;\r\n"
    b"        Tue, 14 Jan 2025 02:12:05 -0800 (PST)\r\n"
    b"X-Received: by 2002:a17:907:7baa:b0:aa6:8a1b:8b78 with SMTP id xxx;\r\n"
    b"        Tue, 14 Jan 2025 02:12:05 -0800 (PST)\r\n"
    b"Received: from relay.example.net (relay.example.net. [198.51.100.7])\r\n"
    b"        by mx.google.com with ESMTPS id d2e1a72fcca58-72a8c1b2e3fsi1234.123.2025.01.14\r\n"
    b"        for <alice@gmail.com>\r\n"
    b"        (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256);\r\n"
    b"        Tue, 14 Jan 2025 02:12:04 -0800 (PST)\r\n"
    b"Received: from app01.example.net (app01.example.net [203.0.113.5])\r\n"
    b"\t(using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))\r\n"
    b"\t(No client certificate requested)\r\n"
    b"\tby relay.example.net (Postfix) with ESMTPS id 4Y8c2K1Zq9z9sT1\r\n"
    b"\tfor <alice@gmail.com>; Tue, 14 Jan 2025 10:12:03 +0000 (UTC)\r\n"
    b"Received: from localhost (localhost [127.0.0.1])\r\n"
    b"\tby app01.example.net (Postfix) with ESMTP id 1A2B3C4D5E\r\n"
    b"\tfor <alice@gmail.com>; Tue, 14 Jan 2025 10:12:02 +0000 (UTC)\r\n"
    b"From: Billing <billing@example.net>\r\n"
    b"To: alice@gmail.com\r\n"
    b"Subject: Your invoice\r\n"
    b"\r\n"
    b"Received: by body.example with ESMTPS (not a header: in the body)\r\n"
)
EXPECTED = [
    ("1", "2002:a05:6a20:9150:b0:1e0:d5c3:4b61", "plaintext"),
    ("2", "mx.google.com", "TLSv1.3 TLS_AES_256_GCM_SHA384 (256 bits)"),
    ("3", "relay.example.net", "TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384 (256 bits)"),
    ("4", "app01.example.net", "plaintext"),
]


@pytest.fixture
def eml(tmp_path: Path) -> Path:
    path = tmp_path / "invoice.eml"
    path.write_bytes(MESSAGE)
    return path


def hop_rows(out: str) -> list[tuple[str, str, str]]:
    """Return (number, by host, facts) from the indented hop lines of the text output."""
    rows = []
    for line in out.splitlines():
        if line.startswith("   "):
            number, by, host, facts = line.split(maxsplit=3)
            assert by == "by"
            rows.append((number, host, facts))
    return rows


def test_every_hop_newest_first_with_its_tls_facts(eml: Path) -> None:
    ran = tlslab("evidence", eml)
    assert ran.status == 0, ran.err
    assert ran.out.splitlines()[0] == f"{eml}: 4 hops, newest first"
    assert hop_rows(ran.out) == EXPECTED
    assert "body.example" not in ran.out


def test_json_is_a_list_of_hops(eml: Path) -> None:
    ran = tlslab("evidence", "--json", eml)
    assert ran.status == 0, ran.err
    hops = json.loads(ran.out)
    assert [(str(h["hop"]), h["by"]) for h in hops] == [(n, b) for n, b, _ in EXPECTED]
    assert {h["file"] for h in hops} == {str(eml)}
    assert hops[0]["tls"] is None
    assert hops[1]["tls"] == {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "bits": 256}
    assert hops[2]["tls"]["version"] == "TLSv1.2"
    assert hops[2]["received"].startswith("from app01.example.net")
    assert "\tby relay.example.net (Postfix)" in hops[2]["received"]


def test_stdin_and_several_files(eml: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.eml"
    bare.write_bytes(b"From: a@example.net\r\nSubject: no hops\r\n\r\nbody\r\n")
    ran = tlslab("evidence", "-", bare, stdin=MESSAGE)
    assert ran.status == 0, ran.err
    assert ran.out.splitlines()[0] == "-: 4 hops, newest first"
    assert hop_rows(ran.out) == EXPECTED
    assert ran.out.splitlines()[-1] == f"{bare}: no Received headers"


def test_missing_file_exits_2_with_one_line(eml: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.eml"
    ran = tlslab("evidence", eml, missing)
    line = assert_usage_error(ran, str(missing), "field '(file)'", "file not found", "fix: pass")
    assert line == (
        f"tlslab: error: {missing}: field '(file)': file not found; "
        "fix: pass a saved message (.eml file), or - to read one from stdin"
    )
    assert ran.out == ""


def test_a_folder_is_not_a_message(tmp_path: Path) -> None:
    assert_usage_error(tlslab("evidence", tmp_path), str(tmp_path), "is a folder")


def test_an_endless_device_is_refused_at_once(eml: Path) -> None:
    began = time.monotonic()
    ran = tlslab("evidence", eml, "/dev/zero")
    assert_usage_error(ran, "/dev/zero", "not a regular file")
    assert time.monotonic() - began < 30, "it read the device instead of refusing it"


def test_a_fifo_nobody_writes_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.eml"
    os.mkfifo(fifo)
    assert_usage_error(tlslab("evidence", fifo), str(fifo), "not a regular file")


def test_an_oversized_file_or_stdin_is_refused_by_its_size(tmp_path: Path) -> None:
    huge = tmp_path / "huge.eml"
    with huge.open("wb") as handle:
        handle.truncate(MAX_MESSAGE_FILE_BYTES + 1)  # sparse: no disk used
    assert_usage_error(tlslab("evidence", huge), str(huge), "larger than 64 MiB")
    exact = tmp_path / "exact.eml"
    with exact.open("wb") as handle:
        handle.truncate(MAX_MESSAGE_FILE_BYTES)  # the limit itself is read
    ran = tlslab("evidence", exact)
    assert (ran.status, ran.out) == (0, f"{exact}: no Received headers\n"), ran.err
    piped = tlslab("evidence", "-", stdin=b"x" * (MAX_MESSAGE_FILE_BYTES + 1))
    assert_usage_error(piped, "-: field '(file)'", "larger than 64 MiB")


# --- the helpers, pure ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("received", "host"),
    [
        (
            "from a (a [1.2.3.4]) (using TLSv1.2 with cipher X (256/256 bits)) by mx.b.test id 1",
            "mx.b.test",
        ),
        ("from x (authenticated by someone) by real.example with ESMTPSA", "real.example"),
        ("by 2002:a05::1 with SMTP id x;\r\n Tue, 14 Jan 2025", "2002:a05::1"),
        ("from nowhere with ESMTP id 1", None),
    ],
)
def test_by_host_skips_comments(received: str, host: str | None) -> None:
    assert by_host(received) == host


def test_facts_text() -> None:
    assert facts_text(None) == "plaintext"
    assert facts_text(
        parse_received("(version=TLS1_2 cipher=ECDHE-RSA-AES128-GCM-SHA256 bits=128/128)")
    ) == ("TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256 (128 bits)")
    # a header that only marks TLS: the lowest version it could be, the cipher unstated
    assert (
        facts_text(parse_received("from a by b with ESMTPS id 1")) == "TLSv1.0 (cipher not stated)"
    )
