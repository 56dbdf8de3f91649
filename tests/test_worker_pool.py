"""Long-lived sender workers in a real container: round trips, and every failure a lab failure."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tools import missing

from harness.senders.worker_pool import WorkerFailed, WorkerPool
from lab.backends.base import BackendError
from lab.backends.docker import RUN_LABEL
from lab.backends.docker_channel import DockerChannel
from lab.backends.docker_images import choose_base
from lab.backends.docker_sender_host import DockerSenderHost

# a worker speaking the pool's protocol; a job's `do` picks how it behaves
WORKER = r"""
import json, os, sys, time
for line in sys.stdin:
    request = json.loads(line)
    if "hello" in request:
        print(json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
        continue
    seq, do = request["seq"], request["job"]["do"]
    if do == "crash":
        os._exit(3)
    if do == "hang":
        time.sleep(600)
    if do == "garble":
        print("not json at all", flush=True)
        continue
    if do == "slow":
        time.sleep(0.5)
    if do == "raise":
        print(json.dumps({"seq": seq, "error": "ValueError: planted"}), flush=True)
        continue
    print(json.dumps({"seq": seq, "report": {"echo": request["job"]["value"],
                                             "pid": os.getpid()}}), flush=True)
"""


@pytest.fixture
def host(docker_engine: Any) -> Iterator[DockerSenderHost]:
    """Return a sender host: a container of the lab's base image with no network."""
    try:
        image = choose_base(docker_engine)
    except BackendError as error:
        missing(f"no base image: {error}", "make docker-ready", docker=True)
    labels = {RUN_LABEL: f"worker-pool-test-{secrets.token_hex(4)}"}
    container = docker_engine.containers.run(
        image, ["sleep", "300"], detach=True, labels=labels, network_mode="none",
        user=f"{os.getuid()}:{os.getgid()}",
    )  # fmt: skip
    try:
        yield DockerSenderHost(container, "")
    finally:
        container.remove(force=True)


def pool_of(
    host: DockerSenderHost,
    job_seconds: float = 20.0,
    most: int | None = None,
    patience: float = 0.0,
) -> WorkerPool:
    """Return a pool running the test worker in `host`."""
    argv = ["python3", "-c", WORKER]
    return WorkerPool(
        host, argv, ready_seconds=30, job_seconds=job_seconds, most=most, patience=patience
    )


def worker_count(host: DockerSenderHost) -> int:
    """Return how many test workers run in the container now."""
    _, out = host.exec(["sh", "-c", "ps -eo args 2>/dev/null | grep -c '^python3 -c' || true"])
    return int(out.strip() or 0)


@pytest.mark.integration
def test_one_worker_answers_every_job_in_turn(host: DockerSenderHost) -> None:
    """Sequential jobs reuse one worker process: same pid, one start, replies in order."""
    pool = pool_of(host)
    try:
        replies = [pool.run({"do": "echo", "value": n}) for n in range(5)]
    finally:
        pool.close()
    assert [r["echo"] for r in replies] == [0, 1, 2, 3, 4]
    assert len({r["pid"] for r in replies}) == 1
    assert pool.started == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("crash", "failed during the job"),
        ("garble", "not JSON"),
        ("raise", "raised in the worker"),
    ],
)
def test_a_failing_job_is_a_lab_failure_and_the_next_job_gets_a_fresh_worker(
    host: DockerSenderHost, fault: str, said: str
) -> None:
    """Crash, garbage or an exception: WorkerFailed for that job only; the next one succeeds."""
    pool = pool_of(host)
    try:
        first = pool.run({"do": "echo", "value": "before"})
        with pytest.raises(WorkerFailed, match=said):
            pool.run({"do": fault})
        after = pool.run({"do": "echo", "value": "after"})
    finally:
        pool.close()
    assert after["echo"] == "after"
    assert after["pid"] != first["pid"], "the failed worker was reused"
    assert pool.started == 2  # control: the one before the fault served until it


@pytest.mark.integration
def test_a_hung_job_is_bounded_and_its_worker_killed(host: DockerSenderHost) -> None:
    """A job past its bound fails at the bound; the hung worker does not outlive the pool."""
    pool = pool_of(host, job_seconds=2.0)
    try:
        began = time.monotonic()
        with pytest.raises(WorkerFailed, match="did not finish within 2 s"):
            pool.run({"do": "hang"})
        took = time.monotonic() - began
        assert pool.run({"do": "echo", "value": 1})["echo"] == 1
    finally:
        pool.close()
    assert 2.0 <= took < 30.0, took
    deadline = time.monotonic() + 10
    while worker_count(host) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_count(host) == 0, "a worker is still running after the pool closed"


