"""The postfix driver: a real Postfix in a sender container; submit a message, then read its log.

Each profile gets one container (`lab/docker/postfix/run.sh` writes main.cf from the profile). A
cell submits the message with sendmail, finds its queue id by Message-ID in the Postfix log and
waits (bounded) for the delivery status. A deferred message is retried once by force, when
Postfix's own retry schedule says it is due, to show whether a later attempt falls back to
plaintext; then it is removed from the queue so cells stay independent.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

from harness.model import PostfixSenderProfile
from harness.proxy_evidence import front_connections
from harness.senders.base import SendAction, SendReport, TestMessage
from lab.backends.base import BackendError, RunningLab, SenderHost
from lab.evidence_store import write_durably
from lab.serve import ReceiverEndpoint
from lab.spec import LAB_ZONE, TlsVersion

POSTFIX_DIR = "/opt/tlslab-postfix"
CTL = f"{POSTFIX_DIR}/ctl.sh"
CONTAINER_CA = "/etc/tlslab/lab-ca.pem"
# the least Postfix runs with as root (measured): CHOWN for its queue directories, DAC_OVERRIDE
# to reach the postfix-owned queue and sockets, SETUID/SETGID to drop to `postfix`
POSTFIX_CAPS = ["CHOWN", "DAC_OVERRIDE", "SETUID", "SETGID"]
READY_SECONDS = 60
STATUS_SECONDS = 30
IDLE_SECONDS = 5
SESSION_SECONDS = 5.0
RETRY_BACKOFF = 1  # minimal_backoff_time in seconds: Postfix's retry schedule, compressed
EXEC_SECONDS = 15  # every other command run in the container (sendmail, postqueue, postsuper)
TIMED_OUT = 124  # the exit status of coreutils' timeout when it had to stop the command
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


class PostfixTrouble(Exception):
    """The lab could not observe what Postfix did (not a verdict on Postfix)."""


@dataclasses.dataclass(frozen=True)
class Status:
    """One delivery status line of the Postfix log for our message, and the process behind it."""

    status: str
    reason: str
    relay: str
    process: str
    line: int


def ere(text: str) -> str:
    """Return `text` as a POSIX extended regular expression that matches it literally."""
    return re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", text)


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


def endpoint_for(lab: RunningLab, rcpt: str) -> ReceiverEndpoint | None:
    """Return the lab receiver that serves the recipient's domain, or None."""
    domain = rcpt.rpartition("@")[2].lower()
    return next((e for e in lab.endpoints.values() if e.domain == domain), None)


