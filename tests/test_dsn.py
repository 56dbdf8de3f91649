"""DSN parsing (RFC 3464) and what each DSN action means for a cell an external sender handled."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.classify import Arrival, Bounce, Watched, classify
from harness.dsn import DsnAction, parse_dsn
from harness.model import Outcome, TlsFacts
from harness.observe import dsn_summary, find_bounces
from harness.senders.base import SendAction, SendReport
from lab.evidence_store import EvidenceStore
from lab.serve import ReceiverEndpoint
from lab.spec import TlsVersion

RCPT = "inbox@tls13.lab.test"
ORIGINAL = b"Message-ID: <cell.1@sender.lab.test>\r\nSubject: test\r\n"
SUBMITTED = SendReport(SendAction.SUBMITTED, "the service accepted it")
TLS13 = TlsFacts(version=TlsVersion.TLS13, cipher="TLS_AES_256_GCM_SHA384", bits=256)


def recipient_block(action: str, status: str, rcpt: str = RCPT, extra: str = "") -> str:
    """Return one per-recipient block of a delivery-status part."""
    return (
        f"Final-Recipient: rfc822; {rcpt}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Remote-MTA: dns; mx.tls13.lab.test\r\nDiagnostic-Code: smtp; 421 try later\r\n{extra}"
    )


def report(*blocks: str, status_part: str | None = None) -> bytes:
    """Return a multipart/report DSN with these per-recipient blocks, quoting the original."""
    body = status_part or "Reporting-MTA: dns; relay.test\r\n\r\n" + "\r\n".join(blocks)
    text = (
        "From: MAILER-DAEMON@relay.test\r\nSubject: Delivery Status Notification\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nA human-readable part.\r\n"
        f"--B\r\nContent-Type: message/delivery-status\r\n\r\n{body}\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    )
    return text.encode() + ORIGINAL + b"\r\n--B--\r\n"


@pytest.mark.parametrize(
    ("action", "status"),
    [("failed", "5.7.10"), ("failed", "4.4.7"), ("delayed", "4.4.1"),
     ("delivered", "2.0.0"), ("relayed", "2.0.0"), ("expanded", "2.1.5")],
)  # fmt: skip
def test_each_action_is_read_with_its_status(action: str, status: str) -> None:
    parsed = parse_dsn(report(recipient_block(action.upper(), f"{status} (a comment)")))
    assert parsed is not None
    assert parsed.reporting_mta == "dns; relay.test"
    (only,) = parsed.recipients
    assert (only.recipient, only.action, only.status) == (RCPT, DsnAction(action), status)
    assert only.remote_mta == "dns; mx.tls13.lab.test"
    assert parsed.action_for(RCPT) is DsnAction(action)


@pytest.mark.parametrize(
    "status_part",
    [
        "Reporting-MTA: dns; relay.test\r\n",  # no per-recipient block
        "Reporting-MTA: dns; relay.test\r\n\r\n" + recipient_block("bounced", "5.0.0"),
        "Reporting-MTA: dns; relay.test\r\n\r\n" + recipient_block("failed", "550"),
        "Reporting-MTA: dns; relay.test\r\n\r\n" + recipient_block("failed", "6.0.0"),
        "Reporting-MTA: dns; relay.test\r\n\r\nAction: failed\r\nStatus: 5.0.0\r\n",
        "Reporting-MTA: dns; relay.test\r\n\r\n" + recipient_block("failed", "5.0.0", rcpt=""),
        recipient_block("failed", "5.0.0"),  # no per-message block first
        "this is not a delivery status at all: the message <cell.1@sender.lab.test> failed",
    ],
)
def test_a_malformed_report_is_no_dsn(status_part: str) -> None:
    assert parse_dsn(report(status_part=status_part)) is None


def test_a_message_without_a_delivery_status_part_is_no_dsn() -> None:
    text = b"Subject: Undelivered Mail\r\n\r\nYour message failed.\r\n" + ORIGINAL
    assert parse_dsn(text) is None
    assert dsn_summary(text) == "Subject: Undelivered Mail"
    assert parse_dsn(b"\x00\xff garbage") is None


def test_with_several_recipients_the_block_about_ours_decides() -> None:
    other = "someone@elsewhere.test"
    ours_delivered = report(recipient_block("failed", "5.1.1", other),
                            recipient_block("delivered", "2.0.0"))  # fmt: skip
    parsed = parse_dsn(ours_delivered)
    assert parsed is not None
    assert len(parsed.recipients) == 2
    assert parsed.action_for(RCPT) is DsnAction.DELIVERED
    assert parsed.action_for(other) is DsnAction.FAILED
    assert "5.1.1" not in dsn_summary(ours_delivered, RCPT)
    ours_failed = parse_dsn(report(recipient_block("delivered", "2.0.0", other),
                                   recipient_block("failed", "5.7.10")))  # fmt: skip
    assert ours_failed is not None
    assert ours_failed.action_for(RCPT) is DsnAction.FAILED
    # an original recipient names ours after a rewrite; with none naming ours, all count
    original = f"Original-Recipient: rfc822; {RCPT}\r\n"
    rewritten = parse_dsn(report(recipient_block("delayed", "4.4.1", "alias@x.test", original)))
    assert rewritten is not None
    assert rewritten.action_for(RCPT) is DsnAction.DELAYED
    assert rewritten.action_for("nobody@x.test") is DsnAction.DELAYED
    mixed = parse_dsn(report(recipient_block("delayed", "4.4.1"),
                             recipient_block("failed", "5.0.0")))  # fmt: skip
    assert mixed is not None
    assert mixed.action_for(RCPT) is DsnAction.FAILED


def bounce(action: DsnAction | None, summary: str) -> Bounce:
    """Return a stored bounce-mailbox message with what its DSN says."""
    return Bounce("tls12", "bounce+c@lab.test", "from relay by mx.tls12.lab.test", summary, action)


def test_only_a_failed_dsn_is_a_refusal() -> None:
    failed = bounce(DsnAction.FAILED, "Action: failed; Status: 5.7.10")
    seen = classify(SUBMITTED, [], False, Watched((failed,), timeout=5.0, waited=0.4))
    assert seen.outcome is Outcome.REFUSED
    assert "Status: 5.7.10" in seen.detail
    for action in (DsnAction.DELAYED, DsnAction.DELIVERED, DsnAction.RELAYED, None):
        other = bounce(action, "Action: whatever; Status: 4.4.1")
        seen = classify(SUBMITTED, [], False, Watched((other,), timeout=5.0, waited=5.0))
        assert seen.outcome is Outcome.NOT_OBSERVED, action
        assert "within 5 s" in seen.detail
        assert "also seen:" in seen.detail
        assert "Status: 4.4.1" in seen.detail


def test_an_arrival_wins_over_any_dsn_and_the_dsns_stay_in_the_detail() -> None:
    header = "from a (a [127.0.0.1]) (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384) by mx"
    arrival = Arrival(header, header, TLS13)
    delayed = bounce(DsnAction.DELAYED, "Action: delayed; Status: 4.4.1")
    failed = bounce(DsnAction.FAILED, "Action: failed; Status: 5.7.10")
    seen = classify(SUBMITTED, [arrival], False, Watched((delayed, failed), 5.0, 1.0))
    assert seen.outcome is Outcome.DELIVERED
    assert seen.tls == TLS13
    assert "DSN (delayed)" in seen.detail
    assert "DSN (failed)" in seen.detail
    alone = classify(SUBMITTED, [arrival], False, Watched((), 5.0, 1.0))
    assert "also seen" not in alone.detail


def test_a_bounce_counts_once_its_message_record_is_durable_before_its_session_ends(
    tmp_path: Path,
) -> None:
    # the bounce's session is still open: no sessions.jsonl line yet, only the message record
    store = EvidenceStore(tmp_path, "tls13")
    data = report(recipient_block("failed", "5.7.10"))
    record = {
        "kind": "message", "receiver": "tls13", "session_id": "s", "peer_ip": "127.0.0.1",
        "peer_port": 4000, "handshake": "ok", "version": "TLSv1.3", "queue_id": "0123456789AB",
        "message_id": "<dsn@relay.test>", "rcpt_tos": ["bounce+cell@lab.test"], "size": len(data),
        "eml": "0123456789AB.eml", "received": "from relay.test", "accepted": 1.0,
    }  # fmt: skip
    endpoint = ReceiverEndpoint(
        "tls13", "127.0.0.1", 25, "mx.tls13.lab.test", "tls13.lab.test", store.directory
    )
    assert find_bounces({"tls13": endpoint}, "<cell.1@sender.lab.test>", RCPT) == []  # control
    store.commit_message("0123456789AB", data, record)
    assert not (store.directory / "sessions.jsonl").exists()
    (found,) = find_bounces({"tls13": endpoint}, "<cell.1@sender.lab.test>", RCPT)
    assert found.action is DsnAction.FAILED
    assert found.rcpt == "bounce+cell@lab.test"
