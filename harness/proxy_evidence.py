"""Evidence of a man in the middle: its records per sender connection, and what they show."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lab.evidence_watch import wait_until
from lab.proxy_record import ProxyRecord, read_proxy_records
from lab.session_facts import read_session_facts

PROXY_WAIT = 5.0
Peer = tuple[str, int]


def wait_for_proxy_records(directory: Path, peers: Iterable[Peer]) -> list[ProxyRecord]:
    """Return the proxy's records of the given sender connections, waiting (bounded) for all."""
    wanted = set(peers)

    def found() -> list[ProxyRecord]:
        return [r for r in read_proxy_records(directory) if r.peer in wanted]

    def complete(records: list[ProxyRecord]) -> bool:
        return len({r.peer for r in records}) >= len(wanted)

    return wait_until([directory], found, complete, PROXY_WAIT)


def receiver_peers(records: Iterable[ProxyRecord]) -> set[Peer]:
    """Return the peers the receiver recorded for these proxied connections (the proxy's end)."""
    return {r.upstream for r in records if r.upstream_port}


def front_connections(directory: Path, client_ip: str) -> list[tuple[Peer, set[str]]]:
    """Return each connection `client_ip` opened to the MX and the message ids stored through it.

    With a proxy in front, these are the proxy's records (the receiver sees only the proxy);
    otherwise the receiver's own session records.
    """
    stored = {
        (r.peer_ip, r.peer_port): {str(m.message_id) for m in r.messages}
        for r in read_session_facts(directory)
    }
    proxied = list(read_proxy_records(directory))
    if proxied:
        return [(r.peer, stored.get(r.upstream, set())) for r in proxied if r.peer_ip == client_ip]
    return [(peer, ids) for peer, ids in stored.items() if peer[0] == client_ip]


def describe_proxy(records: list[ProxyRecord]) -> str:
    """Return what the proxy did and saw on each connection, as a note for the cell detail."""
    if not records:
        return ""
    parts = [_describe_one(n, r) for n, r in enumerate(sorted(records, key=lambda r: r.started))]
    return f"; proxy ({records[0].vector.value}): " + "; ".join(parts)


def _describe_one(number: int, record: ProxyRecord) -> str:
    """Return one connection's proxy record on one line."""
    what = record.manipulation if record.manipulated else "nothing manipulated"
    text = f"connection {number + 1}: {what}"
    text += f"; sender sent before: {_verbs(record.sent_before)}"
    if record.manipulated:
        unseen = " (then TLS the proxy cannot read)" if record.passthrough_tls else ""
        text += f"; after: {_verbs(record.sent_after)}{unseen}"
    if record.injected_sent:
        text += f"; injected {record.injected!r} was sent"
    if record.sender_tls:
        text += f"; sender's leg {record.sender_tls} with the proxy's certificate"
    if record.passthrough_tls:
        text += "; TLS end to end through the proxy"
    if record.data_in_plaintext:
        text += f"; message data crossed in plaintext ({record.data_bytes} bytes)"
    elif record.data_decrypted:
        text += f"; message data read decrypted by the proxy ({record.data_bytes} bytes)"
    if record.tls_error:
        text += f"; proxy's handshake failed: {record.tls_error}"
    return text + f"; ended by {record.ended_by}"


def _verbs(lines: tuple[str, ...]) -> str:
    """Return the SMTP verbs of command lines, e.g. 'EHLO, STARTTLS' ('nothing' for none)."""
    verbs = [line.split(" ", 1)[0].upper()[:12] for line in lines if line.strip()]
    return ", ".join(verbs) or "nothing"
