"""A sender container of a Docker run: commands and line channels into it."""

from __future__ import annotations

import threading
from typing import Any

from lab.backends.base import LineChannel
from lab.backends.docker_channel import DockerChannel
from lab.backends.docker_ready import log_tail


class DockerSenderHost:
    """A sender container: runs commands inside it."""

    def __init__(self, container: Any, address: str, warm: DockerChannel | None = None) -> None:
        """Wrap a running container; `warm` is its warm command, already started, if any."""
        self.container, self.address = container, address
        self.name = container.name
        self._warm = warm
        self._warm_lock = threading.Lock()

    def exec(self, argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
        """Run a command in the container; return (exit status, combined output)."""
        result = self.container.exec_run(argv, environment=env or {}, demux=False)
        return int(result.exit_code), (result.output or b"").decode("utf-8", "replace")

    def logs(self, tail: int) -> str:
        """Return the container's last `tail` log lines on one line."""
        return log_tail(self.container, tail)

    def open_channel(self, argv: list[str], env: dict[str, str] | None = None) -> LineChannel:
        """Start `argv` in the container with `docker exec -i`; return its line channel.

        The first ask for the warm command (same argv, no environment) gets it, already started.
        """
        with self._warm_lock:
            warm = self._warm
            if warm is not None and not env and warm.argv == argv:
                self._warm = None
                return warm
        return DockerChannel(self.container, argv, env)

    def close_warm(self) -> None:
        """Close the warm command's channel if nobody took it (the process reads EOF)."""
        with self._warm_lock:
            warm, self._warm = self._warm, None
        if warm is not None:
            warm.close()