@pytest.mark.integration
def test_closing_the_pool_ends_its_idle_workers(host: DockerSenderHost) -> None:
    """EOF on close ends the workers; control: while open, the worker is running."""
    pool = pool_of(host)
    pool.run({"do": "echo", "value": 1})
    assert worker_count(host) == 1
    pool.close()
    deadline = time.monotonic() + 10
    while worker_count(host) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert worker_count(host) == 0
    with pytest.raises(WorkerFailed, match="closed"):
        pool.run({"do": "echo", "value": 2})


@pytest.mark.integration
@pytest.mark.parametrize(("most", "started"), [(1, {1}), (None, {4})])
def test_a_capped_pool_queues_jobs_for_its_workers(
    host: DockerSenderHost, most: int | None, started: set[int]
) -> None:
    """Four overlapping jobs: a pool capped at one worker runs them all on it, in turn; an
    uncapped pool (the control) starts a worker per job."""
    from concurrent.futures import ThreadPoolExecutor

    pool = pool_of(host, most=most)
    try:
        with ThreadPoolExecutor(max_workers=4) as jobs:
            replies = list(jobs.map(lambda n: pool.run({"do": "slow", "value": n}), range(4)))
    finally:
        pool.close()
    assert sorted(r["echo"] for r in replies) == [0, 1, 2, 3]
    assert {pool.started} == started
    assert len({r["pid"] for r in replies}) == pool.started


@pytest.mark.integration
@pytest.mark.parametrize(("patience", "do", "started"), [(5.0, "echo", 1), (0.1, "slow", 2)])
def test_a_patient_pool_starts_another_worker_only_for_a_job_kept_waiting(
    host: DockerSenderHost, patience: float, do: str, started: int
) -> None:
    """Overlapping quick jobs on a patient pool all wait for its one worker (even while it
    starts); the control: a job whose worker is busy longer than the patience starts another."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = 4 if do == "echo" else 2
    pool = pool_of(host, patience=patience)
    try:
        with ThreadPoolExecutor(max_workers=jobs) as threads:
            replies = list(threads.map(lambda n: pool.run({"do": do, "value": n}), range(jobs)))
    finally:
        pool.close()
    assert sorted(r["echo"] for r in replies) == list(range(jobs))
    assert pool.started == started
    assert len({r["pid"] for r in replies}) == started


def exit_status(channel: DockerChannel, seconds: float = 10.0) -> int | None:
    """Return the channel's process exit status once it ended (None if it runs on)."""
    deadline = time.monotonic() + seconds
    while (code := channel.exit_code()) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return code


@pytest.mark.integration
def test_the_first_worker_of_a_warm_host_is_the_process_started_with_it(
    host: DockerSenderHost,
) -> None:
    """A host's warm command serves the pool's first worker; the next worker is a new process."""
    argv = ["python3", "-c", WORKER]
    warm_channel = DockerChannel(host.container, argv)
    warm = DockerSenderHost(host.container, "", warm_channel)
    other = warm.open_channel(["python3", "-c", "import sys; sys.stdin.read()"])
    assert other is not warm_channel, "another command does not get the warm process"
    other.close()
    pool = pool_of(warm, most=2)
    try:
        first = pool.run({"do": "echo", "value": 1})
        assert exit_status(warm_channel, 0) is None, "the warm process serves the first worker"
        again = warm.open_channel(argv)
        assert again is not warm_channel, "the warm process is handed out once"
        again.close()
    finally:
        pool.close()
    assert first["echo"] == 1
    assert pool.started == 1
    assert exit_status(warm_channel) == 0, "the pool ended the warm process it was handed"


@pytest.mark.integration
def test_a_warm_process_nobody_took_is_closed(host: DockerSenderHost) -> None:
    """close_warm ends the warm process when no worker took it (its stdin reads EOF)."""
    warm_channel = DockerChannel(host.container, ["python3", "-c", WORKER])
    warm = DockerSenderHost(host.container, "", warm_channel)
    assert exit_status(warm_channel, 0.5) is None, "it runs until closed"
    warm.close_warm()
    assert exit_status(warm_channel) == 0
