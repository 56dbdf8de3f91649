"""The lab's Received header against a real Postfix 3.7's for the same delivery, byte for byte.

A private Postfix (bench.postfix_receiver, one smtpd per receiver state, the lab's certificates)
hands each message with its own Received header to a before-queue proxy filter on loopback
that keeps it; the lab receiver gets the same delivery from the same client. The two headers
must be identical once the names (reverse DNS name, software) and the queue id are set aside.
Skipped where Postfix cannot run (not installed, not root).
"""

from __future__ import annotations

import re
import smtplib
import ssl
import sys
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from test_hostile import Receiver
from tools import missing
from waiting import eventually

from harness.evidence import parse_received
from lab.backends.local import LocalBackend
from lab.evidence_store import read_messages
from lab.pki import LabPki
from lab.received_header import postfix_date
from lab.spec import ReceiverSpec

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:  # bench/ is a top-level folder, not an installed package
    sys.path.insert(0, str(PROJECT))

from bench.common import free_port  # noqa: E402
from bench.postfix_receiver import (  # noqa: E402
    PostfixReceiver,
    running_postfix,
    unavailable_reason,
)

WAIT = 15.0
STATES = ("tls13", "tls12", "tls11", "tls10")
CLIENT = "client.lab.test"
POSTFIX_DATE = r"\w{3}, [ 1-3]\d \w{3} \d{4} \d\d:\d\d:\d\d \+0000 \(UTC\)"


def test_dates_are_written_as_postfix_writes_them() -> None:
    second = datetime(2026, 7, 2, 9, 5, 7, tzinfo=UTC).timestamp()
    twelfth = datetime(2026, 7, 12, 23, 59, 59, tzinfo=UTC).timestamp()
    assert postfix_date(second) == "Thu,  2 Jul 2026 09:05:07 +0000 (UTC)"
    assert postfix_date(twelfth) == "Sun, 12 Jul 2026 23:59:59 +0000 (UTC)"


def test_a_date_within_a_second_reads_as_that_second_and_the_next_second_differs() -> None:
    from email.utils import format_datetime

    def uncached(when: float) -> str:  # the formula before the per-second cache
        stamp = format_datetime(datetime.fromtimestamp(when, UTC))
        return f"{stamp[:5]}{stamp[5:7].lstrip('0').rjust(2)}{stamp[7:]} (UTC)"

    base = datetime(2026, 7, 2, 23, 59, 59, tzinfo=UTC).timestamp()
    for when in (base, base + 0.25, base + 0.999999, base + 1.0, base + 86400.5, 1e9 + 0.5):
        assert postfix_date(when) == uncached(when)
    assert postfix_date(base + 0.999999) == "Thu,  2 Jul 2026 23:59:59 +0000 (UTC)"
    assert postfix_date(base + 1.0) == "Fri,  3 Jul 2026 00:00:00 +0000 (UTC)"  # control


class KeepFiltered:
    """A before-queue proxy filter that keeps each message Postfix hands it."""

    def __init__(self) -> None:
        """Keep nothing yet."""
        self.messages: list[bytes] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Keep the message, Postfix's Received header on top."""
        with self.lock:
            self.messages.append(bytes(envelope.original_content))
        return "250 2.0.0 Ok"

    def header_for(self, rcpt: str) -> str | None:
        """Return the Received header of the message for `rcpt`, if it arrived."""
        with self.lock:
            for message in self.messages:
                head = message.decode("ascii", "replace")
                if f"for <{rcpt}>;" in head.split("\r\n\r\n", 1)[0]:
                    return top_received(head)
        return None


def top_received(head: str) -> str:
    """Return the first Received header of a message: its first line and the folded ones."""
    lines = head.split("\r\n")
    assert lines[0].startswith("Received: "), lines[0]
    header = [lines[0]]
    for line in lines[1:]:
        if not line.startswith(("\t", " ")):
            break
        header.append(line)
    return "\r\n".join(header).removeprefix("Received: ")


@pytest.fixture(scope="module")
def postfix(receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki) -> Iterator[Any]:
    """Run a private Postfix for the TLS states, its messages kept by a proxy filter."""
    reason = unavailable_reason()
    if reason:
        missing(reason, "make system-deps installs Debian's postfix; run the tests as root")
    keeper = KeepFiltered()
    controller = Controller(keeper, hostname="127.0.0.1", port=free_port())
    controller.start()
    specs = [receiver_specs[state] for state in STATES]
    ports = [free_port() for _ in specs]
    option = f"smtpd_proxy_filter=127.0.0.1:{controller.port}"
    try:
        with running_postfix(specs, lab_pki, ports, [option]) as running:
            yield running, keeper
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def lab(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Receiver]]:
    """Run the lab's receivers for the same TLS states."""
    specs = [receiver_specs[state] for state in STATES]
    evidence = tmp_path_factory.mktemp("received")
    with LocalBackend().start(specs, lab_pki, evidence) as running:
        yield {state: Receiver(running.endpoint(state), lab_pki) for state in STATES}


def client_context(spec: ReceiverSpec) -> ssl.SSLContext:
    """Return the one client context both receivers see: the state's versions, no verification."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated in Python: the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = spec.tls_min.ssl_version
        context.maximum_version = spec.tls_max.ssl_version
    if spec.tls_min.is_legacy:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def deliver(host: str, port: int, spec: ReceiverSpec, rcpt: str) -> None:
    """Deliver one message over STARTTLS with smtplib."""
    with smtplib.SMTP(host, port, timeout=WAIT) as smtp:
        smtp.ehlo(CLIENT)
        smtp.starttls(context=client_context(spec))
        smtp.ehlo(CLIENT)
        smtp.sendmail(f"probe@{CLIENT}", [rcpt], b"Subject: received header\r\n\r\nhello\r\n")


def without_names_and_ids(header: str) -> str:
    """Return a Received header with the reverse DNS name, software, queue id and time masked."""
    header = re.sub(r"^from (\S+) \(\S+ \[", r"from \1 (NAME [", header)
    by = r"\tby (\S+) \([^)]*\) with (E?SMTPS?)(?: id \w+)?"
    header = re.sub(by, r"\tby \1 (SOFTWARE) with \2", header)
    return re.sub(r"\d\d:\d\d:\d\d \+0000", "HH:MM:SS +0000", header)


@pytest.mark.integration
@pytest.mark.parametrize("state", STATES)
def test_received_header_is_postfixs_for_the_same_delivery(
    postfix: tuple[PostfixReceiver, KeepFiltered],
    lab: dict[str, Receiver],
    receiver_specs: dict[str, ReceiverSpec],
    state: str,
) -> None:
    running, keeper = postfix
    spec = receiver_specs[state]
    rcpt = f"inbox@{spec.domain}"
    listener = running.listeners[state]
    deliver(listener.host, listener.port, spec, rcpt)
    theirs = eventually(lambda: keeper.header_for(rcpt), f"Postfix's message for {state}", WAIT)
    deliver(*lab[state].address, spec, rcpt)
    evidence = lab[state].endpoint.evidence_dir
    ours = eventually(
        lambda: next((str(m["received"]) for m in read_messages(evidence)), None),
        f"the lab's message for {state}",
        WAIT,
    )
    assert re.search(POSTFIX_DATE + "$", theirs), theirs
    assert without_names_and_ids(ours) == without_names_and_ids(theirs), (ours, theirs)
    assert parse_received(ours) == parse_received(theirs) is not None
