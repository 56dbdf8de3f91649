"""Run cells: send one message per cell, collect the receiver's evidence, classify, judge."""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from email.utils import formatdate
from pathlib import Path
from typing import Any

from harness import headline, provenance
from harness.classify import Arrival, classify, judge
from harness.evidence import parse_received, received_headers
from harness.expectations import failure_note
from harness.model import (
    CellExpectation,
    CellRef,
    CellResult,
    ReceiverInfo,
    RunReport,
    SenderInfo,
    SessionSummary,
    cell_id,
)
from harness.observe import bounce_address, describe_attempts, watch, zone_of
from harness.scenarios import LoadedSuite
from harness.senders import SenderDriver, SendReport, TestMessage, make_driver
from harness.senders.base import ExternalSender, SendAction
from lab.backends import BACKENDS, Backend, BackendError, RunningLab
from lab.evidence_store import read_messages, read_sessions
from lab.pki import ensure_certs
from lab.spec import ReceiverSpec, TlsVersion

SESSION_WAIT = 5.0
POLL_INTERVAL = 0.005
MAIL_FROM_DOMAIN = "sender.lab.test"


def new_run_id(suite: str, backend: str) -> str:
    """Return a sortable, unique run id: `<UTC time>-<suite>-<backend>`."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{suite}-{backend}-{secrets.token_hex(2)}"


def build_message(
    receiver: str, sender: str, domain: str, bounce_zone: str | None = None
) -> TestMessage:
    """Return a synthetic, uniquely identified test message; bounces go to `bounce_zone`'s lab."""
    cell = cell_id(receiver, sender)
    message_id = f"<{cell}.{secrets.token_hex(8)}@{MAIL_FROM_DOMAIN}>"
    mail_from = bounce_address(cell, bounce_zone or MAIL_FROM_DOMAIN)
    rcpt = f"inbox@{domain}"
    body = (
        f"From: Sender TLS Lab <{mail_from}>\r\n"
        f"To: <{rcpt}>\r\n"
        f"Subject: [Sender TLS Lab] synthetic test message for cell {cell}\r\n"
        f"Date: {formatdate(localtime=False)}\r\n"
        f"Message-ID: {message_id}\r\n"
        f"X-TLSLab-Cell: {cell}\r\n"
        "\r\n"
        "This is a synthetic test message sent by Sender TLS Lab.\r\n"
        "It contains no personal or health information.\r\n"
    )
    return TestMessage(message_id, mail_from, rcpt, body.encode())


def wait_for_sessions(directory: Path, peers: set[tuple[str, int]]) -> list[dict[str, Any]]:
    """Return the session records of the given peers, waiting (bounded) until all are written."""
    deadline = time.monotonic() + SESSION_WAIT
    while True:
        found = [r for r in read_sessions(directory) if (r["peer_ip"], r["peer_port"]) in peers]
        if len(found) >= len(peers) or time.monotonic() > deadline:
            return found
        time.sleep(POLL_INTERVAL)


def find_arrivals(directory: Path, message_id: str) -> list[Arrival]:
    """Return every stored copy of a message, with its Received header and session TLS facts.

    Reads the per-message records the receiver makes durable before it answers 250, so an
    acknowledged message counts even when its session never ended cleanly.
    """
    arrivals = []
    for stored in read_messages(directory):
        if stored.get("message_id") != message_id:
            continue
        headers = received_headers((directory / stored["eml"]).read_bytes())
        top = headers[0] if headers else ""
        arrivals.append(
            Arrival(top, parse_received(top), stored.get("version"), stored.get("cipher"))
        )
    return arrivals


def summarise(record: dict[str, Any]) -> SessionSummary:
    """Return the parts of a session record a report shows."""
    return SessionSummary(
        peer=f"{record.get('peer_ip')}:{record.get('peer_port')}",
        starttls=bool(record.get("starttls_asked")),
        handshake=str(record.get("handshake")),
        version=record.get("version"),
        cipher=record.get("cipher"),
        alert=record.get("alert") or record.get("tls_error"),
        sni=record.get("sni"),
        message_ids=tuple(m.get("message_id") or "" for m in record.get("messages", [])),
    )


