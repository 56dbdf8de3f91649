"""A run as SMTP TLS Reporting (RFC 8460) reports: one report per sender, one policy per receiver.

Counting follows the RFC: a session is successful when the sender established TLS and failed
when TLS negotiation failed or was not possible. A delivery the lab judges unsafe (TLS 1.0, a
self-signed certificate the sender did not check) is a successful session here; its risk is in
the lab's own report. The result type of a failure comes from the receiver's facts.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from harness.cell_index import cells_of
from harness.model import CellResult, Outcome, ReceiverInfo, RunReport, SessionSummary
from lab.spec import LAB_ZONE, CertState, TlsVersion

MEDIA_TYPE = "application/tlsrpt+json"
DEFAULT_CONTACT = "mailto:tlsrpt@lab.test"
FOLDER = "tlsrpt"
STARTTLS_NOT_SUPPORTED = "starttls-not-supported"
VALIDATION_FAILURE = "validation-failure"
CERTIFICATE_RESULT_TYPES = {  # RFC 8460 section 4.3.1 negotiation failures
    CertState.SELF_SIGNED: "certificate-not-trusted",
    CertState.UNTRUSTED_CA: "certificate-not-trusted",
    CertState.EXPIRED: "certificate-expired",
    CertState.MISMATCHED: "certificate-host-mismatch",
}
RESULT_TYPES = frozenset(
    {
        STARTTLS_NOT_SUPPORTED, "certificate-host-mismatch", "certificate-expired",
        "certificate-not-trusted", VALIDATION_FAILURE, "tlsa-invalid", "dnssec-invalid",
        "dane-required", "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
    }
)  # fmt: skip
_IP_IN_TEXT = re.compile(r"[0-9a-fA-F:.]*[0-9a-fA-F][0-9a-fA-F:.]*")
_ALERT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# OpenSSL reasons a receiver logs when it, not the peer, ends the handshake -> the alert it sends
ALERT_FOR_REASON = {
    "unsupported_protocol": "protocol_version",
    "wrong_version_number": "protocol_version",
    "no_shared_cipher": "handshake_failure",
}


def handshake_failure_type(info: ReceiverInfo | None) -> str:
    """Return the result-type of a failed TLS handshake, from the receiver's TLS range and cert."""
    if info is None or info.tls_max.rank < TlsVersion.TLS12.rank:
        return VALIDATION_FAILURE
    return CERTIFICATE_RESULT_TYPES.get(info.certificate, VALIDATION_FAILURE)


def session_result(session: SessionSummary, info: ReceiverInfo | None) -> str | None:
    """Return None for a successful session, else its RFC 8460 result-type."""
    if session.handshake == "ok":
        return None
    if session.handshake == "failed":
        return handshake_failure_type(info)
    return STARTTLS_NOT_SUPPORTED  # no TLS was negotiated: not offered, refused or stripped


def _cell_result(cell: CellResult, info: ReceiverInfo | None) -> str | None:
    """Return the result of a cell without session records, counted as one session."""
    if cell.outcome is Outcome.DELIVERED and cell.tls is not None:
        return None
    if cell.outcome is Outcome.DELIVERED or (info is not None and not info.starttls):
        return STARTTLS_NOT_SUPPORTED
    return handshake_failure_type(info)


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


def alert_name(session: SessionSummary | None) -> str | None:
    """Return the TLS alert name of a session (`unknown_ca`, `protocol_version`), or None."""
    alert = session.alert if session else None
    if not alert or not _ALERT_NAME.match(alert):
        return None
    return ALERT_FOR_REASON.get(alert, alert)


def policy_domain(receiver: str, info: ReceiverInfo | None) -> str:
    """Return the receiving domain of a receiver row."""
    return info.domain if info is not None and info.domain else f"{receiver}.{LAB_ZONE}"


