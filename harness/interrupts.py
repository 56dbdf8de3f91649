"""Terminated: SIGTERM raised like Ctrl-C, one class whichever way `tlslab` was started."""

from __future__ import annotations


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every started resource is cleaned up."""


def interrupt(signum: int, frame: object) -> None:
    """Turn SIGTERM into Terminated (a KeyboardInterrupt) so every resource is cleaned up."""
    raise Terminated


def stop_name(stop: KeyboardInterrupt) -> str:
    """Return the signal that stopped a run: `SIGTERM` for Terminated, else `SIGINT`."""
    return "SIGTERM" if isinstance(stop, Terminated) else "SIGINT"
