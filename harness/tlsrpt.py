"""A run as SMTP TLS Reporting data (RFC 8460, `application/tlsrpt+json`): one report per sender."""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Any

from harness.model import CellResult, Outcome, RunReport, SessionSummary
from lab.spec import LAB_ZONE, TlsVersion

MEDIA_TYPE = "application/tlsrpt+json"
DEFAULT_CONTACT = "tlsrpt@lab.test"
UNKNOWN_RESULT_TYPE = "validation-failure"

# Receiver state -> RFC 8460 result-type; None marks a sound state (TLS >= 1.2, valid certificate)
# where a delivery over TLS >= 1.2 is a successful session. Add new receiver states here.
RESULT_TYPES: dict[str, str | None] = {
    "tls12": None,
    "tls13": None,
    "no-starttls": "starttls-not-supported",
    "self-signed": "certificate-not-trusted",
    "untrusted-ca": "certificate-not-trusted",
    "expired": "certificate-expired",
    "mismatched": "certificate-host-mismatch",
    "tls10": "validation-failure",
    "tls11": "validation-failure",
}

_IP_IN_TEXT = re.compile(r"[0-9a-fA-F:.]*[0-9a-fA-F][0-9a-fA-F:.]*")


def result_type(receiver: str) -> str:
    """Return the RFC 8460 result-type a failed session with this receiver state is reported as."""
    return RESULT_TYPES.get(receiver) or UNKNOWN_RESULT_TYPE


def is_weak(receiver: str) -> bool:
    """Return True when every session with this receiver state is a failure, delivered or not."""
    return receiver in RESULT_TYPES and RESULT_TYPES[receiver] is not None


def session_count(cell: CellResult) -> int:
    """Return the number of sessions a cell stands for: its recorded sessions, at least one."""
    return len(cell.sessions) or 1


def cell_succeeded(cell: CellResult) -> bool:
    """Return True when the cell delivered over TLS >= 1.2 to a receiver with a sound state."""
    if is_weak(cell.receiver) or cell.outcome is not Outcome.DELIVERED or cell.tls is None:
        return False
    return cell.tls.version.rank >= TlsVersion.TLS12.rank


def peer_ip(peer: str) -> str | None:
    """Return the IP address in a session's peer (`ip`, `ip:port`, `[v6]:port`, tuple text)."""
    candidates = [peer.strip(), peer.strip().rpartition(":")[0].strip("[]")]
    candidates += _IP_IN_TEXT.findall(peer)
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate.strip("[]")))
        except ValueError:
            continue
    return None


def rfc3339(stamp: str) -> str:
    """Return an ISO 8601 time as an RFC 3339 UTC date-time (`...Z`); pass junk through as is."""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reason(cell: CellResult) -> str:
    """Return a failure-reason-code: the receiver's TLS alert, else the state and what happened."""
    alerts = [s.alert for s in cell.sessions if s.alert]
    if alerts:
        return alerts[0]
    if cell.outcome is Outcome.DELIVERED:
        how = cell.tls.version.value if cell.tls is not None else "plaintext"
        return f"{cell.receiver}: delivered {how}"
    return f"{cell.receiver}: {cell.outcome.value}"


def _first_peer_ip(sessions: tuple[SessionSummary, ...]) -> str | None:
    """Return the sending MTA's IP from the first session that names one."""
    for session in sessions:
        ip = peer_ip(session.peer)
        if ip is not None:
            return ip
    return None


def _policy(cell: CellResult) -> dict[str, Any]:
    """Return the `policies[]` item for one cell: its receiver domain, summary and failures."""
    domain = f"{cell.receiver}.{LAB_ZONE}"
    mx_host = f"mx.{domain}"
    unseen = cell.outcome is Outcome.NOT_OBSERVED and not cell.sessions  # says nothing either
    count = 0 if cell.outcome is Outcome.ERROR or unseen else session_count(cell)
    succeeded = cell_succeeded(cell)
    failures: list[dict[str, Any]] = []
    if count and not succeeded:
        detail: dict[str, Any] = {"result-type": result_type(cell.receiver)}
        ip = _first_peer_ip(cell.sessions)
        if ip is not None:
            detail["sending-mta-ip"] = ip
        detail["receiving-mx-hostname"] = mx_host
        detail["failed-session-count"] = count
        detail["failure-reason-code"] = _reason(cell)
        failures.append(detail)
    return {
        "policy": {"policy-type": "no-policy-found", "policy-domain": domain, "mx-host": [mx_host]},
        "summary": {
            "total-successful-session-count": count if succeeded else 0,
            "total-failure-session-count": 0 if succeeded else count,
        },
        "failure-details": failures,
    }


def build_tlsrpt(
    report: RunReport, *, organization: str = "Sender TLS Lab", contact: str = DEFAULT_CONTACT
) -> dict[str, Any]:
    """Return `{"reports": [...]}`: one RFC 8460 report per sender, one policy per receiver."""
    # A cell whose outcome is `error` (the lab broke) counts as zero sessions: it says nothing
    # about the sender, so it is neither a success nor a failure.
    rows = {receiver: index for index, receiver in enumerate(report.receivers)}
    sender_ids = [s.id for s in report.senders]
    sender_ids += sorted({r.sender for r in report.results} - set(sender_ids))
    reports = []
    for sender in sender_ids:
        cells = [r for r in report.results if r.sender == sender]
        cells.sort(key=lambda cell: rows.get(cell.receiver, len(rows)))
        reports.append(
            {
                "organization-name": organization,
                "date-range": {
                    "start-datetime": rfc3339(report.started),
                    "end-datetime": rfc3339(report.finished),
                },
                "contact-info": contact,
                "report-id": f"{report.run_id}.{sender}",
                "policies": [_policy(cell) for cell in cells],
            }
        )
    return {"reports": reports}
