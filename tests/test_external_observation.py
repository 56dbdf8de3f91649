"""Outcomes for senders we cannot look inside: delivered, refused by a bounce, or not observed.

The end-to-end tests drive a real external sender built from real parts: a tiny SMTP relay
(aiosmtpd on 127.0.0.1) that accepts the message, answers 250 and only later, from another
thread, delivers it to the lab receiver over real STARTTLS, or sends a real RFC 3464 bounce to
the lab's bounce mailbox, or drops it. The runner must wait (bounded) and classify what it saw.
"""

from __future__ import annotations

import contextlib
import shutil
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from harness.arrivals import find_arrivals, is_bounce_mailbox
from harness.cell_pool import Stopped
from harness.classify import Arrival, Bounce, Watched, classify, judge
from harness.dsn import DsnAction
from harness.labels import risk_of
from harness.model import CellExpectation, CellResult, Outcome, Risk, TlsFacts, Verdict
from harness.observe import (
    FAILED_DSN_GRACE_SECONDS,
    Observation,
    describe_attempts,
    dsn_summary,
    watch,
)
from harness.run_start import open_run
from harness.runner import LabRun
from harness.scenarios import DEFAULT_ROOT, load_suite
from harness.senders.base import SendAction, SendReport, TestMessage
from harness.tlsrpt import cell_policy
from lab.backends.base import RunningLab
from lab.backends.local import LocalBackend
from lab.evidence_watch import WakingEvent
from lab.session_facts import SessionFacts
from lab.spec import TlsVersion

SUBMITTED = SendReport(SendAction.SUBMITTED, "the service accepted it")
# a watch long enough that ending before it proves the arrival (or bounce) ended it, on any runner
OBSERVE = 60.0
SLACK = 15.0  # how long after its timeout a loaded runner may take to end a watch
TLS12 = TlsFacts(version=TlsVersion.TLS12, cipher="ECDHE-RSA-AES256-GCM-SHA384", bits=256)


# ---------------------------------------------------------------- pure classification


def test_nothing_within_the_timeout_is_not_observed_never_a_guess() -> None:
    seen = classify(SUBMITTED, [], False, Watched((), timeout=2.0, waited=2.0))
    assert seen.outcome is Outcome.NOT_OBSERVED
    assert seen.tls is None
    assert "within 2 s" in seen.detail
    assert "the service accepted it" in seen.detail
    refused = CellExpectation(outcome=Outcome.REFUSED)
    assert judge(refused, seen.outcome, None) is Verdict.FAIL  # not counted as a refusal
    assert judge(CellExpectation(outcome="not-delivered"), seen.outcome, None) is Verdict.FAIL
    assert judge(CellExpectation(outcome=Outcome.NOT_OBSERVED), seen.outcome, None) is Verdict.PASS


def test_a_bounce_naming_the_message_is_refused_with_its_evidence() -> None:
    bounce = Bounce("tls12", "bounce+c@lab.test", "from x by mx.tls12.lab.test", "Status: 5.7.10",
                    DsnAction.FAILED)  # fmt: skip
    seen = classify(SUBMITTED, [], False, Watched((bounce,), timeout=2.0, waited=0.4))
    assert seen.outcome is Outcome.REFUSED
    assert "bounce+c@lab.test" in seen.detail
    assert "Status: 5.7.10" in seen.detail


def test_a_copy_at_the_receiver_is_delivered_whatever_else_was_seen() -> None:
    header = "from a (unknown [127.0.0.1]) (using TLSv1.2 with cipher X) by mx"
    arrival = Arrival(header, header, TLS12)
    seen = classify(SUBMITTED, [arrival], False, Watched((), timeout=2.0, waited=0.1))
    assert seen.outcome is Outcome.DELIVERED
    assert seen.tls == TLS12


def test_submitted_without_a_watch_is_a_lab_error() -> None:
    assert classify(SUBMITTED, [], False).outcome is Outcome.ERROR


def test_submission_rejected_is_refused_without_watching() -> None:
    rejected = SendReport(SendAction.REFUSED, "submission rejected: MessageRejected")
    assert classify(rejected, [], False).outcome is Outcome.REFUSED


