"""The postfix driver: a real Postfix in a sender container; submit a message, then read its log.

Each profile gets one container (`lab/docker/postfix/run.sh` writes main.cf from the profile). A
cell submits the message with sendmail, finds its queue id by Message-ID in the Postfix log and
waits (bounded) for the delivery status. A deferred message is retried once by force, when
Postfix's own retry schedule says it is due, to show whether a later attempt falls back to
plaintext; then it is removed from the queue so cells stay independent.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.job_slots import modelled_wait
from harness.model import PostfixSenderProfile
from harness.senders.base import SendAction, SendReport, TestMessage
from harness.senders.mta import (
    CONTAINER_CA,
    MtaHost,
    MtaTrouble,
    ere,
)
from harness.senders.mta_sender import QueuedMtaSender
from lab.backends.base import BackendError, Mount, RunningLab, SenderContainer
from lab.endpoints import ReceiverEndpoint
from lab.spec import LAB_ZONE, TlsVersion

POSTFIX_DIR = "/opt/tlslab-postfix"
CTL = f"{POSTFIX_DIR}/ctl.sh"
# the least Postfix runs with as root (measured): CHOWN for its queue directories, DAC_OVERRIDE
# to reach the postfix-owned queue and sockets, SETUID/SETGID to drop to `postfix`
POSTFIX_CAPS = ("CHOWN", "DAC_OVERRIDE", "SETUID", "SETGID")
RETRY_BACKOFF = 1  # minimal_backoff_time in seconds: Postfix's retry schedule, compressed
NOTE_LIMIT = 4
THROTTLED = "delivery temporarily suspended"  # qmgr's answer while a destination is backed off

STATUS_RE = re.compile(
    r"postfix/(?P<daemon>[\w-]+)\[(?P<pid>\d+)\]: (?P<qid>[0-9A-Za-z]+): to=<(?P<rcpt>[^>]*)>,"
    r"(?P<fields>.*?) status=(?P<status>[a-z]+) \((?P<reason>.*)\)$"
)
PROCESS_RE = re.compile(r"postfix/(?P<daemon>[\w-]+)\[(?P<pid>\d+)\]: (?P<text>.*)$")
RELAY_RE = re.compile(r"relay=([^,\s]+)")
ESTABLISHED_RE = re.compile(r"TLS connection established to \S+: (?P<version>TLSv1(?:\.[0-3])?) ")
TLS_FAILED_RE = re.compile(r"SSL_connect error|handshake failure|Cannot start TLS")


@dataclasses.dataclass(frozen=True)
class Status:
    """One delivery status line of the Postfix log for our message, and the process behind it."""

    status: str
    reason: str
    relay: str
    process: str
    line: int


def statuses(lines: list[str], qid: str) -> list[Status]:
    """Return the delivery status lines of queue id `qid` in Postfix log lines, oldest first."""
    found = []
    for index, line in enumerate(lines):
        match = STATUS_RE.search(line)
        if match and match["qid"] == qid:
            relay = RELAY_RE.search(match["fields"])
            process = f"{match['daemon']}[{match['pid']}]"
            found.append(
                Status(match["status"], match["reason"], relay[1] if relay else "?", process, index)
            )
    return found


def attempt_lines(lines: list[str], status: Status) -> list[int]:
    """Return the numbers of the lines the process behind `status` logged for that delivery."""
    numbers: list[int] = []
    for number in range(status.line - 1, -1, -1):
        match = PROCESS_RE.search(lines[number])
        if not match or f"{match['daemon']}[{match['pid']}]" != status.process:
            continue
        if STATUS_RE.search(lines[number]):
            break  # the end of the delivery this process made before ours
        numbers.insert(0, number)
    return numbers


def attempt_notes(lines: list[str], status: Status) -> list[str]:
    """Return what the process that logged `status` said during that delivery (TLS facts)."""
    notes = []
    for number in attempt_lines(lines, status):
        match = PROCESS_RE.search(lines[number])
        if match:
            notes.append(match["text"])
    return notes


def cell_log(lines: list[str], qid: str) -> str:
    """Return the log lines of one message: its queue id's lines and its deliveries' TLS lines."""
    keep = {n for n, line in enumerate(lines) if f": {qid}:" in line}
    for status in statuses(lines, qid):
        keep.update(attempt_lines(lines, status))
    return "".join(f"{lines[n]}\n" for n in sorted(keep))


def delivery_tls(lines: list[str], final: Status) -> str | None:
    """Return the TLS version of the session that delivered, or None when it was plaintext."""
    version = None
    for note in attempt_notes(lines, final):
        if match := ESTABLISHED_RE.search(note):
            version = TlsVersion.from_openssl(match["version"]).value
        elif TLS_FAILED_RE.search(note):
            version = None
    return version


def describe(lines: list[str], found: list[Status], retry_after: float | None, queue: str) -> str:
    """Return the sender's account: each attempt's status, reason and TLS log lines."""
    parts = []
    for number, status in enumerate(found):
        label = "first attempt" if number == 0 else f"retry {retry_after or 0:.1f} s after queueing"
        notes = [n if len(n) <= 160 else n[:157] + "..." for n in attempt_notes(lines, status)]
        told = f" [{' | '.join(notes[:NOTE_LIMIT])}]" if notes else ""
        parts.append(f"{label}: status={status.status} ({status.reason}) via {status.relay}{told}")
    if queue:
        parts.append(queue)
    return "Postfix " + "; ".join(parts)


def to_report(
    log: str, qid: str, retry_after: float | None, queue: str, attempts: tuple[tuple[str, int], ...]
) -> SendReport:
    """Map Postfix's last status for the message to a SendReport."""
    lines = log.splitlines()
    found = statuses(lines, qid)
    final = found[-1]
    reason = describe(lines, found, retry_after, queue)
    if final.status == "sent":
        return SendReport(SendAction.DELIVERED, reason, attempts, delivery_tls(lines, final))
    if final.status in ("bounced", "expired"):
        return SendReport(SendAction.REFUSED, reason, attempts)
    if final.status == "deferred":
        return SendReport(SendAction.DEFERRED, reason, attempts)
    return SendReport(SendAction.FAILED, f"unexpected status: {reason}", attempts, lab_fault=True)


