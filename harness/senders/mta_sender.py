"""The submit, observe and dequeue cycle a real MTA in a lab container goes through per cell."""

from __future__ import annotations

from abc import ABC, abstractmethod

from harness.senders.base import SendAction, SendReport, TestMessage
from harness.senders.mta import MtaHost, MtaTrouble, endpoint_for
from lab.backends.base import RunningLab
from lab.endpoints import ReceiverEndpoint


class QueuedMtaSender(ABC):
    """A real MTA driver: submit the message, observe its delivery, remove it from the queue."""

    lab: RunningLab
    mta: MtaHost

    def send(self, message: TestMessage) -> SendReport:
        """Submit `message` to the MTA, observe its delivery, then remove it from the queue."""
        endpoint = endpoint_for(self.lab, message.rcpt)
        if endpoint is None:
            return SendReport(
                SendAction.FAILED, f"no lab receiver for {message.rcpt}", lab_fault=True
            )
        known = self.mta.session_keys(endpoint.evidence_dir)
        queue_id = ""
        try:
            offset = self.mta.log_size()
            self.mta.submit(message)
            queue_id = self._queue_id(offset, message.message_id)
            return self._observe(queue_id, offset, message, endpoint, known)
        except MtaTrouble as trouble:
            connections = self.mta.attempts(endpoint, known, None)
            return SendReport(SendAction.FAILED, str(trouble), connections, lab_fault=True)
        finally:
            if queue_id:
                self.mta.exec(self._remove_command(queue_id))

    @abstractmethod
    def _queue_id(self, offset: int, message_id: str) -> str:
        """Return the MTA's queue id for our Message-ID, from its log after `offset`."""

    @abstractmethod
    def _observe(
        self,
        queue_id: str,
        offset: int,
        message: TestMessage,
        receiver: ReceiverEndpoint,
        known: set[tuple[str, int]],
    ) -> SendReport:
        """Return what the MTA did with the queued message, from its log and the lab's evidence."""

    @abstractmethod
    def _remove_command(self, queue_id: str) -> list[str]:
        """Return the command that deletes `queue_id` from the MTA's queue."""
