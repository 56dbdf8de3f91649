"""The exim driver: a real Exim in a sender container; submit a message, then read its mainlog.

Each profile gets one container (`lab/docker/exim/run.sh` writes exim4.conf from the profile). A
cell submits the message through Exim's sendmail interface, finds its Exim id by Message-ID in
the mainlog and waits (bounded) for the delivery status. A deferred message is retried once by
force (`exim -M`) when the retry rule (1 s in the lab) says it is due, to show whether a later
attempt falls back to plaintext; then it is removed from the queue so cells stay independent.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from harness.job_slots import modelled_wait
from harness.senders.base import SendReport, TestMessage
from harness.senders.exim_log import Attempt, Flag, attempts, cell_log, exim_id, to_report
from harness.senders.exim_profile import EximSenderProfile
from harness.senders.mta import (
    CONTAINER_CA,
    STATUS_SECONDS,
    MtaHost,
    MtaTrouble,
    ere,
)
from harness.senders.mta_sender import QueuedMtaSender
from lab.backends.base import BackendError, Mount, RunningLab, SenderContainer
from lab.endpoints import ReceiverEndpoint
from lab.spec import LAB_ZONE

EXIM_DIR = "/opt/tlslab-exim"
CTL = f"{EXIM_DIR}/ctl.sh"
# the least Exim runs with as root (measured): SETUID/SETGID to drop to Debian-exim for
# deliveries, CHOWN and DAC_OVERRIDE for its Debian-exim-owned spool, log and hints files, FOWNER
# for `exim -M` (root chmods the Debian-exim-owned message log before it delivers)
EXIM_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID")
RETRY_SECONDS = 1  # the retry rule's interval (F,1d,1s): Exim's retry schedule, compressed


def validating_resolver(profile: EximSenderProfile, lab: RunningLab) -> str:
    """Return the lab's validating resolver for a DANE profile ("" otherwise); BackendError."""
    if not profile.dane:
        return ""
    if lab.dns is None or lab.dns.resolver is None:
        raise BackendError(
            f"{profile.id} needs the lab's validating resolver, which runs only with DANE "
            "receivers on the docker backend",
            "add dane-* receivers to the suite and run with --backend docker",
        )
    return lab.dns.resolver


def container(profile: EximSenderProfile, lab: RunningLab) -> SenderContainer:
    """Return the sender container of one Exim profile: run.sh reads its TLSLAB_* settings."""
    role = f"exim-{profile.id}"
    return SenderContainer(
        role=role,
        target="exim",
        command=(f"{EXIM_DIR}/run.sh",),
        root=True,
        capabilities=EXIM_CAPS,
        environment=(
            ("TLSLAB_MYHOSTNAME", f"{role}.sender.{LAB_ZONE}"),
            ("TLSLAB_CAFILE", CONTAINER_CA),
            ("TLSLAB_REQUIRE_TLS", "yes" if profile.require_tls else ""),
            ("TLSLAB_VERIFY", "yes" if profile.verify else ""),
            ("TLSLAB_CIPHERS", profile.require_ciphers or ""),
            ("TLSLAB_RESOLVER", validating_resolver(profile, lab)),
            ("TLSLAB_RETRY", f"{RETRY_SECONDS}s"),
        ),
        mounts=(Mount(lab.pki.ca_cert_path, CONTAINER_CA),),
    )


class EximSender(QueuedMtaSender):
    """Submits each test message to a real Exim and reports what Exim did with it."""

    def __init__(self, profile: EximSenderProfile, lab: RunningLab, outbox: Path) -> None:
        """Start the profile's Exim container and wait (bounded) until Exim's daemon runs."""
        self.profile, self.id, self.lab = profile, profile.id, lab
        spec = container(profile, lab)
        self.mta = MtaHost.start(lab, spec, CTL, "Exim", outbox / "exim" / profile.id)
        self.host = self.mta.host

    def close(self) -> None:
        """End the container's command servers; the container itself goes with the lab."""
        self.mta.close()

    def _remove_command(self, queue_id: str) -> list[str]:
        """Return the command that deletes `queue_id` from the queue."""
        return [CTL, "remove", queue_id]

    def _observe(
        self,
        mid: str,
        offset: int,
        message: TestMessage,
        receiver: ReceiverEndpoint,
        known: set[tuple[str, int]],
    ) -> SendReport:
        """Wait for Exim's verdict; retry a deferral once when due; collect the evidence."""
        queued = time.time()
        log = self._await_status(mid, offset, 1)
        retry_after, queue = None, ""
        if self._last(log, mid, message.rcpt).flag is Flag.DEFERRED:
            # the retry rule makes the next attempt due RETRY_SECONDS after the deferral; no
            # queue runner comes in the lab's time, so force that attempt once it is due (the
            # wait is the compressed retry schedule, time and not work: its job slot runs a cell)
            modelled_wait(RETRY_SECONDS)
            retry_after = time.time() - queued
            status, output = self.mta.exec([CTL, "retry", mid], None, STATUS_SECONDS + 5)
            try:
                log = self._await_status(mid, offset, 2)
            except MtaTrouble as trouble:
                said = f"exim -M {mid} exited {status}: {output.strip()[-200:]}"
                raise MtaTrouble(f"{trouble}; {said}") from None
            if self._last(log, mid, message.rcpt).flag is Flag.DEFERRED:
                queue = self._queue_note(mid)
        self.mta.keep_log(message, cell_log(log.splitlines(), mid))
        sent = self._last(log, mid, message.rcpt).flag is Flag.DELIVERED
        connections = self.mta.attempts(receiver, known, message.message_id if sent else None)
        return to_report(log, mid, message.rcpt, retry_after, queue, connections)

    @staticmethod
    def _last(log: str, mid: str, rcpt: str) -> Attempt:
        """Return the latest attempt of `mid` to `rcpt`; MtaTrouble when the log has none."""
        found = attempts(log.splitlines(), mid, rcpt)
        if not found:
            raise MtaTrouble(f"no delivery status for {mid} could be read in: {log[-300:]}")
        return found[-1]

    def _queue_id(self, offset: int, message_id: str) -> str:
        """Return the Exim id its arrival line (`<=`) logged for our Message-ID."""
        bare = ere(message_id.strip("<>"))
        pattern = rf" <= .* id={bare}( |$)"
        log = self.mta.await_lines(pattern, offset, 1, "the arrival line of the submitted message")
        mid = exim_id(log.splitlines(), message_id)
        if mid is None:
            raise MtaTrouble(f"no Exim id for {message_id} in: {log[-300:]}")
        return mid

    def _await_status(self, mid: str, offset: int, count: int) -> str:
        """Wait until the log holds `count` status lines (=>, ==, **) of `mid`; return the log."""
        pattern = rf" {ere(mid)} (=>|==|\*\*) "
        return self.mta.await_lines(pattern, offset, count, f"delivery status #{count} of {mid}")

    def _queue_note(self, mid: str) -> str:
        """Return what `exim -bp` says about the message: still queued, and for how long."""
        status, output = self.mta.exec([CTL, "queue", mid])
        text = re.sub(r"\s+", " ", output).strip()
        if status != 0 or not text or text == "not in the queue":
            return "exim -bp: not in the queue"
        return f"exim -bp: still in the queue ({text[:160]})"
