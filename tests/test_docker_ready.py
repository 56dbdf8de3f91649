"""The ready wait on a real container: it follows the output, so it returns as the line appears."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.backends.base import BackendError
from lab.backends.docker import RUN_LABEL
from lab.backends.docker_images import choose_base
from lab.backends.docker_ready import await_ready_line


@pytest.fixture
def start(docker_engine: Any) -> Iterator[Any]:
    """Start throwaway shell containers on the base image; remove them after the test."""
    started: list[Any] = []

    def run(script: str) -> Any:
        container = docker_engine.containers.run(
            choose_base(docker_engine), ["sh", "-c", script], detach=True,
            network_mode="none", labels={RUN_LABEL: "test-ready"},
        )  # fmt: skip
        started.append(container)
        return container

    yield run
    for container in started:
        container.remove(force=True)


def test_the_wait_ends_when_the_ready_line_is_printed(start: Any) -> None:
    """A line printed after 1 s ends the wait then, long before its 30 s bound."""
    container = start("""sleep 1; echo starting; echo '{"ready": true}'; sleep 60""")
    began = time.monotonic()
    await_ready_line(container, "slow starter", 30)
    assert 0.9 < time.monotonic() - began < 15


def test_a_container_that_exits_without_the_line_is_named_with_its_log(start: Any) -> None:
    """Exiting first is an error naming the container's last words, at once, not at the bound."""
    container = start("echo 'port 25 in use' >&2; exit 3")
    began = time.monotonic()
    with pytest.raises(BackendError, match=r"broken container exited: .*port 25 in use"):
        await_ready_line(container, "broken", 30)
    assert time.monotonic() - began < 15


def test_a_silent_container_fails_at_the_bound(start: Any) -> None:
    """No ready line within the bound: an error after the bound, the container still running."""
    container = start("echo '{\"ready\": false}'; sleep 60")  # control: a near miss is no match
    began = time.monotonic()
    with pytest.raises(BackendError, match=r"silent container not ready after 2 s"):
        await_ready_line(container, "silent", 2)
    assert 1.9 < time.monotonic() - began < 10