def cell_policy(cell: CellResult, info: ReceiverInfo | None) -> dict[str, Any]:
    """Return the `policies[]` item for one cell: the receiver's domain, summary and failures."""
    domain = policy_domain(cell.receiver, info)
    mx_host = f"mx.{domain}"
    # a lab error, or an outside sender nothing was seen of, says nothing about any session
    silent = cell.outcome is Outcome.ERROR or (
        cell.outcome is Outcome.NOT_OBSERVED and not cell.sessions
    )
    results: list[tuple[str | None, SessionSummary | None]] = []
    if not silent:
        if cell.sessions:
            results = [(session_result(s, info), s) for s in cell.sessions]
        else:
            results = [(_cell_result(cell, info), None)]
    failed = Counter(
        (kind, peer_ip(s.peer) if s else None, alert_name(s)) for kind, s in results if kind
    )
    failures = []
    for (kind, ip, alert), count in failed.items():
        detail: dict[str, Any] = {"result-type": kind}
        if ip is not None:
            detail["sending-mta-ip"] = ip
        detail["receiving-mx-hostname"] = mx_host
        detail["failed-session-count"] = count
        if alert is not None:
            detail["failure-reason-code"] = alert
        failures.append(detail)
    kind = info.policy if info is not None else "no-policy-found"
    policy: dict[str, Any] = {"policy-type": kind}
    if kind == "tlsa" and cell.dane is not None and cell.dane.tlsa:
        policy["policy-string"] = list(cell.dane.tlsa)  # RFC 8460 section 4.3: the TLSA records
    policy.update({"policy-domain": domain, "mx-host": [mx_host]})
    if kind == "sts" and info is not None and info.policy_strings:
        policy["policy-string"] = list(info.policy_strings)  # RFC 8460 4.3: the policy's lines
        policy["mx-host"] = [
            line.partition(":")[2].strip() for line in info.policy_strings if line.startswith("mx:")
        ]
    return {
        "policy": policy,
        "summary": {
            "total-successful-session-count": sum(kind is None for kind, _ in results),
            "total-failure-session-count": sum(failed.values()),
        },
        "failure-details": failures,
    }


def report_senders(report: RunReport) -> list[str]:
    """Return the senders that have at least one cell in the run, columns first."""
    ran = {r.sender for r in report.results}
    ids = [s.id for s in report.senders if s.id in ran]
    return ids + sorted(ran - set(ids))


def sender_report(
    report: RunReport,
    sender: str,
    *,
    organization: str = "Sender TLS Lab",
    contact: str = DEFAULT_CONTACT,
) -> dict[str, Any]:
    """Return the RFC 8460 report of one sender: one policy per receiver it sent to."""
    rows = {receiver: index for index, receiver in enumerate(report.receivers)}
    cells = sorted(
        cells_of(report.results, "sender", sender),
        key=lambda cell: rows.get(cell.receiver, len(rows)),
    )
    return {
        "organization-name": organization,
        "date-range": {
            "start-datetime": rfc3339(report.started),
            "end-datetime": rfc3339(report.finished),
        },
        "contact-info": contact,
        "report-id": f"{report.run_id}.{sender}",
        "policies": [cell_policy(cell, report.receiver(cell.receiver)) for cell in cells],
    }


def build_tlsrpt(report: RunReport, **options: str) -> dict[str, dict[str, Any]]:
    """Return {sender: its RFC 8460 report} for every sender with a cell in the run."""
    return {s: sender_report(report, s, **options) for s in report_senders(report)}


def tlsrpt_index(reports: dict[str, dict[str, Any]], complete: bool = True) -> dict[str, Any]:
    """Return tlsrpt.json: media type, whether the run was complete, and each sender's file."""
    entries = []
    for sender, document in reports.items():
        summaries = [p["summary"] for p in document["policies"]]
        entries.append(
            {
                "sender": sender,
                "file": f"{FOLDER}/{sender}.json",
                "report-id": document["report-id"],
                "total-successful-session-count": sum(
                    s["total-successful-session-count"] for s in summaries
                ),
                "total-failure-session-count": sum(
                    s["total-failure-session-count"] for s in summaries
                ),
            }
        )
    return {"media-type": MEDIA_TYPE, "complete": complete, "reports": entries}


__all__ = ["build_tlsrpt", "cell_policy", "report_senders", "sender_report", "tlsrpt_index"]
