"""Long-lived sender workers in a sender container: one JSON job line in, one reply line out.

The protocol (harness.senders.remote --serve is the worker): the host's first line is
`{"hello": 1}` and the worker answers `{"ready": true, "pid": N}` (N: its id in the container);
then each job is `{"seq": n, "job": {...}}` and its reply `{"seq": n, "report": {...}}` or
`{"seq": n, "error": "..."}`. EOF on the worker's standard input ends it.

Lanes: a worker runs one job at a time; concurrent cells of one sender each take an idle worker
or start one more, so a sender has as many workers as it had cells at once (at most the run's
`--jobs`), each reused for its later cells. A worker that ended, broke the protocol or overran
its job's bound is stopped and dropped (that job is a lab failure); the next job starts a fresh one.
A pool with `patience` starts another worker only for a job that found the live ones busy for
that long (a worker still starting is waited for): each worker is an interpreter to boot, and
short jobs are served sooner by the worker that is already there.
"""

from __future__ import annotations

import contextlib
import json
import threading
from typing import Any

from lab.backends.base import LineChannel, SenderHost

READY_SECONDS = 60.0  # a worker's interpreter start and imports, on a loaded machine
JOB_SECONDS = 120.0  # one job, with every MX host, timeout and retry of the sender's own
EXIT_SECONDS = 3.0  # for a worker to end after EOF before it is killed


class WorkerFailed(Exception):
    """The worker could not run the job to a reply: a lab failure, never the sender's verdict."""


class Worker:
    """One long-lived worker process and the job numbers it has answered."""

    def __init__(self, host: SenderHost, argv: list[str], ready_seconds: float) -> None:
        """Start the worker and wait (bounded) for its ready line."""
        self.host = host
        self.channel: LineChannel = host.open_channel(argv)
        self.pid = 0
        try:
            self.channel.write_line(json.dumps({"hello": 1}))
            hello = json.loads(self.channel.read_line(ready_seconds))
            if not isinstance(hello, dict) or hello.get("ready") is not True:
                raise WorkerFailed(f"the worker's first line is not its ready line: {hello!r:.200}")
            self.pid = int(hello["pid"])
        except WorkerFailed:
            self.stop()
            raise
        except Exception as error:  # a timeout, EOF, bad JSON: the engine's or the worker's
            tail = self.channel.stderr_tail()
            self.stop()
            raise WorkerFailed(f"the worker did not start: {error}; stderr: {tail}") from None

    def run(self, seq: int, job: dict[str, Any], seconds: float) -> dict[str, Any]:
        """Send one job and return its reply's payload; raise WorkerFailed on anything else."""
        try:
            self.channel.write_line(json.dumps({"seq": seq, "job": job}))
            line = self.channel.read_line(seconds)
        except TimeoutError:
            raise WorkerFailed(f"the job did not finish within {seconds:g} s") from None
        except Exception as error:  # EOF (the worker crashed), a dropped stream
            raise WorkerFailed(f"the worker failed during the job: {error}") from None
        try:
            reply = json.loads(line)
        except ValueError:
            raise WorkerFailed(f"the worker's reply is not JSON: {line[:200]!r}") from None
        if not isinstance(reply, dict) or reply.get("seq") != seq:
            raise WorkerFailed(f"the worker's reply is not the reply to job {seq}: {line[:200]!r}")
        if "error" in reply:
            raise WorkerFailed(f"the job raised in the worker: {str(reply['error'])[-600:]}")
        report = reply.get("report")
        if not isinstance(report, dict):
            raise WorkerFailed(f"the worker's reply has no report: {line[:200]!r}")
        return report

    def stop(self, seconds: float = 0.0) -> None:
        """End the worker: EOF, up to `seconds` to exit, then SIGKILL in the container."""
        if self.channel.close(seconds) or not self.pid:
            return
        with contextlib.suppress(Exception):  # the container is gone: nothing left to stop
            # a hung worker never reads its EOF; `kill` is the shell's own builtin
            self.host.exec(["sh", "-c", f"kill -KILL {self.pid} 2>/dev/null; true"])


