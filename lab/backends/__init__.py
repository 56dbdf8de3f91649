"""Backends run receivers: `local` (default, no Docker) and, later, `docker`."""

from lab.backends.attached import AttachedBackend
from lab.backends.base import Backend, BackendError, RunningLab
from lab.backends.docker import DockerBackend
from lab.backends.local import LocalBackend

BACKENDS: dict[str, type[LocalBackend] | type[DockerBackend] | type[AttachedBackend]] = {
    "local": LocalBackend,
    "docker": DockerBackend,
    "attached": AttachedBackend,  # the receivers of a running `tlslab up` (e.g. --public)
}

__all__ = ["BACKENDS", "Backend", "BackendError", "LocalBackend", "RunningLab"]
