"""The MX and retry states on real sockets: MX fallback in preference order, and greylisting.

One local lab runs the shipped `mx-fallback` and `greylist` receivers plus a greylist that
defers nothing (the negative control). The reference sender delivers; each check reads the
receiver's own evidence: session records (which MX host, TLS, replies) and the stored .eml.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.attempts import session_trail
from harness.model import PolicyAction, ReferenceSenderProfile, TlsMode
from harness.senders.base import SendAction, SendReport, TestMessage
from harness.senders.reference import RETRY_DELAY, ReferenceSender
from lab.backends.base import RunningLab
from lab.backends.local import LocalBackend
from lab.evidence_store import read_sessions
from lab.pki import ensure_certs
from lab.session_facts import SessionFacts
from lab.spec import Greylist, ReceiverSpec, TlsVersion

pytestmark = pytest.mark.integration

RECORD_TIMEOUT = 5.0
CLIENT = "client.lab.test"
PLAIN_MX = "mx-plain.mx-fallback.lab.test"
TLS_MX = "mx.mx-fallback.lab.test"

OPPORTUNISTIC = ReferenceSenderProfile(id="opportunistic")
REQUIRE_TLS = ReferenceSenderProfile(
    id="require-tls", tls=TlsMode.REQUIRED, on_policy_unmet=PolicyAction.REFUSE
)
VERIFY = ReferenceSenderProfile(
    id="verify",
    tls=TlsMode.REQUIRED,
    min_version=TlsVersion.TLS12,
    verify=True,
    on_policy_unmet=PolicyAction.REFUSE,
)


@pytest.fixture(scope="module")
def lab(
    receiver_specs: dict[str, ReceiverSpec], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningLab]:
    """Run mx-fallback, greylist, a greylist of 0 and one of 2 first attempts on loopback."""
    greylist = receiver_specs["greylist"]
    specs = [
        receiver_specs["mx-fallback"],
        greylist,
        greylist.model_copy(update={"id": "greylist-zero", "greylist": Greylist(first_attempts=0)}),
        greylist.model_copy(update={"id": "greylist-two", "greylist": Greylist(first_attempts=2)}),
    ]
    pki = ensure_certs(specs, tmp_path_factory.mktemp("certs"))
    with LocalBackend().start(specs, pki, tmp_path_factory.mktemp("evidence")) as running:
        yield running


@dataclasses.dataclass(frozen=True)
class OnlyFirstMx:
    """A router that knows only the most preferred MX host (a sender without MX fallback)."""

    lab: RunningLab

    def mx_hosts(self, domain: str) -> list[str]:
        """Return the first MX host only."""
        return self.lab.mx_hosts(domain)[:1]

    def address_of(self, mx_host: str) -> tuple[str, int]:
        """Return where the host listens."""
        return self.lab.address_of(mx_host)


def send(
    lab: RunningLab, receiver: str, profile: ReferenceSenderProfile, tmp: Path, router: Any = None
) -> tuple[SendReport, TestMessage]:
    """Deliver one fresh message to `receiver` with the reference sender."""
    message_id = f"<{secrets.token_hex(8)}@{CLIENT}>"
    mail_from = f"probe-{secrets.token_hex(4)}@{CLIENT}"
    rcpt = f"inbox@{lab.endpoint(receiver).domain}"
    data = f"From: <{mail_from}>\r\nMessage-ID: {message_id}\r\n\r\nhi\r\n".encode()
    message = TestMessage(message_id, mail_from, rcpt, data)
    report = ReferenceSender(profile).deliver(message, router or lab, lab.pki.ca_cert_path, tmp)
    return report, message


def sessions_of(lab: RunningLab, receiver: str, report: SendReport) -> list[dict[str, Any]]:
    """Return the receiver's records of the report's connections, oldest first (bounded wait)."""
    peers = set(report.attempts)
    deadline = time.monotonic() + RECORD_TIMEOUT
    while True:
        found = [
            r
            for r in read_sessions(lab.endpoint(receiver).evidence_dir)
            if (r["peer_ip"], r["peer_port"]) in peers
        ]
        if len(found) >= len(peers) or time.monotonic() > deadline:
            return sorted(found, key=lambda r: float(r["started"]))
        time.sleep(0.01)


def stored_ids(record: dict[str, Any]) -> list[str]:
    """Return the Message-IDs a session stored."""
    return [m["message_id"] for m in record["messages"]]


# ---------------------------------------------------------------- mx-fallback


def test_the_lab_publishes_both_mx_hosts_in_preference_order(lab: RunningLab) -> None:
    endpoint = lab.endpoint("mx-fallback")
    assert [(m.mx_host, m.preference) for m in endpoint.mx] == [(PLAIN_MX, 10), (TLS_MX, 20)]
    assert lab.mx_hosts("mx-fallback.lab.test") == [PLAIN_MX, TLS_MX]
    assert endpoint.mx_host == PLAIN_MX  # the single-MX view is the preferred host
    assert lab.address_of(PLAIN_MX) != lab.address_of(TLS_MX)


@pytest.mark.parametrize("profile", [REQUIRE_TLS, VERIFY], ids=lambda p: p.id)
def test_a_mandatory_tls_sender_delivers_through_the_second_mx(
    lab: RunningLab, tmp_path: Path, profile: ReferenceSenderProfile
) -> None:
    report, message = send(lab, "mx-fallback", profile, tmp_path)
    assert report.action is SendAction.DELIVERED, report
    assert report.tls_version == "TLSv1.3"
    first, second = sessions_of(lab, "mx-fallback", report)
    assert (first["mx_host"], first["starttls_offered"], stored_ids(first)) == (
        PLAIN_MX, False, []
    )  # fmt: skip
    assert (second["mx_host"], second["version"]) == (TLS_MX, "TLSv1.3")
    assert stored_ids(second) == [message.message_id]
    assert f"by {TLS_MX} " in second["messages"][0]["received"]  # the evidence names the MX


def test_negative_control_a_sender_that_sees_one_mx_meets_only_the_plaintext_host(
    lab: RunningLab, tmp_path: Path
) -> None:
    report, _message = send(lab, "mx-fallback", REQUIRE_TLS, tmp_path, OnlyFirstMx(lab))
    assert report.action is SendAction.REFUSED, report
    (only,) = sessions_of(lab, "mx-fallback", report)
    assert (only["mx_host"], only["starttls_asked"], stored_ids(only)) == (PLAIN_MX, False, [])


def test_an_opportunistic_sender_delivers_in_plaintext_to_the_preferred_mx(
    lab: RunningLab, tmp_path: Path
) -> None:
    report, message = send(lab, "mx-fallback", OPPORTUNISTIC, tmp_path)
    assert (report.action, report.tls_version) == (SendAction.DELIVERED, None), report
    (only,) = sessions_of(lab, "mx-fallback", report)
    assert (only["mx_host"], only["version"]) == (PLAIN_MX, None)
    assert stored_ids(only) == [message.message_id]
    received = only["messages"][0]["received"]
    assert f"by {PLAIN_MX} " in received
    assert " with ESMTP " in received
    eml = lab.endpoint("mx-fallback").evidence_dir / only["messages"][0]["eml"]
    assert f"by {PLAIN_MX} ".encode() in eml.read_bytes().split(b"\r\n\r\n", 1)[0]


# ---------------------------------------------------------------- greylist


@pytest.mark.parametrize("profile", [OPPORTUNISTIC, VERIFY], ids=lambda p: p.id)
def test_greylisting_defers_the_first_attempt_and_the_retry_keeps_tls(
    lab: RunningLab, tmp_path: Path, profile: ReferenceSenderProfile
) -> None:
    report, message = send(lab, "greylist", profile, tmp_path)
    assert (report.action, report.tls_version) == (SendAction.DELIVERED, "TLSv1.3"), report
    assert "attempt 1: deferred" in report.reason
    assert "attempt 2: delivered" in report.reason
    first, retry = sessions_of(lab, "greylist", report)
    assert first["version"] == retry["version"] == "TLSv1.3"
    assert stored_ids(first) == []
    assert stored_ids(retry) == [message.message_id]
    assert any(line.startswith("S: 451 4.7.1 ") for line in first["transcript"])
    assert not any(line.startswith("S: 451") for line in retry["transcript"])
    assert float(retry["started"]) - float(first["started"]) >= RETRY_DELAY * 0.9
    trail = session_trail([SessionFacts.model_validate(r) for r in (first, retry)], 1)
    assert "#1 " in trail
    assert "answered 451 4.7.1" in trail
    assert "#2 " in trail


def test_negative_control_greylist_of_zero_first_attempts_accepts_at_once(
    lab: RunningLab, tmp_path: Path
) -> None:
    report, message = send(lab, "greylist-zero", OPPORTUNISTIC, tmp_path)
    assert report.action is SendAction.DELIVERED, report
    (only,) = sessions_of(lab, "greylist-zero", report)
    assert stored_ids(only) == [message.message_id]
    assert not any(line.startswith("S: 4") for line in only["transcript"])
    assert session_trail([SessionFacts.model_validate(only)], 1) == ""


def test_a_retry_still_greylisted_stays_deferred_with_nothing_stored(
    lab: RunningLab, tmp_path: Path
) -> None:
    report, _message = send(lab, "greylist-two", OPPORTUNISTIC, tmp_path)
    assert report.action is SendAction.DEFERRED, report
    records = sessions_of(lab, "greylist-two", report)
    assert len(records) == 2
    assert all(stored_ids(r) == [] for r in records)


def test_greylisting_is_per_message_not_per_receiver(lab: RunningLab, tmp_path: Path) -> None:
    delivered, _ = send(lab, "greylist", OPPORTUNISTIC, tmp_path)
    again, _ = send(lab, "greylist", OPPORTUNISTIC, tmp_path)  # a new message: greylisted anew
    assert delivered.action is again.action is SendAction.DELIVERED
    assert len(sessions_of(lab, "greylist", again)) == 2
