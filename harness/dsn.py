"""Parse delivery status notifications (RFC 3464): what a sender says it did, per recipient."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import enum
import re
from email.message import Message

DSN_TYPE = "message/delivery-status"
STATUS_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")


class DsnAction(enum.StrEnum):
    """The `Action` of one recipient in a DSN (RFC 3464 section 2.3.3)."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


ACTIONS = frozenset(action.value for action in DsnAction)


@dataclasses.dataclass(frozen=True)
class RecipientStatus:
    """One per-recipient block of a DSN: which address, what was done, and the status."""

    recipient: str
    original_recipient: str | None
    action: DsnAction
    status: str
    diagnostic: str | None
    remote_mta: str | None

    def concerns(self, address: str) -> bool:
        """Return True when this block is about `address` (final or original recipient)."""
        wanted = address.lower()
        return wanted in (self.recipient.lower(), (self.original_recipient or "").lower())

    def describe(self) -> str:
        """Return the block's fields as one line: `Action: failed; Status: 5.7.10; ...`."""
        fields = [f"Action: {self.action.value}", f"Status: {self.status}"]
        if self.diagnostic:
            fields.append(f"Diagnostic-Code: {self.diagnostic}")
        if self.remote_mta:
            fields.append(f"Remote-MTA: {self.remote_mta}")
        return " ".join("; ".join(fields).split())


@dataclasses.dataclass(frozen=True)
class DeliveryStatus:
    """A well-formed DSN: the reporting MTA and one status per recipient (at least one)."""

    reporting_mta: str | None
    recipients: tuple[RecipientStatus, ...]

    def about(self, address: str) -> tuple[RecipientStatus, ...]:
        """Return the blocks about `address`, or every block when none names it."""
        named = tuple(r for r in self.recipients if r.concerns(address))
        return named or self.recipients

    def action_for(self, address: str) -> DsnAction:
        """Return what the DSN says happened to `address`: failed, else delayed, else success."""
        actions = [r.action for r in self.about(address)]
        for decisive in (DsnAction.FAILED, DsnAction.DELAYED):
            if decisive in actions:
                return decisive
        return actions[0]

    def describe(self, address: str) -> str:
        """Return the fields of the blocks about `address`, joined on one line."""
        return " | ".join(r.describe() for r in self.about(address))


def parse_dsn(data: bytes) -> DeliveryStatus | None:
    """Return the DSN in a message's `message/delivery-status` part; None when absent or malformed.

    Malformed means: no such part, no per-recipient block, or a per-recipient block without a
    Final-Recipient, with an Action outside RFC 3464's five, or with a Status that is no
    `class.subject.detail` code. A malformed report is never read as a refusal.
    """
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    part = next((p for p in message.walk() if p.get_content_type() == DSN_TYPE), None)
    if part is None:
        return None
    blocks = _blocks(part)
    if not blocks:
        return None
    per_message, per_recipient = blocks[0], blocks[1:]
    if _is_recipient_block(per_message):  # the per-message block is required first
        return None
    recipients = [_recipient(block) for block in per_recipient]
    if not recipients or any(r is None for r in recipients):
        return None
    return DeliveryStatus(
        _field(per_message, "Reporting-MTA"), tuple(r for r in recipients if r is not None)
    )


def _blocks(part: Message) -> list[Message]:
    """Return the header blocks of a delivery-status part (parsed by email, or raw text)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [block for block in payload if isinstance(block, Message) and block.keys()]
    text = payload if isinstance(payload, str) else ""
    text = text.replace("\r\n", "\n")
    raw = [block for block in text.split("\n\n") if block.strip()]
    parsed = [email.message_from_string(block + "\n") for block in raw]
    return [block for block in parsed if block.keys()]


def _is_recipient_block(block: Message) -> bool:
    """Return True for a block that carries per-recipient fields."""
    return any(block.get(name) is not None for name in ("Final-Recipient", "Action", "Status"))


def _field(block: Message, name: str) -> str | None:
    """Return one field of a block, whitespace folded, or None when absent or empty."""
    value = block.get(name)
    text = " ".join(str(value).split()) if value is not None else ""
    return text or None


def _address(value: str | None) -> str | None:
    """Return the address of `rfc822; someone@example`, None when not of that form."""
    if value is None:
        return None
    kind, sep, address = value.partition(";")
    address = address.strip().strip("<>")
    return address if sep and kind.strip() and address else None


def _recipient(block: Message) -> RecipientStatus | None:
    """Return one per-recipient block, None when a required field is missing or invalid."""
    recipient = _address(_field(block, "Final-Recipient"))
    action_text = (_field(block, "Action") or "").split(" ")[0].lower()
    status = (_field(block, "Status") or "").split(" ")[0]
    if recipient is None or action_text not in ACTIONS:
        return None
    if not STATUS_CODE.match(status):
        return None
    return RecipientStatus(
        recipient=recipient,
        original_recipient=_address(_field(block, "Original-Recipient")),
        action=DsnAction(action_text),
        status=status,
        diagnostic=_field(block, "Diagnostic-Code"),
        remote_mta=_field(block, "Remote-MTA"),
    )
