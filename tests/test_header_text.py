"""The lab's Received header: client text in it can never form a TLS clause, a fold or a control."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_evidence import TLS_CASES

from harness.evidence import parse_received, received_headers
from lab.header_text import HELO_NEUTER, helo_text, recipient_text, stored_message
from lab.received_header import received_header
from lab.session_facts import Handshake
from lab.session_record import SessionRecord
from lab.spec import TlsVersion

MX = "mx.no-starttls.lab.test"
DOMAIN = "no-starttls.lab.test"
WHEN = 1_735_689_600.0
CLIENT_NAME = "client.lab.test"
RCPT = f"inbox@{DOMAIN}"
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
NEAR_MISSES = [
    "(", ")", " ", "\r\n\t", "\r", "\n", "\x00", ":", "=", ",", ";", "/", "<", ">", '"', "\\",
    "@", "using ", " with cipher ", "TLSv1", "TLSv1.3", "TLS1_3", "version=", "cipher=",
    "bits=", "256/256 bits", "tls ", "ESMTP/TLS/", "ESMTPS", "with ESMTPS", "with STARTTLS",
    "(TLS)", "TLS_AES_256_GCM_SHA384", "\ufffd", "é",
]  # fmt: skip


def session(ehlo: str, tls: bool) -> SessionRecord:
    """Return a record of a session with this EHLO name: plaintext, or TLS 1.0 when `tls`."""
    record = SessionRecord(receiver="no-starttls", starttls_offered=tls, ehlo=ehlo, esmtp=True)
    record.peer_ip = "127.0.0.1"
    if tls:
        record.handshake, record.version = Handshake.OK, "TLSv1.0"
        record.cipher, record.bits = "ECDHE-RSA-AES256-SHA", 256
    return record


def lab_header(ehlo: str, local_part: str, tls: bool) -> str:
    """Return the header value the lab writes for this EHLO name and recipient local part."""
    header = received_header(session(ehlo, tls), MX, "0123456789AB", f"{local_part}@{DOMAIN}", WHEN)
    return header.removeprefix("Received: ").rstrip("\r\n")


def assert_says_the_session(header: str, tls: bool) -> None:
    """Assert the header parses as the session was and carries no control character."""
    facts = parse_received(header)
    if tls:
        assert facts is not None, header
        assert (facts.version, facts.cipher) == (TlsVersion.TLS10, "ECDHE-RSA-AES256-SHA"), header
    else:
        assert facts is None, header
    assert CONTROL.search(header.replace("\r\n\t", " ")) is None, repr(header)


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls10"])
@pytest.mark.parametrize("clause", [pytest.param(c[1], id=c[0]) for c in TLS_CASES])
def test_every_format_the_parser_reads_is_inert_as_an_ehlo_name_or_recipient(
    clause: str, tls: bool
) -> None:
    assert_says_the_session(lab_header(clause, "inbox", tls), tls)
    assert_says_the_session(lab_header("client.lab.test", f'"{clause}"', tls), tls)
    assert_says_the_session(lab_header("client.lab.test", clause, tls), tls)


@settings(max_examples=300, deadline=None)
@given(
    ehlo=st.lists(st.sampled_from(NEAR_MISSES), min_size=1, max_size=40).map("".join),
    local=st.lists(st.sampled_from(NEAR_MISSES), min_size=1, max_size=40).map("".join),
    tls=st.booleans(),
)
def test_property_no_client_text_changes_what_the_header_says(
    ehlo: str, local: str, tls: bool
) -> None:
    assert_says_the_session(lab_header(ehlo, local, tls), tls)


@pytest.mark.parametrize("name", ["client.lab.test", "[192.0.2.1]", "[IPv6:2001:db8::1]", "a_b"])
def test_honest_helo_names_stay_as_written(name: str) -> None:
    assert helo_text(name) == name


def test_postfix_neutered_characters_and_controls_become_question_marks() -> None:
    assert helo_text(HELO_NEUTER) == "?" * len(HELO_NEUTER)
    controls = "".join(map(chr, range(32))) + "\x7f"
    assert helo_text(controls) == "?" * len(controls)
    assert helo_text("x=y/z,é") == "x?y?z??"  # beyond Postfix: formats without ( or space


def test_recipients_keep_tags_and_lose_everything_else() -> None:
    assert recipient_text("bounce+tls12-relay@lab.test") == "bounce+tls12-relay@lab.test"
    assert recipient_text('"a (b)"@x.test') == "?a??b??@x.test"
    assert recipient_text("a@b@x.test") == "a?b@x.test"
    assert recipient_text("version=TLS1_3@x.test") == "version?TLS1_3@x.test"
    assert recipient_text("no-domain\r") == "no-domain?"


@pytest.mark.parametrize("first", [b" folded", b"\tfolded"])
def test_content_that_would_fold_gets_an_empty_line_before_it(first: bytes) -> None:
    stored = stored_message("Received: from a\r\n", first + b"\r\n\r\nbody")
    assert stored == b"Received: from a\r\n\r\n" + first + b"\r\n\r\nbody"


@pytest.mark.parametrize("content", [b"Subject: x\r\n\r\nbody", b"", b"\r\nbody", b"From x\r\n"])
def test_other_content_follows_the_header_unchanged(content: bytes) -> None:
    assert stored_message("Received: from a\r\n", content) == b"Received: from a\r\n" + content


@settings(max_examples=300, deadline=None)
@given(
    content=st.lists(
        st.sampled_from([b" ", b"\t", b"\r", b"\n", b"\r\n", b"X: y", b"(TLS)", b"\x00", b"\xff"]),
        max_size=20,
    ).map(b"".join)
)
def test_property_no_content_changes_the_labs_field_as_read_back(content: bytes) -> None:
    header = received_header(session(CLIENT_NAME, False), MX, "0123456789AB", RCPT, WHEN)
    recorded = header.removeprefix("Received: ").rstrip("\r\n")
    assert received_headers(stored_message(header, content))[0] == recorded