class PostfixSender:
    """Submits each test message to a real Postfix and reports what Postfix did with it."""

    def __init__(self, profile: PostfixSenderProfile, lab: RunningLab, outbox: Path) -> None:
        """Start the profile's Postfix container and wait (bounded) until Postfix runs."""
        assert lab.sender_host is not None
        self.profile, self.id = profile, profile.id
        self.log_dir = outbox / "postfix" / profile.id
        self.host: SenderHost = lab.sender_host(
            f"postfix-{profile.id}",
            target="postfix",
            command=[f"{POSTFIX_DIR}/run.sh"],
            user="0:0",
            cap_add=POSTFIX_CAPS,
            environment={
                "HOME": "/root",
                "TLSLAB_MYHOSTNAME": f"postfix-{profile.id}.sender.{LAB_ZONE}",
                "TLSLAB_SECURITY_LEVEL": profile.security_level.value,
                "TLSLAB_MANDATORY_PROTOCOLS": profile.mandatory_protocols or "",
                "TLSLAB_PROTOCOLS": profile.protocols or "",
                "TLSLAB_CAFILE": CONTAINER_CA,
                "TLSLAB_MIN_BACKOFF": f"{RETRY_BACKOFF}s",
                "TLSLAB_MTA_STS": "yes" if profile.mta_sts else "",
            },
            volumes={str(lab.pki.ca_cert_path.resolve()): {"bind": CONTAINER_CA, "mode": "ro"}},
        )
        status, output = self._exec([CTL, "ready", str(READY_SECONDS)], None, READY_SECONDS + 5)
        if status != 0:
            raise BackendError(
                f"Postfix in {self.host.name} did not start: {output[-300:]} {self._logs()}",
                "check lab/docker/postfix/run.sh and the container's capabilities",
            )

    def send(self, message: TestMessage, lab: RunningLab, outbox: Path) -> SendReport:
        """Submit `message` to Postfix, observe its delivery, then remove it from the queue."""
        endpoint = endpoint_for(lab, message.rcpt)
        if endpoint is None:
            return SendReport(
                SendAction.FAILED, f"no lab receiver for {message.rcpt}", lab_fault=True
            )
        known = self._session_keys(endpoint.evidence_dir)
        qid = ""
        try:
            offset = self._log_size()
            self._submit(message)
            qid = self._queue_id(offset, message.message_id)
            return self._observe(qid, offset, message, endpoint, known)
        except PostfixTrouble as trouble:
            attempts = self._attempts(endpoint, known, None)
            return SendReport(SendAction.FAILED, str(trouble), attempts, lab_fault=True)
        finally:
            if qid:
                self._exec(["postsuper", "-d", qid])

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
            # `may`, falls back to plaintext only then): force the retry once it is due
            due = max(arrival, time.time()) + RETRY_BACKOFF
            time.sleep(max(0.0, due - time.time()))
            retry_after = time.time() - arrival
            status, output = self._exec(["postqueue", "-i", qid])
            if status != 0:
                raise PostfixTrouble(f"postqueue -i {qid} failed: {output.strip()[-200:]}")
            log = self._await_status(qid, offset, message.rcpt, 2)
            retried = self._last_status(log, qid)
            if THROTTLED in retried.reason:
                raise PostfixTrouble(f"the forced retry made no new attempt: {retried.reason}")
            if retried.status == "deferred":
                queue = self._queue_note(qid)
        self._keep_log(message, cell_log(log.splitlines(), qid))
        sent = self._last_status(log, qid).status == "sent"
        attempts = self._attempts(receiver, known, message.message_id if sent else None)
        return to_report(log, qid, retry_after, queue, attempts)

    @staticmethod
    def _last_status(log: str, qid: str) -> Status:
        """Return the latest status line of `qid`; PostfixTrouble when the log has none."""
        found = statuses(log.splitlines(), qid)
        if not found:
            raise PostfixTrouble(f"no status line for {qid} could be read in: {log[-300:]}")
        return found[-1]

    def _exec(
        self, argv: list[str], env: dict[str, str] | None = None, seconds: float = EXEC_SECONDS
    ) -> tuple[int, str]:
        """Run a command in the container, killed after `seconds`; engine errors are returned."""
        bounded = ["timeout", "-k", "2", f"{seconds:g}", *argv]
        try:
            status, output = self.host.exec(bounded, env)
        except Exception as error:  # the engine's errors (e.g. the container died)
            return -1, f"{type(error).__name__}: {error}"
        if status == TIMED_OUT:
            output += f" (killed after {seconds:g} s: {' '.join(argv[:3])} ...)"
        return status, output

    def _log_size(self) -> int:
        """Return the Postfix log's current size in bytes: where this cell's lines begin."""
        status, output = self._exec([CTL, "size"])
        if status != 0 or not output.strip().isdigit():
            raise PostfixTrouble(f"cannot read the Postfix log: {output.strip()[-200:]}")
        return int(output.strip())

    def _submit(self, message: TestMessage) -> None:
        """Hand the message to Postfix's sendmail (Unix line ends) inside the container."""
        data = message.data.replace(b"\r\n", b"\n")
        env = {"TLSLAB_MESSAGE": base64.b64encode(data).decode()}
        status, output = self._exec([CTL, "submit", message.mail_from, message.rcpt], env)
        if status != 0:
            raise PostfixTrouble(f"sendmail failed ({status}): {output.strip()[-200:]}")

    def _queue_id(self, offset: int, message_id: str) -> str:
        """Return the queue id Postfix's cleanup logged for our Message-ID."""
        pattern = rf"postfix/cleanup\[[0-9]+\]: [0-9A-Za-z]+: message-id={ere(message_id)}$"
        log = self._await(pattern, offset, 1, "the cleanup line of the submitted message")
        found = re.search(
            rf"cleanup\[\d+\]: ([0-9A-Za-z]+): message-id={re.escape(message_id)}", log
        )
        if found is None:
            raise PostfixTrouble(f"no queue id for {message_id} in: {log[-300:]}")
        return found[1]

    def _await_status(self, qid: str, offset: int, rcpt: str, count: int) -> str:
        """Wait until the log holds `count` status lines for (qid, rcpt); return the log since."""
        pattern = rf": {qid}: to=<{ere(rcpt)}>,.* status=[a-z]+ \("
        return self._await(pattern, offset, count, f"delivery status #{count} of {qid}")

    def _await(self, pattern: str, offset: int, count: int, what: str) -> str:
        """Wait (bounded, in the container) for `count` matching log lines; return the log since."""
        argv = [CTL, "await", str(STATUS_SECONDS), str(offset), str(count), pattern]
        status, output = self._exec(argv, None, STATUS_SECONDS + 5)
        if status != 0:
            raise PostfixTrouble(
                f"no {what} within {STATUS_SECONDS} s; log: {' | '.join(output.splitlines()[-6:])}"
            )
        return output

    def _queue_entry(self, qid: str) -> dict[str, Any]:
        """Return `postqueue -j`'s record of the message, or {} when it is not queued."""
        status, output = self._exec(["postqueue", "-j"])
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

    def _session_keys(self, evidence: Path) -> set[tuple[str, int]]:
        """Return (ip, port) of the connections this container already made to an MX."""
        return {peer for peer, _ in front_connections(evidence, self.host.address)}

    def _attempts(
        self, receiver: ReceiverEndpoint, known: set[tuple[str, int]], anchor: str | None
    ) -> tuple[tuple[str, int], ...]:
        """Return this cell's SMTP connections: the receiver's new sessions from this container."""
        for mx in receiver.mx:  # every MX host of the receiver (Postfix may have tried each)
            self._exec([CTL, "idle", str(IDLE_SECONDS), mx.host], None, IDLE_SECONDS + 5)
        deadline = time.monotonic() + SESSION_SECONDS
        while True:
            connections = [
                (peer, ids)
                for peer, ids in front_connections(receiver.evidence_dir, self.host.address)
                if peer not in known
            ]
            stored = set().union(*(ids for _, ids in connections))
            if anchor is None or anchor in stored or time.monotonic() > deadline:
                return tuple(peer for peer, _ in connections)
            time.sleep(0.02)

    def _keep_log(self, message: TestMessage, log: str) -> None:
        """Keep this cell's Postfix log lines next to the report."""
        name = re.sub(r"[^A-Za-z0-9._-]", "_", message.message_id.strip("<>"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        write_durably(self.log_dir / f"{name}.log", log.encode())

    def _logs(self) -> str:
        """Return the container's last log lines, when the host can give them."""
        container = getattr(self.host, "container", None)
        try:
            text = container.logs(tail=10).decode("utf-8", "replace") if container else ""
        except Exception as error:  # the engine's errors
            return f"(no container log: {error})"
        return " | ".join(text.strip().splitlines())
