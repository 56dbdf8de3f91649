"""External tools the tests drive: skip naming what is missing, or fail when it is required.

`LAB_REQUIRE_TOOLS=1` (set by `.ci/run`) turns every "tool missing" skip into a failure: the
Docker engine, openssl, swaks and its TLS support, Postfix for the bench comparison, the Debian
packages the Exim image is built from, and any tool a later test drives. `LAB_REQUIRE_DOCKER=1`
requires the Docker engine only. Every skip in the tests goes through `missing()`
(tests/test_tools.py checks that), so no switch can be forgotten.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NoReturn

import pytest

REQUIRE_TOOLS = "LAB_REQUIRE_TOOLS"
REQUIRE_DOCKER = "LAB_REQUIRE_DOCKER"
SWAKS_TLS_LINE = "=== TLS supported"
PROBE_TIMEOUT = 30.0


def required(*, docker: bool = False) -> bool:
    """Return whether a missing tool fails: LAB_REQUIRE_TOOLS=1 (Docker also: ..._DOCKER=1)."""
    if os.environ.get(REQUIRE_TOOLS) == "1":
        return True
    return docker and os.environ.get(REQUIRE_DOCKER) == "1"


def missing(
    what: str, fix: str, *, docker: bool = False, node: pytest.Item | pytest.Collector | None = None
) -> NoReturn:
    """Skip naming what is missing and how to get it; fail instead when the tool is required.

    With `node` (a module or class), a skip also marks it so its remaining tests skip at once.
    """
    switch = REQUIRE_TOOLS if os.environ.get(REQUIRE_TOOLS) == "1" else REQUIRE_DOCKER
    if required(docker=docker):
        pytest.fail(f"{switch}=1 but {what} ({fix})", pytrace=False)
    reason = f"{what} ({fix}); {REQUIRE_TOOLS}=1 fails instead"
    if node is not None:
        node.add_marker(pytest.mark.skip(reason=reason))
    pytest.skip(reason)


def require_tool(tool: str, package: str) -> str:
    """Return the tool's path, or call missing() naming the Debian package that provides it."""
    path = shutil.which(tool)
    if path is None:
        missing(f"`{tool}` is not installed", f"make system-deps, or apt-get install -y {package}")
    return path


def require_swaks_tls() -> str:
    """Return swaks' path once `swaks --support` says it speaks TLS, else call missing()."""
    swaks = require_tool("swaks", "swaks")
    try:
        done = subprocess.run(
            [swaks, "--support"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        missing(f"`{swaks} --support` did not answer", "reinstall swaks")
    support = (done.stdout + done.stderr).decode(errors="replace")
    if SWAKS_TLS_LINE not in support.splitlines():
        missing(
            "swaks has no TLS support", "make system-deps, or apt-get install -y libnet-ssleay-perl"
        )
    return swaks


def require_apt_packages(packages: tuple[str, ...], why: str) -> None:
    """Call missing() unless the host's apt can download every package (its lists know them)."""
    apt = require_tool("apt-cache", "apt")
    try:
        done = subprocess.run(
            [apt, "show", "--no-all-versions", *packages],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        missing("`apt-cache show` did not answer", "check the host's apt")
    if done.returncode != 0:
        missing(f"apt cannot download {why}", "make system-deps (it runs apt-get update)")
