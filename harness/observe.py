"""Watch for a message handed to a sender we cannot look inside: its copy, a bounce, or neither."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import time
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from pathlib import Path

from harness.arrivals import find_arrivals, is_bounce_mailbox
from harness.cell_pool import Stopped
from harness.classify import Arrival, Bounce, Watched
from harness.dsn import DeliveryStatus, parse_dsn
from harness.printable import printable
from lab.backends.base import RunningLab
from lab.endpoints import ReceiverEndpoint
from lab.evidence_watch import Changes, WakingEvent
from lab.message_record import MessageRecord, message_keys, message_records_where
from lab.session_facts import Handshake, SessionFacts, session_facts_where
from lab.spec import BOUNCE_LOCAL_PART

SESSION_RECORD_WAIT = 5.0  # seconds a delivering session's record may take to be written
# after a failed DSN, keep watching this long (within the window) for a copy that still arrives
FAILED_DSN_GRACE_SECONDS = 5.0
RECIPIENT_LOCAL_PART = "inbox"  # the test message's recipient (harness.runner.build_message)
SUMMARY_LIMIT = 300


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the lab saw while watching: copies at the receiver, bounces, the receiver's sessions."""

    arrivals: list[Arrival]
    watched: Watched
    sessions: list[SessionFacts]


def zone_of(endpoint: ReceiverEndpoint) -> str:
    """Return the lab zone a receiver belongs to (its domain without the receiver id)."""
    return endpoint.domain.removeprefix(f"{endpoint.receiver}.")


def bounce_address(cell: str, zone: str) -> str:
    """Return the bounce mailbox of one cell: `bounce+<cell>@<zone>`, which every receiver takes."""
    return f"{BOUNCE_LOCAL_PART}+{cell}@{zone}"


def _stored(directory: Path, zone: str) -> Iterable[tuple[MessageRecord, bytes]]:
    """Yield (the lab's record of a stored message, its raw .eml bytes) for every bounce.

    Reads the per-message records made durable before 250, so a message counts while its
    session is still open; only those with a recipient at the zone's bounce mailbox.
    """
    bounces = message_records_where(
        directory, lambda key: any(is_bounce_mailbox(r, zone) for r in key.rcpt_tos)
    )
    for stored in bounces:
        try:
            data = (directory / stored.eml).read_bytes()
        except OSError:
            continue
        yield stored, data


def find_bounces(
    endpoints: Mapping[str, ReceiverEndpoint], message_id: str, rcpt: str = ""
) -> list[Bounce]:
    """Return messages at the lab's bounce mailbox (any receiver) naming the message, parsed.

    Each carries what its DSN says happened to `rcpt` (None when it is no well-formed DSN).
    """
    bounces = []
    for endpoint in endpoints.values():
        zone = zone_of(endpoint)
        for stored, data in _stored(endpoint.evidence_dir, zone):
            rcpts = [r for r in stored.rcpt_tos if is_bounce_mailbox(r, zone)]
            if rcpts and message_id.encode() in data:
                received = stored.received
                report = parse_dsn(data)
                action = report.action_for(rcpt) if report else None
                summary = _summary(data, report, rcpt)
                bounces.append(Bounce(endpoint.receiver, rcpts[0], received, summary, action))
    return bounces


def dsn_summary(data: bytes, rcpt: str = "") -> str:
    """Return a bounce's gist: its DSN fields (RFC 3464) when well-formed, else its Subject."""
    return _summary(data, parse_dsn(data), rcpt)


def _summary(data: bytes, report: DeliveryStatus | None, rcpt: str) -> str:
    """Return the DSN fields about `rcpt`, or the Subject of a message that is no valid DSN."""
    if report is not None:
        return printable(report.describe(rcpt))[:SUMMARY_LIMIT]
    message = email.message_from_bytes(data, policy=email.policy.default)
    subject = message.get("Subject", "(none)") if isinstance(message, EmailMessage) else "(none)"
    return printable(" ".join(f"Subject: {subject}".split()))[:SUMMARY_LIMIT]