def dsn(
    original: bytes,
    status: str = "5.7.10",
    action: str = "failed",
    rcpt: str = "inbox@no-starttls.lab.test",
) -> bytes:
    """Return a real RFC 3464 delivery status notification quoting the original headers."""
    headers = original.partition(b"\r\n\r\n")[0].decode()
    text = (
        "From: MAILER-DAEMON@relay.test\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n'
        "\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
        "Your message could not be delivered securely.\r\n"
        "\r\n--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; relay.test\r\n\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; TLS is required, but was not offered by host\r\n"
        "\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"{headers}\r\n"
        "\r\n--B--\r\n"
    )
    return text.encode()


def malformed_bounce(original: bytes) -> bytes:
    """Return a bounce that names the message only in its quoted text: no delivery-status part."""
    text = (
        "From: MAILER-DAEMON@relay.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "Action: failed\r\nStatus: 5.7.10\r\n\r\nYour message, quoted below, failed.\r\n\r\n"
    )
    return text.encode() + original.partition(b"\r\n\r\n")[0] + b"\r\n"


def test_reports_show_not_observed_as_its_own_colour_and_count_no_session() -> None:
    cell = CellResult(
        receiver="tls12", sender="ses", outcome=Outcome.NOT_OBSERVED, expected=Outcome.REFUSED,
        verdict=Verdict.FAIL, detail="neither the message nor a bounce arrived within 2 s",
    )  # fmt: skip
    assert risk_of(cell, None) is Risk.NOT_OBSERVED
    summary = cell_policy(cell, None)["summary"]
    assert summary == {"total-successful-session-count": 0, "total-failure-session-count": 0}


def test_dsn_summary_reads_the_delivery_status_fields() -> None:
    summary = dsn_summary(dsn(b"Message-ID: <m@x>\r\n\r\nbody"))
    assert "Action: failed" in summary
    assert "Status: 5.7.10" in summary
    assert "TLS is required" in summary
    plain = EmailMessage()
    plain["Subject"] = "Delivery failure"
    assert dsn_summary(plain.as_bytes()) == "Subject: Delivery failure"


def session_facts(**fields: Any) -> SessionFacts:
    """Return a session record with placeholder peer, times and end, and `fields`."""
    base = {"receiver": "tls12", "session_id": "s", "peer_ip": "127.0.0.1", "peer_port": 1}
    base |= {"started": 0.0, "ended": 0.0, "starttls_offered": True, "ended_by": "quit"}
    return SessionFacts.model_validate(base | fields)


def test_attempts_show_failed_handshakes_then_plaintext() -> None:
    stored = {"queue_id": "A", "size": 1, "eml": "a.eml", "received": "r", "accepted": 0.0}
    sessions = [
        session_facts(started=2.0, messages=[stored]),
        session_facts(started=1.0, handshake="failed", alert="protocol_version"),
    ]
    assert describe_attempts(sessions) == (
        "; the receiver saw 2 sessions while it watched: TLS handshake failed "
        "(protocol_version), then plaintext with 1 message"
    )
    assert describe_attempts([]) == "; the receiver saw no session while it watched"


def test_bounce_mailbox_is_bounce_at_the_zone_apex_only() -> None:
    assert is_bounce_mailbox("bounce+tls12-x@lab.test", "lab.test")
    assert is_bounce_mailbox("BOUNCE@Lab.Test", "lab.test")
    assert not is_bounce_mailbox("bounce@tls12.lab.test", "lab.test")
    assert not is_bounce_mailbox("bouncer@lab.test", "lab.test")
    assert find_arrivals(Path("/nonexistent"), "<m@x>", "lab.test") == []


