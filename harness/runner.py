"""Run cells: send one message per cell, collect the receiver's evidence, classify, judge."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path

from harness import cell_pool, headline, provenance
from harness.arrivals import find_arrivals
from harness.attempts import session_trail
from harness.cell_notes import (
    blame_the_store,
    certificate_rejection_note,
    missing_proxy_note,
    missing_sessions_note,
    receiver_info,
    summarise,
    tls_expectation,
)
from harness.classify import classify, judge
from harness.dane_evidence import dane_evidence
from harness.downgrade import DOWNGRADE_NOTE, find_downgrade
from harness.expectations import failure_note
from harness.model import (
    CellRef,
    CellResult,
    Outcome,
    RunReport,
    SenderInfo,
    Verdict,
    cell_id,
)
from harness.observe import bounce_address, describe_attempts, watch, zone_of
from harness.proxy_evidence import describe_proxy, receiver_peers, wait_for_proxy_records
from harness.scenarios import LoadedSuite
from harness.senders import SenderDriver, TestMessage, driver_of, open_driver
from harness.senders.base import SendAction
from lab.backends import RunningLab
from lab.evidence_index import forget_folder
from lab.evidence_watch import WakingEvent, wait_until
from lab.session_facts import SessionFacts, session_facts_where

__all__ = [  # the cell notes' helpers stay importable from here, where they used to live
    "LabRun",
    "build_message",
    "certificate_rejection_note",
    "receiver_info",
    "summarise",
    "wait_for_sessions",
]

SESSION_WAIT = 5.0
MAIL_FROM_DOMAIN = "sender.lab.test"


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


def wait_for_sessions(
    directory: Path, peers: set[tuple[str, int]], since: float = 0.0
) -> list[SessionFacts]:
    """Return the session records of the given peers begun at or after `since`, waiting (bounded).

    A source port the system handed out again is another cell's peer too: a session begun before
    this cell sent is never its own. The records are read again only when the evidence folder
    changes (lab.evidence_watch).
    """

    def found() -> list[SessionFacts]:
        return session_facts_where(
            directory, lambda key: (key.peer_ip, key.peer_port) in peers and key.started >= since
        )

    return wait_until([directory], found, lambda records: len(records) >= len(peers), SESSION_WAIT)


class LabRun:
    """One run of a suite on a running lab: runs cells and assembles the RunReport."""

    def __init__(self, loaded: LoadedSuite, lab: RunningLab, run_dir: Path, run_id: str) -> None:
        """Bind the run to its suite, lab and output folder."""
        self.loaded, self.lab, self.run_dir, self.run_id = loaded, lab, run_dir, run_id
        self.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.results: list[CellResult] = []
        self.drivers: dict[str, SenderDriver] = {}
        self._drivers_lock = threading.Lock()
        self._sender_locks: dict[str, threading.Lock] = {}
        self.stopping = WakingEvent()  # set when run_cells is interrupted: watches end at once

    def close(self) -> None:
        """Close every driver this run opened (a relay's temporary key goes), each exactly once."""
        with self._drivers_lock:
            drivers, self.drivers = list(self.drivers.values()), {}
        errors = []
        for driver in drivers:
            try:
                driver.close()
            except Exception as error:  # one driver's failure must not keep the others open
                errors.append(error)
        if errors:
            raise errors[0]

    def run_cell(self, receiver: str, sender: str) -> CellResult:
        """Run one cell; a crash anywhere in it makes an `error` cell with its traceback."""
        began = time.perf_counter()
        try:
            result = self._run_cell(receiver, sender, began)
        except Exception:
            result = self._crashed_cell(receiver, sender, began, traceback.format_exc())
        self.results.append(result)
        return result

    def _crashed_cell(self, receiver: str, sender: str, began: float, trace: str) -> CellResult:
        """Return the `error` result of a cell whose run raised, its traceback in `detail`."""
        expected = self.loaded.expectation(receiver, sender)
        return CellResult(
            receiver=receiver,
            sender=sender,
            outcome=Outcome.ERROR,
            expected=expected.outcome,
            expected_tls=tls_expectation(expected),
            verdict=Verdict.ERROR,
            detail=f"lab failure: the harness crashed in this cell:\n{trace.rstrip()}",
            study=expected.study,
            sender_report="not run to the end: the harness crashed",
            seconds=round(time.perf_counter() - began, 4),
        )

    def _run_cell(self, receiver: str, sender: str, began: float) -> CellResult:
        """Send one message through `sender` to `receiver`, then classify and judge it."""
        return cell_pool.drive(self._cell(receiver, sender, began))

    def _cell(self, receiver: str, sender: str, began: float) -> cell_pool.Cell:
        """Run one cell, pausing (one yield) between an external sender's submission and its watch.

        The generator's return value (StopIteration.value) is the CellResult.
        """
        expected = self.loaded.expectation(receiver, sender)
        driver, endpoint = self._driver(sender), self.lab.endpoint(receiver)
        # a sender we cannot look inside bounces to the lab zone and is watched from outside
        profile = self.loaded.senders[sender]
        outside_for = driver_of(profile).watch_seconds(profile)
        zone = zone_of(endpoint) if outside_for is not None else None
        message = build_message(receiver, sender, endpoint.domain, zone)
        since = time.time()
        report = driver.send(message)
        directory = endpoint.evidence_dir
        watched, note = None, ""
        if outside_for is not None and report.action is SendAction.SUBMITTED:
            yield  # submitted: the watch may go on in another thread, alongside other watches
            message_id = message.message_id
            outside = watch(self.lab, receiver, message_id, outside_for, since, self.stopping)
            sessions, arrivals = outside.sessions, outside.arrivals
            watched, note = outside.watched, describe_attempts(sessions)
        else:
            peers, proxy_note = set(report.attempts), ""
            if self.loaded.receivers[receiver].proxy is not None:
                crossed = wait_for_proxy_records(directory, peers)  # the sender met the proxy
                peers, proxy_note = receiver_peers(crossed), describe_proxy(crossed)
                proxy_note += missing_proxy_note(report, crossed)
            sessions = wait_for_sessions(directory, peers, since)
            arrivals = find_arrivals(directory, message.message_id, zone_of(endpoint))
            note = missing_sessions_note(len(peers), sessions) + proxy_note
            note += session_trail(sessions, len(endpoint.mx))
        portal = report.portal_path is not None and report.portal_path.exists()
        seen = classify(report, arrivals, portal, watched)
        if not arrivals:
            complete = watched is None and len(sessions) >= len(report.attempts)
            seen = blame_the_store(seen, directory, sessions, None if complete else since)
        verdict = judge(expected, seen.outcome, seen.tls)
        downgrade = (
            find_downgrade(sessions, arrivals) if seen.outcome is Outcome.DELIVERED else None
        )
        detail = seen.detail + (DOWNGRADE_NOTE if downgrade else "") + note
        detail += certificate_rejection_note(seen.outcome, sessions)
        detail += failure_note(expected, verdict)
        return CellResult(
            receiver=receiver,
            sender=sender,
            outcome=seen.outcome,
            expected=expected.outcome,
            expected_tls=tls_expectation(expected),
            verdict=verdict,
            tls=seen.tls,
            received=seen.received,
            detail=detail,
            study=expected.study,
            note=expected.note,
            message_id=message.message_id,
            sender_report=f"{report.action.value}: {report.reason}",
            sessions=tuple(summarise(r) for r in sessions),
            downgraded=downgrade is not None,
            downgrade=downgrade,
            seconds=round(time.perf_counter() - began, 4),
            dane=dane_evidence(self.lab, endpoint),
        )

    def _driver(self, sender: str) -> SenderDriver:
        """Return the sender's driver, creating it (and any sender container) on first use.

        Each sender has its own lock, so the containers of different senders start at once.
        """
        with self._drivers_lock:
            lock = self._sender_locks.setdefault(sender, threading.Lock())
        with lock:
            if sender not in self.drivers:
                profile = self.loaded.senders[sender]
                self.drivers[sender] = open_driver(profile, self.lab, self.run_dir)
            return self.drivers[sender]

    def run_cells(
        self,
        cells: list[tuple[str, str]],
        jobs: int = 1,
        on_result: Callable[[CellResult], None] = lambda result: None,
    ) -> None:
        """Run cells, `jobs` at a time, reporting each as it finishes (harness.cell_pool).

        Once a receiver's last cell here finished, its evidence indexes are dropped: what the
        process keeps does not grow with the receivers already done.
        """
        left = Counter(receiver for receiver, _ in cells)

        def finished(result: CellResult) -> None:
            left[result.receiver] -= 1
            if not left[result.receiver] and result.receiver in self.loaded.receivers:
                forget_folder(self.lab.endpoint(result.receiver).evidence_dir)
            on_result(result)

        cell_pool.run_cells(self, cells, jobs, finished)

    def submit_cell(
        self, receiver: str, sender: str, watchers: ThreadPoolExecutor
    ) -> CellResult | Future[CellResult]:
        """Run a cell up to its submission; return its result, or the future of its watch."""
        began = time.perf_counter()
        steps = self._cell(receiver, sender, began)
        try:
            next(steps)
        except StopIteration as done:
            result: CellResult = done.value  # not submitted: nothing to watch
        except Exception:
            result = self._crashed_cell(receiver, sender, began, traceback.format_exc())
        else:
            return watchers.submit(self._finish_watch, receiver, sender, began, steps)
        self.results.append(result)
        return result

    def _finish_watch(
        self, receiver: str, sender: str, began: float, steps: cell_pool.Cell
    ) -> CellResult:
        """Watch a submitted cell to its end (in a watcher thread); record its result."""
        try:
            result = cell_pool.drive(steps)
        except Exception:
            result = self._crashed_cell(receiver, sender, began, traceback.format_exc())
        self.results.append(result)
        return result

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