class LabRun:
    """One run of a suite on a running lab: runs cells and assembles the RunReport."""

    def __init__(self, loaded: LoadedSuite, lab: RunningLab, run_dir: Path, run_id: str) -> None:
        """Bind the run to its suite, lab and output folder."""
        self.loaded, self.lab, self.run_dir, self.run_id = loaded, lab, run_dir, run_id
        self.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.results: list[CellResult] = []
        self.drivers: dict[str, SenderDriver] = {}
        self._drivers_lock = threading.Lock()

    def run_cell(self, receiver: str, sender: str) -> CellResult:
        """Send one message through `sender` to `receiver`, then classify and judge it."""
        began = time.perf_counter()
        expected = self.loaded.expectation(receiver, sender)
        driver, endpoint = self._driver(sender), self.lab.endpoint(receiver)
        # a sender we cannot look inside bounces to the lab zone and is watched from outside
        zone = zone_of(endpoint) if isinstance(driver, ExternalSender) else None
        message = build_message(receiver, sender, endpoint.domain, zone)
        since = time.time()
        report = driver.send(message, self.lab, self.run_dir)
        directory = endpoint.evidence_dir
        watched, note = None, ""
        if isinstance(driver, ExternalSender) and report.action is SendAction.SUBMITTED:
            outside = watch(self.lab, receiver, message.message_id, driver.observe_seconds, since)
            sessions, arrivals = outside.sessions, outside.arrivals
            watched, note = outside.watched, describe_attempts(sessions)
        else:
            sessions = wait_for_sessions(directory, set(report.attempts))
            arrivals = find_arrivals(directory, message.message_id)
            note = _missing_sessions_note(report, sessions)
        portal = report.portal_path is not None and report.portal_path.exists()
        seen = classify(report, arrivals, portal, watched)
        verdict = judge(expected, seen.outcome, seen.tls)
        detail = seen.detail + note
        detail += failure_note(expected, verdict)
        result = CellResult(
            receiver=receiver,
            sender=sender,
            outcome=seen.outcome,
            expected=expected.outcome,
            expected_tls=_tls_expectation(expected),
            verdict=verdict,
            tls=seen.tls,
            received=arrivals[0].received if arrivals else None,
            detail=detail,
            study=expected.study,
            note=expected.note,
            message_id=message.message_id,
            sender_report=f"{report.action.value}: {report.reason}",
            sessions=tuple(summarise(r) for r in sessions),
            seconds=round(time.perf_counter() - began, 4),
        )
        self.results.append(result)
        return result

    def _driver(self, sender: str) -> SenderDriver:
        """Return the sender's driver, creating it (and any sender container) on first use."""
        with self._drivers_lock:
            if sender not in self.drivers:
                profile = self.loaded.senders[sender]
                self.drivers[sender] = make_driver(profile, self.lab, self.run_dir)
            return self.drivers[sender]

    def run_cells(
        self,
        cells: list[tuple[str, str]],
        jobs: int = 1,
        on_result: Callable[[CellResult], None] = lambda result: None,
    ) -> None:
        """Run cells, `jobs` at a time (cells are independent), reporting each as it finishes."""
        if jobs <= 1:
            for receiver, sender in cells:
                on_result(self.run_cell(receiver, sender))
            return
        pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cell")
        try:
            futures = [pool.submit(self.run_cell, receiver, sender) for receiver, sender in cells]
            for future in as_completed(futures):
                on_result(future.result())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def report(self, stopped_by: str = "") -> RunReport:
        """Return the RunReport of the cells run so far, in suite order, with those not run."""
        suite = self.loaded.suite
        order = {cell: i for i, cell in enumerate(suite.cell_ids)}
        results = sorted(self.results, key=lambda r: order.get((r.receiver, r.sender), 0))
        ran = {(r.receiver, r.sender) for r in results}
        finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        backend = self.lab.backend
        not_run = tuple(
            CellRef(receiver=r, sender=s, study=self.loaded.expectation(r, s).study)
            for r, s in suite.cell_ids
            if (r, s) not in ran
        )
        report = RunReport(
            suite=suite.id,
            title=suite.title,
            backend=backend,
            run_id=self.run_id,
            started=self.started,
            finished=finished,
            receivers=suite.receivers,
            senders=tuple(
                SenderInfo(id=p.id, driver=p.driver, description=p.description, models=p.models)
                for p in self.loaded.senders.values()
            ),
            receiver_info=tuple(receiver_info(spec) for spec in self.loaded.receivers.values()),
            results=tuple(results),
            complete=not not_run and not stopped_by,
            stopped_by=stopped_by,
            not_run=not_run,
            provenance=provenance.collect(self.loaded.path, backend, self.started, finished),
        )
        return report.model_copy(update={"headline": headline.evaluate(suite.headline, report)})


def receiver_info(spec: ReceiverSpec) -> ReceiverInfo:
    """Return the facts a report shows about a receiver: certificate, TLS range, STARTTLS."""
    return ReceiverInfo(
        id=spec.id,
        description=spec.description,
        certificate=spec.certificate,
        tls_min=spec.tls_min,
        tls_max=spec.tls_max,
        starttls=spec.starttls,
        domain=spec.domain,
    )


def _tls_expectation(expected: CellExpectation) -> str | None:
    """Return the TLS part of an expectation as text: a version, `plaintext`, `any` or None."""
    tls = expected.tls
    return tls.value if isinstance(tls, TlsVersion) else tls


def _missing_sessions_note(report: SendReport, sessions: list[dict[str, Any]]) -> str:
    """Return a note when the receiver recorded fewer sessions than the sender opened."""
    if len(sessions) < len(report.attempts):
        return f"; receiver recorded {len(sessions)} of {len(report.attempts)} sessions"
    return ""


def backend_named(name: str) -> Backend:
    """Return a backend instance by name, or raise BackendError listing the known ones."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend '{name}'", f"use one of {sorted(BACKENDS)}")
    return BACKENDS[name]()


@contextlib.contextmanager
def open_run(
    loaded: LoadedSuite, backend: Backend, certs: Path, reports: Path, run_id: str | None = None
) -> Iterator[LabRun]:
    """Make certificates, start the suite's receivers and yield a LabRun; always stop them."""
    run_id = run_id or new_run_id(loaded.suite.id, backend.name)
    run_dir = reports / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    specs = list(loaded.receivers.values())
    pki = ensure_certs(specs, certs)
    with backend.start(specs, pki, run_dir / "evidence") as lab:
        yield LabRun(loaded, lab, run_dir, run_id)