def start_postfix(
    lab: RunningLab,
    role: str,
    settings: Mapping[str, str],
    mounts: tuple[Mount, ...],
    log_dir: Path,
) -> MtaHost:
    """Start Debian's Postfix in a sender container (run.sh reads `settings`); wait until it runs.

    `settings` are run.sh's TLSLAB_* variables beyond the host name and the lab CA, which every
    Postfix container gets: the sender driver's TLS knobs, or the lab relay's.
    """
    spec = SenderContainer(
        role=role,
        target="postfix",
        command=(f"{POSTFIX_DIR}/run.sh",),
        root=True,
        capabilities=POSTFIX_CAPS,
        environment=(
            ("TLSLAB_MYHOSTNAME", f"{role}.sender.{LAB_ZONE}"),
            ("TLSLAB_CAFILE", CONTAINER_CA),
            *settings.items(),
        ),
        mounts=(Mount(lab.pki.ca_cert_path, CONTAINER_CA), *mounts),
    )
    return MtaHost.start(lab, spec, CTL, "Postfix", log_dir)


class PostfixSender(QueuedMtaSender):
    """Submits each test message to a real Postfix and reports what Postfix did with it."""

    def __init__(self, profile: PostfixSenderProfile, lab: RunningLab, outbox: Path) -> None:
        """Start the profile's Postfix container and wait (bounded) until Postfix runs."""
        self.profile, self.id, self.lab = profile, profile.id, lab
        resolver = ""
        if profile.dns_support_level == "dnssec":
            if lab.dns is None or lab.dns.resolver is None:
                raise BackendError(
                    f"{profile.id} needs the lab's validating resolver, which runs only with DANE "
                    "receivers on the docker backend",
                    "add dane-* receivers to the suite and run with --backend docker",
                )
            resolver = lab.dns.resolver
        settings = {
            "TLSLAB_SECURITY_LEVEL": profile.security_level.value,
            "TLSLAB_MANDATORY_PROTOCOLS": profile.mandatory_protocols or "",
            "TLSLAB_PROTOCOLS": profile.protocols or "",
            "TLSLAB_MIN_BACKOFF": f"{RETRY_BACKOFF}s",
            "TLSLAB_DNS_SUPPORT_LEVEL": profile.dns_support_level or "",
            "TLSLAB_RESOLVER": resolver,
            "TLSLAB_MTA_STS": "yes" if profile.mta_sts else "",
        }
        log_dir = outbox / "postfix" / profile.id
        self.mta = start_postfix(lab, f"postfix-{profile.id}", settings, (), log_dir)
        self.host = self.mta.host

    def close(self) -> None:
        """End the container's command servers; the container itself goes with the lab."""
        self.mta.close()

    def _remove_command(self, queue_id: str) -> list[str]:
        """Return the command that deletes `queue_id` from the queue."""
        return ["postsuper", "-d", queue_id]

    def _observe(
        self,
        qid: str,
        offset: int,
        message: TestMessage,
        receiver: ReceiverEndpoint,
        known: set[tuple[str, int]],
    ) -> SendReport:
        """Wait for Postfix's verdict; retry a deferral once when due; collect the evidence."""
        log = self._await_status(qid, offset, message.rcpt, 1)
        retry_after, queue = None, ""
        if self._last_status(log, qid).status == "deferred":
            arrival = float(self._queue_entry(qid).get("arrival_time", time.time()))
            # Postfix retries no sooner than minimal_backoff_time after queueing (and, with
            # `may`, falls back to plaintext only then): force the retry once it is due; the
            # wait is the compressed retry schedule, time and not work: its job slot runs a cell
            due = max(arrival, time.time()) + RETRY_BACKOFF
            modelled_wait(max(0.0, due - time.time()))
            retry_after = time.time() - arrival
            status, output = self.mta.exec(["postqueue", "-i", qid])
            if status != 0:
                raise MtaTrouble(f"postqueue -i {qid} failed: {output.strip()[-200:]}")
            log = self._await_status(qid, offset, message.rcpt, 2)
            retried = self._last_status(log, qid)
            if THROTTLED in retried.reason:
                raise MtaTrouble(f"the forced retry made no new attempt: {retried.reason}")
            if retried.status == "deferred":
                queue = self._queue_note(qid)
        self.mta.keep_log(message, cell_log(log.splitlines(), qid))
        sent = self._last_status(log, qid).status == "sent"
        attempts = self.mta.attempts(receiver, known, message.message_id if sent else None)
        return to_report(log, qid, retry_after, queue, attempts)

    @staticmethod
    def _last_status(log: str, qid: str) -> Status:
        """Return the latest status line of `qid`; MtaTrouble when the log has none."""
        found = statuses(log.splitlines(), qid)
        if not found:
            raise MtaTrouble(f"no status line for {qid} could be read in: {log[-300:]}")
        return found[-1]

    def _queue_id(self, offset: int, message_id: str) -> str:
        """Return the queue id Postfix's cleanup logged for our Message-ID."""
        pattern = rf"postfix/cleanup\[[0-9]+\]: [0-9A-Za-z]+: message-id={ere(message_id)}$"
        log = self.mta.await_lines(pattern, offset, 1, "the cleanup line of the submitted message")
        found = re.search(
            rf"cleanup\[\d+\]: ([0-9A-Za-z]+): message-id={re.escape(message_id)}", log
        )
        if found is None:
            raise MtaTrouble(f"no queue id for {message_id} in: {log[-300:]}")
        return found[1]

    def _await_status(self, qid: str, offset: int, rcpt: str, count: int) -> str:
        """Wait until the log holds `count` status lines for (qid, rcpt); return the log since."""
        pattern = rf": {qid}: to=<{ere(rcpt)}>,.* status=[a-z]+ \("
        return self.mta.await_lines(pattern, offset, count, f"delivery status #{count} of {qid}")

    def _queue_entry(self, qid: str) -> dict[str, Any]:
        """Return `postqueue -j`'s record of the message, or {} when it is not queued."""
        status, output = self.mta.exec(["postqueue", "-j"])
        for line in output.splitlines() if status == 0 else []:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(entry, dict) and entry.get("queue_id") == qid:
                return entry
        return {}

    def _queue_note(self, qid: str) -> str:
        """Return what `postqueue -j` says about the message: queue and delay reason."""
        entry = self._queue_entry(qid)
        if not entry:
            return "postqueue -j: not in the queue"
        reasons = {str(r.get("delay_reason", "")) for r in entry.get("recipients", [])}
        return f"postqueue -j: still in the {entry.get('queue_name')} queue ({'; '.join(reasons)})"