# ---------------------------------------------------------------- a real external sender


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class TinyRelay:
    """An SMTP relay on 127.0.0.1: says 250 at once, then delivers, bounces or drops later."""

    def __init__(self, lab: RunningLab, mode: str, delay: float = 0.3) -> None:
        """Relay into `lab`: mode `require-tls`, `tls13-then-plaintext`, `blackhole`,
        `delayed-then-tls13`, `delayed-only`, `bounce-then-plaintext` or `malformed-bounce`."""
        self.lab, self.mode, self.delay = lab, mode, delay
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Queue the message and answer 250 before any delivery attempt."""
        if self.mode != "blackhole":
            job = (envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
            thread = threading.Thread(target=self._guarded, args=job, daemon=True)
            self.threads.append(thread)
            thread.start()
        return "250 2.0.0 queued by the tiny relay"

    def _guarded(self, mail_from: str, rcpts: list[str], data: bytes) -> None:
        """Deliver, keeping any error for the test to re-raise."""
        try:
            time.sleep(self.delay)  # after the submission call has returned
            self._deliver(mail_from, rcpts[0], data)
        except BaseException as error:
            self.errors.append(error)

    def _address(self, domain: str) -> tuple[str, int]:
        """Resolve a lab domain as DNS would: its MX, or the zone apex's MX (tls12)."""
        mx_host = self.lab.mx_for(domain) or self.lab.endpoint("tls12").mx_host
        return self.lab.address_of(mx_host)

    def _deliver(self, mail_from: str, rcpt: str, data: bytes) -> None:
        """Deliver per mode over real SMTP; a required-TLS failure sends a real bounce."""
        address = self._address(rcpt.rpartition("@")[2])
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        if self.mode == "malformed-bounce":
            with smtplib.SMTP(*self._address(mail_from.rpartition("@")[2])) as smtp:
                smtp.sendmail("", [mail_from], malformed_bounce(data))
            return
        if self.mode in ("delayed-then-tls13", "delayed-only", "bounce-then-plaintext"):
            self._notify_then_deliver(mail_from, rcpt, data, address, context)
            return
        if self.mode == "tls13-then-plaintext":
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            with contextlib.suppress(ssl.SSLError), smtplib.SMTP(*address) as smtp:
                smtp.starttls(context=context)  # fails against a TLS 1.2-only receiver
                smtp.sendmail(mail_from, [rcpt], data)
                return
            with smtplib.SMTP(*address) as smtp:
                smtp.sendmail(mail_from, [rcpt], data)
            return
        with smtplib.SMTP(*address) as smtp:
            smtp.ehlo()
            if smtp.has_extn("starttls"):
                smtp.starttls(context=context)
                smtp.sendmail(mail_from, [rcpt], data)
                return
        with smtplib.SMTP(*self._address(mail_from.rpartition("@")[2])) as smtp:
            smtp.sendmail("", [mail_from], dsn(data))

    def _notify_then_deliver(
        self, mail_from: str, rcpt: str, data: bytes, address: tuple[str, int], tls: ssl.SSLContext
    ) -> None:
        """Send a delay or failure DSN (stored once the lab says 250), then deliver after all."""
        action, status = (
            ("failed", "5.7.10") if self.mode.startswith("bounce") else ("delayed", "4.4.1")
        )
        with smtplib.SMTP(*self._address(mail_from.rpartition("@")[2])) as smtp:
            smtp.sendmail("", [mail_from], dsn(data, status, action, rcpt))
        if self.mode == "delayed-only":
            return
        time.sleep(1.0)  # the sender's retry comes a while after its notice
        with smtplib.SMTP(*address) as smtp:
            if self.mode == "delayed-then-tls13":
                tls.minimum_version = ssl.TLSVersion.TLSv1_3
                smtp.starttls(context=tls)
            smtp.sendmail(mail_from, [rcpt], data)


class RelaySender:
    """An external sender driver: submits to the tiny relay and cannot see what happens next."""

    def __init__(self, port: int) -> None:
        """Submit to the relay on 127.0.0.1:`port`; the runner watches as its profile says."""
        self.id, self.port = "relay", port

    def send(self, message: TestMessage) -> SendReport:
        """Hand the message to the relay and return as soon as it says 250."""
        with smtplib.SMTP("127.0.0.1", self.port) as smtp:
            smtp.sendmail(message.mail_from, [message.rcpt], message.data)
        return SendReport(SendAction.SUBMITTED, "the tiny relay accepted it")

    def close(self) -> None:
        """Nothing to release: every submission closes its connection."""


