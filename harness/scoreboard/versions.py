"""Software versions read from the running senders' containers, never written down by hand."""

from __future__ import annotations

import dataclasses
import re
import ssl
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from harness.scoreboard.model import SoftwareVersion
from lab.backends.base import SenderHost

PROBE_SECONDS = 10
IN_PROCESS = ("reference", "rfc")  # drivers that run inside the harness (rfc: always)
UNKNOWN = "unknown"


@dataclasses.dataclass(frozen=True)
class Probe:
    """A command run in a sender's container and the pattern whose group 1 is the version."""

    software: str
    argv: tuple[str, ...]
    pattern: str


# per driver: what its container runs and how to ask each part for its version
PROBES: dict[str, tuple[Probe, ...]] = {
    "postfix": (
        Probe("Postfix", ("postconf", "-d", "-h", "mail_version"), r"^(\d[\w.-]*)\s*$"),
        Probe("OpenSSL", ("openssl", "version"), r"OpenSSL (\S+)"),
    ),
    "exim": (
        Probe("Exim", ("sh", "-c", "exim4 -bV || exim -bV"), r"Exim version (\S+)"),
        # `exim -bV` names GnuTLS without a version: ask for the library package it loads
        Probe("GnuTLS", ("dpkg-query", "-W", "-f", "${Version}", "libgnutls30"), r"^(\d\S*)"),
    ),
    "rfc": (),  # runs in the harness process: in_process()
    "reference": (
        Probe(
            "OpenSSL (Python ssl)",
            ("python", "-c", "import ssl; print(ssl.OPENSSL_VERSION)"),
            r"OpenSSL (\S+)",
        ),
    ),
}


@runtime_checkable
class HostedDriver(Protocol):
    """A driver whose sender software runs on a host of the lab (a container on Docker)."""

    id: str
    host: SenderHost


def probe(host: SenderHost, item: Probe, sender: str) -> SoftwareVersion:
    """Run one probe on a host; a failed or unreadable answer is recorded as `unknown (why)`."""
    command = " ".join(item.argv)
    try:
        status, output = host.exec(["timeout", str(PROBE_SECONDS), *item.argv])
    except Exception as error:  # the engine's errors (e.g. the container died)
        status, output = -1, f"{type(error).__name__}: {error}"
    found = re.search(item.pattern, output, re.MULTILINE)
    if status == 0 and found:
        version = found[1]
    else:
        version = f"{UNKNOWN} (exit {status}: {output.strip()[-120:]})"
    return SoftwareVersion(software=item.software, version=version, sender=sender, command=command)


def read_versions(
    drivers: Mapping[str, object], driver_of: Mapping[str, str]
) -> list[SoftwareVersion]:
    """Return the versions of each driver's software, asked once per driver (its first sender)."""
    found: list[SoftwareVersion] = []
    asked: set[str] = set()
    for sender, kind in driver_of.items():  # in column order
        driver = drivers.get(sender)
        if driver is None or kind in asked or kind not in PROBES:
            continue
        asked.add(kind)
        if isinstance(driver, HostedDriver):
            found += [probe(driver.host, item, sender) for item in PROBES[kind]]
        elif kind in IN_PROCESS:  # the reference driver runs in this process (local backend)
            found.append(in_process(sender))
    return found


def in_process(sender: str) -> SoftwareVersion:
    """Return the OpenSSL version of this process's ssl module, which the reference driver uses."""
    found = re.search(r"OpenSSL (\S+)", ssl.OPENSSL_VERSION)
    return SoftwareVersion(
        software="OpenSSL (harness process)",
        version=found[1] if found else ssl.OPENSSL_VERSION,
        sender=sender,
        command="ssl.OPENSSL_VERSION in the harness process",
    )


__all__ = ["PROBES", "Probe", "read_versions"]
