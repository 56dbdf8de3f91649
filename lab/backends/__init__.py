"""Backends run receivers: `local` (default, no Docker), `docker` and `attached`."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from lab.backends.base import Backend, BackendError, RunningLab
from lab.backends.local import LocalBackend

if TYPE_CHECKING:
    from lab.backends.attached import AttachedBackend
    from lab.backends.docker import DockerBackend

BackendClass = type[LocalBackend] | type["DockerBackend"] | type["AttachedBackend"]
# name -> (module, class): a backend's module (Docker's pulls in DNS and the engine client) is
# imported when that backend is asked for
_WHERE = {
    "local": ("lab.backends.local", "LocalBackend"),
    "docker": ("lab.backends.docker", "DockerBackend"),
    "attached": ("lab.backends.attached", "AttachedBackend"),  # a running `tlslab up`'s receivers
}


class _Backends(Mapping[str, BackendClass]):
    """The backend classes by name, each imported on first lookup."""

    def __getitem__(self, name: str) -> BackendClass:
        """Return the class of backend `name` (KeyError for a name no backend has)."""
        module, attribute = _WHERE[name]
        found: BackendClass = getattr(importlib.import_module(module), attribute)
        return found

    def __iter__(self) -> Iterator[str]:
        """Iterate the backend names."""
        return iter(_WHERE)

    def __len__(self) -> int:
        """Return how many backends there are."""
        return len(_WHERE)


BACKENDS: Mapping[str, BackendClass] = _Backends()


def __getattr__(name: str) -> Any:
    """Return DockerBackend or AttachedBackend, importing its module when first asked."""
    for backend, (_module, attribute) in _WHERE.items():
        if attribute == name:
            return BACKENDS[backend]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["BACKENDS", "Backend", "BackendError", "LocalBackend", "RunningLab"]