SUITE = """\
receivers: [tls12, tls13, no-starttls]
senders: [relay]
cells:
  tls12: {relay: {outcome: delivered, tls: TLSv1.2}}
  tls13: {relay: {outcome: delivered, tls: TLSv1.3}}
  no-starttls: {relay: {outcome: refused}}
"""


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory, lab_pki: Any) -> Iterator[LabRun]:
    """Start tls12, tls13 and no-starttls on loopback for a suite with one external sender."""
    base = tmp_path_factory.mktemp("external")
    root = base / "scenarios"
    shutil.copytree(DEFAULT_ROOT / "receivers", root / "receivers")
    (root / "senders").mkdir()
    # a relay profile (the registry: watched from outside), its driver the stand-in below
    stand_in = "driver: relay\nhost: 127.0.0.1\nsecurity: none\ndescription: stand-in profile\n"
    (root / "senders" / "relay.yaml").write_text(stand_in)
    (root / "suites").mkdir()
    (root / "suites" / "external.yaml").write_text(SUITE)
    loaded = load_suite(root / "suites" / "external.yaml")
    with open_run(loaded, LocalBackend(), lab_pki.root, base / "reports") as run:
        yield run


@contextlib.contextmanager
def relay_sender(run: LabRun, mode: str, observe_seconds: float) -> Iterator[TinyRelay]:
    """Run a tiny relay and make it the suite's `relay` column; re-raise its thread errors."""
    relay = TinyRelay(run.lab, mode)
    port = free_port()
    controller = Controller(relay, hostname="127.0.0.1", port=port)
    controller.start()
    profile = run.loaded.senders["relay"]
    run.loaded.senders["relay"] = profile.model_copy(
        update={"observe_timeout_seconds": observe_seconds}
    )  # how long the runner watches, as the profile's field says
    run.drivers["relay"] = RelaySender(port)
    try:
        yield relay
    finally:
        controller.stop()
        for thread in relay.threads:
            thread.join(10)
    if relay.errors:
        raise relay.errors[0]


@pytest.mark.integration
def test_the_runner_waits_for_a_late_delivery_and_classifies_it_delivered(
    lab_run: LabRun,
) -> None:
    with relay_sender(lab_run, "require-tls", observe_seconds=OBSERVE):
        result = lab_run.run_cell("tls12", "relay")
    assert result.outcome is Outcome.DELIVERED, result.detail
    assert result.verdict is Verdict.PASS
    assert result.tls is not None
    assert result.tls.version is TlsVersion.TLS12
    assert result.received is not None
    assert "mx.tls12.lab.test" in result.received
    assert 0.3 <= result.seconds < OBSERVE  # waited for the relay, not for the timeout
    assert result.sender_report == "submitted: the tiny relay accepted it"
    assert "TLSv1.2 with 1 message" in result.detail


@pytest.mark.integration
def test_a_bounce_at_the_bounce_mailbox_is_refused(lab_run: LabRun) -> None:
    with relay_sender(lab_run, "require-tls", observe_seconds=OBSERVE):
        result = lab_run.run_cell("no-starttls", "relay")
    assert result.outcome is Outcome.REFUSED, result.detail
    assert result.verdict is Verdict.PASS
    assert result.received is None
    assert "bounce+no-starttls-relay@lab.test" in result.detail
    assert "Status: 5.7.10" in result.detail
    assert FAILED_DSN_GRACE_SECONDS <= result.seconds < OBSERVE  # a copy could still have come


@pytest.mark.integration
def test_a_sender_that_never_delivers_is_not_observed_after_the_timeout(lab_run: LabRun) -> None:
    with relay_sender(lab_run, "blackhole", observe_seconds=1.5):
        result = lab_run.run_cell("tls12", "relay")
    assert result.outcome is Outcome.NOT_OBSERVED, result.detail
    assert result.verdict is Verdict.FAIL
    assert "within 1.5 s" in result.detail
    assert 1.5 <= result.seconds < 1.5 + SLACK  # stopped at the timeout, not long after


@pytest.mark.integration
def test_failed_handshakes_are_evidence_even_when_the_message_arrives(lab_run: LabRun) -> None:
    with relay_sender(lab_run, "tls13-then-plaintext", observe_seconds=10.0):
        result = lab_run.run_cell("tls12", "relay")
    assert result.outcome is Outcome.DELIVERED
    assert result.tls is None
    assert result.verdict is Verdict.FAIL
    failed = [s for s in result.sessions if s.handshake == "failed"]
    assert failed, result.sessions
    assert failed[0].alert, result.sessions
    assert "TLS handshake failed" in result.detail
    assert "then plaintext with 1 message" in result.detail