def cell_sessions(directory: Path, since: float, arrivals: list[Arrival]) -> list[SessionFacts]:
    """Return the receiver's sessions that belong to one watched cell, in stored order.

    A session that carried a copy of the cell's message is the cell's. A session that carried
    only other messages is another cell's, whenever it started. A session that carried no
    message (a failed handshake, a client that gave up) is the cell's when it started at or
    after `since`, the moment the message was handed to the sender: nothing can tie it closer.
    """
    ours = {copy.session_id for copy in arrivals}
    others = {key.session_id for key in message_keys(directory)} - ours
    return session_facts_where(
        directory,
        lambda key: (
            key.session_id in ours or (key.session_id not in others and key.started >= since)
        ),
    )


def watch(
    lab: RunningLab,
    receiver: str,
    message_id: str,
    seconds: float,
    since: float,
    stop: WakingEvent | None = None,
    grace: float = FAILED_DSN_GRACE_SECONDS,
) -> Observation:
    """Watch (bounded by `seconds`) until the message arrives, or a failed DSN ends the watch.

    A failed DSN ends it only `grace` seconds later without a copy (a copy still wins); a delay
    or success DSN ends nothing. The evidence is read again only when an evidence folder changes
    (lab.evidence_watch); a set `stop` ends the watch at once with cell_pool.Stopped.
    """
    endpoint = lab.endpoint(receiver)
    zone = zone_of(endpoint)
    rcpt = f"{RECIPIENT_LOCAL_PART}@{endpoint.domain}"
    folders = {e.evidence_dir for e in lab.endpoints.values()}  # bounces may come to any of them
    start = time.monotonic()
    deadline = start + seconds
    with Changes(folders, stop) as changes:
        while True:
            _stop_if_set(stop)
            arrivals = find_arrivals(endpoint.evidence_dir, message_id, zone)
            bounces = find_bounces(lab.endpoints, message_id, rcpt)
            now = time.monotonic()
            if any(b.refuses for b in bounces) and deadline > now + grace:
                deadline = now + grace  # an arrival after a bounce still wins
            elapsed = now - start
            if arrivals or now >= deadline:
                break
            changes.wait(deadline - now)
    watched = Watched(tuple(bounces), seconds, round(elapsed, 3))
    sessions = _sessions_once_written(endpoint.evidence_dir, since, arrivals, stop)
    return Observation(arrivals, watched, sessions)


def _stop_if_set(stop: WakingEvent | None) -> None:
    """Raise cell_pool.Stopped once the run was interrupted."""
    if stop is not None and stop.is_set():
        raise Stopped


def _sessions_once_written(
    directory: Path, since: float, arrivals: list[Arrival], stop: WakingEvent | None
) -> list[SessionFacts]:
    """Return the cell's sessions, waiting (bounded) for the records of sessions that delivered.

    A session's record is written when it ends, which may be just after its message was stored.
    """
    wanted = {copy.session_id for copy in arrivals if copy.session_id}
    deadline = time.monotonic() + SESSION_RECORD_WAIT
    with Changes([directory], stop) as changes:
        while True:
            _stop_if_set(stop)
            sessions = cell_sessions(directory, since, arrivals)
            written = {record.session_id for record in sessions}
            remaining = deadline - time.monotonic()
            if wanted <= written or remaining <= 0:
                return sessions
            changes.wait(remaining)


def describe_attempts(sessions: list[SessionFacts]) -> str:
    """Return the receiver's sessions during a watch, in order: TLS, plaintext, failed handshake."""
    if not sessions:
        return "; the receiver saw no session while it watched"
    parts = []
    for record in sorted(sessions, key=lambda r: r.started):
        if record.handshake is Handshake.FAILED:
            parts.append(f"TLS handshake failed ({record.tls_failure})")
        elif record.version:
            parts.append(f"{record.version.value}")
        else:
            parts.append("plaintext")
        count = len(record.messages)
        if count:
            parts[-1] += f" with {count} message{'s' if count > 1 else ''}"
    many = "s" if len(sessions) > 1 else ""
    return f"; the receiver saw {len(sessions)} session{many} while it watched: " + ", then ".join(
        parts
    )
