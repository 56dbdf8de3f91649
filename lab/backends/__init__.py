"""Backends run receivers: `local` (default, no Docker) and, later, `docker`."""

from lab.backends.base import Backend, BackendError, RunningLab
from lab.backends.docker import DockerBackend
from lab.backends.local import LocalBackend

BACKENDS: dict[str, type[LocalBackend] | type[DockerBackend]] = {
    "local": LocalBackend,
    "docker": DockerBackend,
}

__all__ = ["BACKENDS", "Backend", "BackendError", "LocalBackend", "RunningLab"]
