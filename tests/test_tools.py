"""Suite hygiene: the "tool missing" switch (a skip, or a failure under LAB_REQUIRE_TOOLS=1)
reaches every skip, and `integration` modules patch none of the project's parts."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import tools

TESTS = Path(__file__).resolve().parent
PROJECT = TESTS.parent
NO_TLS_SUPPORT = "=== Basic AUTH supported\n*** TLS not available: requires Net::SSLeay\n"
TLS_SUPPORT = "=== Basic AUTH supported\n=== TLS supported\n"
# a skip or a tool probe written anywhere but tests/tools.py would bypass the switch
BYPASS = re.compile(r"pytest\.skip\(|mark\.skip|skipif|importorskip|shutil\.which\(")
INTEGRATION = "pytestmark = pytest.mark.integration"
PATCHING = re.compile(r"monkeypatch\.set(?:attr|item)\(|unittest\.mock|mock\.patch")


@pytest.fixture
def no_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tools.REQUIRE_TOOLS, raising=False)
    monkeypatch.delenv(tools.REQUIRE_DOCKER, raising=False)


def fake_swaks(directory: Path, support: str) -> Path:
    """Write a `swaks` whose `--support` prints `support`, first on a PATH of its own."""
    directory.mkdir()
    script = directory / "swaks"
    script.write_text(f"#!/bin/sh\nprintf '%s' '{support}'\n", encoding="utf-8")
    script.chmod(0o755)
    return script


@pytest.mark.usefixtures("no_switch")
def test_a_missing_tool_skips_without_the_switch_and_fails_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(pytest.skip.Exception, match=r"no-such-tool.*LAB_REQUIRE_TOOLS=1 fails"):
        tools.require_tool("no-such-tool", "no-such-package")
    monkeypatch.setenv(tools.REQUIRE_TOOLS, "1")
    with pytest.raises(pytest.fail.Exception, match="LAB_REQUIRE_TOOLS=1 but `no-such-tool`"):
        tools.require_tool("no-such-tool", "no-such-package")


@pytest.mark.usefixtures("no_switch")
def test_lab_require_docker_requires_docker_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tools.REQUIRE_DOCKER, "1")
    with pytest.raises(pytest.fail.Exception, match="LAB_REQUIRE_DOCKER=1 but no engine"):
        tools.missing("no engine", "make docker-ready", docker=True)
    with pytest.raises(pytest.skip.Exception, match="no swaks"):
        tools.missing("no swaks", "make system-deps")
    monkeypatch.setenv(tools.REQUIRE_TOOLS, "1")
    with pytest.raises(pytest.fail.Exception, match="LAB_REQUIRE_TOOLS=1 but no engine"):
        tools.missing("no engine", "make docker-ready", docker=True)


@pytest.mark.usefixtures("no_switch")
def test_a_swaks_without_tls_is_a_missing_tool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_swaks(tmp_path / "bin", NO_TLS_SUPPORT)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin")
    with pytest.raises(pytest.skip.Exception, match="libnet-ssleay-perl"):
        tools.require_swaks_tls()
    monkeypatch.setenv(tools.REQUIRE_TOOLS, "1")
    with pytest.raises(pytest.fail.Exception, match="swaks has no TLS support"):
        tools.require_swaks_tls()


@pytest.mark.usefixtures("no_switch")
def test_a_swaks_with_tls_is_returned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    swaks = fake_swaks(tmp_path / "bin", TLS_SUPPORT)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}/usr/bin:/bin")
    monkeypatch.setenv(tools.REQUIRE_TOOLS, "1")
    assert tools.require_swaks_tls() == str(swaks)


def test_every_skip_in_the_tests_goes_through_the_switch() -> None:
    own = {TESTS / "tools.py", Path(__file__).resolve()}
    bypasses = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(TESTS.glob("*.py"))
        if path not in own
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if BYPASS.search(line)
    ]
    assert bypasses == [], "use tools.missing() or tools.require_tool() instead"


def system_deps_check(path: str) -> subprocess.CompletedProcess[str]:
    """Run `.ci/system-deps --check` with the given PATH; it only reports, never installs."""
    return subprocess.run(
        [str(PROJECT / ".ci" / "system-deps"), "--check"],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_system_deps_checks_swaks_tls_support_not_only_the_binary(tmp_path: Path) -> None:
    fake_swaks(tmp_path / "no-tls", NO_TLS_SUPPORT)
    fake_swaks(tmp_path / "tls", TLS_SUPPORT)
    without = system_deps_check(f"{tmp_path / 'no-tls'}:/usr/bin:/bin")
    assert without.returncode == 1, without.stdout + without.stderr
    assert "libnet-ssleay-perl" in without.stdout
    with_tls = system_deps_check(f"{tmp_path / 'tls'}:/usr/bin:/bin")
    assert "libnet-ssleay-perl" not in with_tls.stdout + with_tls.stderr
    assert "swaks" not in with_tls.stdout + with_tls.stderr


def test_integration_modules_patch_none_of_the_projects_parts() -> None:
    patched = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(TESTS.glob("test_*.py"))
        if INTEGRATION in (text := path.read_text(encoding="utf-8"))
        for number, line in enumerate(text.splitlines(), 1)
        if PATCHING.search(line)
    ]
    assert patched == [], "move stand-in tests to a unit module (e.g. test_receiver_units.py)"
