"""Watch for a message handed to a sender we cannot look inside: its copy, a bounce, or neither."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import time
from collections.abc import Callable, Iterable, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from harness.arrivals import find_arrivals, is_bounce_mailbox
from harness.classify import Arrival, Bounce, Watched
from lab.backends.base import RunningLab
from lab.message_record import read_message_records
from lab.serve import ReceiverEndpoint
from lab.session_facts import Handshake, SessionFacts, StoredMessage, read_session_facts
from lab.spec import BOUNCE_LOCAL_PART

POLL_SECONDS = 0.05
SLOW_POLL_SECONDS = 0.5  # after the first seconds: a real service takes its time
FAST_POLL_FOR = 2.0
DSN_FIELDS = ("Action", "Status", "Diagnostic-Code", "Remote-MTA")
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


def _stored(directory: Path) -> Iterable[tuple[SessionFacts, StoredMessage, bytes]]:
    """Yield (session record, stored message entry, raw .eml bytes) for every stored message."""
    for record in read_session_facts(directory):
        for stored in record.messages:
            try:
                data = (directory / stored.eml).read_bytes()
            except OSError:
                continue
            yield record, stored, data


def find_bounces(endpoints: Mapping[str, ReceiverEndpoint], message_id: str) -> list[Bounce]:
    """Return bounces (DSNs) at the lab's bounce mailbox, on any receiver, naming the message."""
    bounces = []
    for endpoint in endpoints.values():
        zone = zone_of(endpoint)
        for _record, stored, data in _stored(endpoint.evidence_dir):
            rcpts = [r for r in stored.rcpt_tos if is_bounce_mailbox(r, zone)]
            if rcpts and message_id.encode() in data:
                received = stored.received
                bounces.append(Bounce(endpoint.receiver, rcpts[0], received, dsn_summary(data)))
    return bounces


def dsn_summary(data: bytes) -> str:
    """Return a bounce's gist: its DSN fields (RFC 3464) when present, else its Subject."""
    message = email.message_from_bytes(data, policy=email.policy.default)
    fields: list[str] = []
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _status_blocks(part):
            fields += [f"{name}: {block[name]}" for name in DSN_FIELDS if block.get(name)]
    if not fields and isinstance(message, EmailMessage):
        fields.append(f"Subject: {message.get('Subject', '(none)')}")
    return " ".join("; ".join(fields).split())[:SUMMARY_LIMIT]


def _status_blocks(part: Any) -> list[Any]:
    """Return the header blocks of a message/delivery-status part (parsed or raw)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload
    text = payload if isinstance(payload, str) else ""
    return [email.message_from_string(block + "\n") for block in text.split("\n\n") if block]


def cell_sessions(directory: Path, since: float, arrivals: list[Arrival]) -> list[SessionFacts]:
    """Return the receiver's sessions that belong to one watched cell, in stored order.

    A session that carried a copy of the cell's message is the cell's. A session that carried
    only other messages is another cell's, whenever it started. A session that carried no
    message (a failed handshake, a client that gave up) is the cell's when it started at or
    after `since`, the moment the message was handed to the sender: nothing can tie it closer.
    """
    ours = {copy.session_id for copy in arrivals}
    others = {record.session_id for record in read_message_records(directory)} - ours
    return [
        record
        for record in read_session_facts(directory)
        if record.session_id in ours
        or (record.session_id not in others and record.started >= since)
    ]


def watch(
    lab: RunningLab,
    receiver: str,
    message_id: str,
    seconds: float,
    since: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Observation:
    """Poll (bounded by `seconds`) until the message arrives at `receiver` or a bounce names it."""
    endpoint = lab.endpoint(receiver)
    zone = zone_of(endpoint)
    start = clock()
    while True:
        arrivals = find_arrivals(endpoint.evidence_dir, message_id, zone)
        bounces = [] if arrivals else find_bounces(lab.endpoints, message_id)
        elapsed = clock() - start
        if arrivals or bounces or elapsed >= seconds:
            break
        interval = POLL_SECONDS if elapsed < FAST_POLL_FOR else SLOW_POLL_SECONDS
        sleep(min(interval, seconds - elapsed))
    watched = Watched(tuple(bounces), seconds, round(elapsed, 3))
    return Observation(arrivals, watched, cell_sessions(endpoint.evidence_dir, since, arrivals))


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