@pytest.mark.integration
def test_a_cell_lists_only_its_own_sessions_not_the_cells_before_it(lab_run: LabRun) -> None:
    # two earlier cells in the same row, one second apart at most: a failed handshake and a
    # plaintext delivery, then a TLS delivery; neither belongs to the cell that follows them
    with relay_sender(lab_run, "tls13-then-plaintext", observe_seconds=10.0):
        first = lab_run.run_cell("tls12", "relay")
    with relay_sender(lab_run, "require-tls", observe_seconds=10.0):
        second = lab_run.run_cell("tls12", "relay")
    with relay_sender(lab_run, "require-tls", observe_seconds=10.0):
        third = lab_run.run_cell("tls12", "relay")
    assert [len(r.sessions) for r in (first, second, third)] == [2, 1, 1], [
        r.detail for r in (first, second, third)
    ]
    assert third.sessions[0].message_ids == (third.message_id,)
    assert "the receiver saw 1 session while it watched: TLSv1.2 with 1 message" in third.detail
    assert second.sessions[0].message_ids == (second.message_id,)
    # negative control: the failed handshake that came with the first cell's message is listed
    assert [s.handshake for s in first.sessions] == ["failed", "none"]


@pytest.mark.integration
def test_a_delay_notice_then_a_tls13_delivery_is_delivered(lab_run: LabRun) -> None:
    with relay_sender(lab_run, "delayed-then-tls13", observe_seconds=10.0):
        result = lab_run.run_cell("tls13", "relay")
    assert result.outcome is Outcome.DELIVERED, result.detail
    assert result.verdict is Verdict.PASS
    assert result.tls is not None
    assert result.tls.version is TlsVersion.TLS13
    assert "DSN (delayed)" in result.detail
    assert "Status: 4.4.1" in result.detail
    assert result.seconds < 10.0


@pytest.mark.integration
def test_a_delay_notice_alone_is_not_a_refusal_and_does_not_end_the_watch(
    lab_run: LabRun,
) -> None:
    with relay_sender(lab_run, "delayed-only", observe_seconds=2.0):
        result = lab_run.run_cell("tls13", "relay")
    assert result.outcome is Outcome.NOT_OBSERVED, result.detail
    assert "DSN (delayed)" in result.detail
    assert 2.0 <= result.seconds < 6.0


@pytest.mark.integration
def test_a_bounce_then_a_plaintext_delivery_is_delivered_in_plaintext(lab_run: LabRun) -> None:
    with relay_sender(lab_run, "bounce-then-plaintext", observe_seconds=10.0):
        result = lab_run.run_cell("no-starttls", "relay")
    assert result.outcome is Outcome.DELIVERED, result.detail
    assert result.tls is None
    assert result.verdict is Verdict.FAIL  # expected refused: the bounce was not the last word
    assert result.received is not None
    assert "DSN (failed)" in result.detail
    assert result.seconds < 10.0


@pytest.mark.integration
def test_a_bounce_that_is_no_valid_dsn_is_not_a_refusal(lab_run: LabRun) -> None:
    with relay_sender(lab_run, "malformed-bounce", observe_seconds=2.0):
        result = lab_run.run_cell("no-starttls", "relay")
    assert result.outcome is Outcome.NOT_OBSERVED, result.detail
    assert result.verdict is Verdict.FAIL  # expected refused: nothing proves it
    assert "message that is no valid DSN" in result.detail
    assert "Subject: Undelivered Mail Returned to Sender" in result.detail


@pytest.mark.integration
def test_an_interrupted_run_ends_a_watch_at_once_not_at_its_window(lab_run: LabRun) -> None:
    stop = WakingEvent()
    ended: list[BaseException | Observation] = []

    def watch_nothing(stop: WakingEvent, seconds: float) -> None:
        try:
            ended.append(
                watch(lab_run.lab, "tls12", "<never@lab.test>", seconds, time.time(), stop)
            )
        except BaseException as error:
            ended.append(error)

    watcher = threading.Thread(target=watch_nothing, args=(stop, OBSERVE))
    began = time.monotonic()
    watcher.start()
    threading.Timer(0.3, stop.set).start()
    watcher.join(SLACK)
    assert isinstance(ended[0], Stopped), ended
    assert time.monotonic() - began < SLACK
    # control: an unset stop lets the same watch run to its window
    watch_nothing(WakingEvent(), 1.0)
    assert isinstance(ended[1], Observation), ended
    assert ended[1].watched.waited >= 1.0