class WorkerPool:
    """The workers of one sender container: one per concurrent job, each reused, all closed."""

    def __init__(
        self,
        host: SenderHost,
        argv: list[str],
        ready_seconds: float = READY_SECONDS,
        job_seconds: float = JOB_SECONDS,
        most: int | None = None,
        patience: float = 0.0,
    ) -> None:
        """Run jobs with `argv` (a worker speaking the protocol above) in `host`.

        `most` caps the live workers: a job that finds all of them busy waits for one to be
        given back (or dropped) instead of starting another interpreter. `patience` (seconds)
        is how long a job waits for a busy worker before it starts another (under `most`).
        """
        self.host, self.argv = host, argv
        self.ready_seconds, self.job_seconds = ready_seconds, job_seconds
        self.most, self.patience = most, patience
        self._idle: list[Worker] = []
        self._busy: set[Worker] = set()
        self._starting = 0  # workers being started, counted against `most`
        self._lock = threading.Condition()
        self._seq = 0
        self._closed = False
        self.started = 0  # how many workers this pool started (restarts included)

    def allow(self, more: int) -> None:
        """Raise the cap on live workers by `more` (a capped pool only)."""
        with self._lock:
            if self.most is not None:
                self.most += more
                self._lock.notify_all()

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run one job on an idle (or a new) worker; raise WorkerFailed when it has no reply."""
        worker, seq = self._take()
        try:
            report = worker.run(seq, job, self.job_seconds)
        except WorkerFailed:
            self._drop(worker)
            raise
        self._give_back(worker)
        return report

    def close(self) -> None:
        """Stop every worker; a job still running gets EOF and its worker is killed."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            workers, self._idle = [*self._idle, *self._busy], []
            self._busy.clear()
        for worker in workers:
            worker.channel.close_input()  # every worker sees EOF at once, then each is awaited
        for worker in workers:
            worker.stop(EXIT_SECONDS)

    def _take(self) -> tuple[Worker, int]:
        """Return a live idle worker (or a newly started one) and the next job number."""
        while True:
            with self._lock:
                self._be_patient()
                self._lock.wait_for(self._may_take)
                if self._closed:
                    raise WorkerFailed("the sender's workers are closed (the run is ending)")
                self._seq += 1
                seq = self._seq
                worker = self._idle.pop() if self._idle else None
                if worker is None:
                    self._starting += 1
                else:
                    self._busy.add(worker)  # in the same step: the cap always holds
            if worker is not None and worker.channel.ended():
                self._drop(worker)  # it died while idle: replace it, no job was lost
                continue
            if worker is None:
                try:
                    worker = Worker(self.host, self.argv, self.ready_seconds)
                finally:
                    with self._lock:
                        self._starting -= 1
                        self._lock.notify_all()
                        if worker is not None:
                            self.started += 1
                            self._busy.add(worker)  # in the same step: the cap always holds
            if self._closed:
                self._drop(worker)
                raise WorkerFailed("the sender's workers are closed (the run is ending)")
            return worker, seq

    def _be_patient(self) -> None:
        """With the lock held: wait for a live worker (one starting, then `patience` s) to be free.

        A worker still starting serves the job that started it, then comes back, so a job waits
        for every start in progress (each bounded by `ready_seconds`) before its own clock runs.
        """
        if self.patience <= 0:
            return
        self._lock.wait_for(lambda: self._free_or_none() or not self._starting)
        self._lock.wait_for(self._free_or_none, self.patience)

    def _free_or_none(self) -> bool:
        """Return whether a job need not wait: closed, an idle worker, or no live worker at all."""
        return self._closed or bool(self._idle) or not (self._busy or self._starting)

    def _may_take(self) -> bool:
        """Return whether a job may go on: closed, an idle worker, or room for one more."""
        live = len(self._busy) + self._starting
        return self._closed or bool(self._idle) or self.most is None or live < self.most

    def _give_back(self, worker: Worker) -> None:
        """Put a worker that answered back on the idle list."""
        with self._lock:
            self._busy.discard(worker)
            self._lock.notify_all()
            if not self._closed:
                self._idle.append(worker)
                return
        worker.stop()

    def _drop(self, worker: Worker) -> None:
        """Stop a worker whose job failed; the next job starts a fresh one."""
        with self._lock:
            self._busy.discard(worker)
            self._lock.notify_all()
        worker.stop()
