"""A certs folder the lab cannot use makes every command exit 2 with one line naming the path."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_helpers import PROJECT, Ran, tlslab
from tools import missing

from harness.scenarios import DEFAULT_ROOT

COMMANDS = ("certs", "run", "up", "pytest")
TINY_SUITE = """\
title: One cell
receivers: [tls13]
senders: [ses-default]
cells:
  tls13:
    ses-default: {outcome: delivered, tls: TLSv1.3}
"""
QUIET = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider", "-q")


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a scenarios root with the shipped receivers and senders and a one-cell suite."""
    root = tmp_path_factory.mktemp("scenarios")
    for folder in ("receivers", "senders"):
        shutil.copytree(DEFAULT_ROOT / folder, root / folder)
    (root / "suites").mkdir()
    (root / "suites" / "tiny.yaml").write_text(TINY_SUITE, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def good_certs(tmp_path_factory: pytest.TempPathFactory, scenarios: Path) -> Path:
    """Return a complete certs folder made by `tlslab certs` (its success is the first control)."""
    certs = tmp_path_factory.mktemp("good-certs")
    ran = tlslab("certs", "--scenarios", scenarios, "--certs", certs)
    assert ran.status == 0, ran.err
    return certs


def invoke(command: str, scenarios: Path, certs: Path, work: Path) -> Ran:
    """Run one of the four entry points against `certs`, with its output under `work`."""
    reports, evidence = work / f"reports-{command}", work / f"evidence-{command}"
    if command == "pytest":
        suite = scenarios / "suites" / "tiny.yaml"
        args = [suite, *QUIET, "--lab-certs", certs, "--lab-reports", reports]
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *map(str, args)],
            cwd=PROJECT,
            env={k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Ran(done.returncode, done.stdout, done.stderr)
    common = ("--scenarios", scenarios, "--certs", certs)
    if command == "run":
        return tlslab("run", *common, "--suite", "tiny", "--reports", reports)
    if command == "up":
        return tlslab("up", *common, "--receivers", "tls13", "--evidence-dir", evidence)
    return tlslab("certs", *common)


def assert_one_line_exit_2(ran: Ran, *names: str) -> None:
    """Assert status 2, no traceback, and exactly one `tlslab: error:` line naming each name."""
    text = ran.out + ran.err
    assert "Traceback" not in text, text
    assert ran.status == 2, text
    lines = [line for line in text.splitlines() if "tlslab: error: " in line]
    assert len(lines) == 1, text
    if ran.err.strip():  # the CLI: the error is all of stderr; pytest reports it on stdout
        assert ran.err.strip().splitlines() == lines, ran.err
    for name in (*names, "fix: "):
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"


def _folder_is_a_file(certs: Path) -> Path:
    shutil.rmtree(certs)
    certs.write_text("not a folder\n")
    return certs


def _replace_by_directory(rel: str) -> Callable[[Path], Path]:
    def breakage(certs: Path) -> Path:
        (certs / rel).unlink()
        (certs / rel).mkdir()
        return certs / rel

    return breakage


def _ca_folder_is_a_file(certs: Path) -> Path:
    shutil.rmtree(certs / "ca")
    (certs / "ca").write_text("not a folder\n")
    return certs / "ca"


BREAKAGES: dict[str, Callable[[Path], Path]] = {
    "certs-folder-is-a-file": _folder_is_a_file,
    "manifest-is-a-directory": _replace_by_directory("manifest.json"),
    "ca-cert-is-a-directory": _replace_by_directory("ca/lab-ca.pem"),
    "receiver-key-is-a-directory": _replace_by_directory("tls13/key.pem"),
    "ca-folder-is-a-file": _ca_folder_is_a_file,
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_directory_or_file_in_the_way_is_exit_2_naming_it(
    tmp_path: Path, scenarios: Path, good_certs: Path, breakage: str
) -> None:
    certs = tmp_path / "certs"
    shutil.copytree(good_certs, certs)
    named = BREAKAGES[breakage](certs)
    for command in COMMANDS:
        assert_one_line_exit_2(invoke(command, scenarios, certs, tmp_path), str(named))
    assert named.exists()  # the lab removes nothing of the user's


def test_control_intact_certs_work_for_every_command(
    tmp_path: Path, scenarios: Path, good_certs: Path
) -> None:
    certs = tmp_path / "certs"
    shutil.copytree(good_certs, certs)
    for command in ("certs", "run", "pytest"):
        ran = invoke(command, scenarios, certs, tmp_path)
        assert ran.status == 0, ran.out + ran.err
    assert_up_serves(scenarios, certs, tmp_path)


def assert_up_serves(scenarios: Path, certs: Path, work: Path) -> None:
    """Start `tlslab up --json` on certs, wait (bounded) for it to be ready, stop it: exit 0."""
    args = ["up", "--scenarios", scenarios, "--certs", certs, "--receivers", "tls13", "--json"]
    args += ["--evidence-dir", work / "evidence-up"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *map(str, args)],
        cwd=PROJECT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(120.0, proc.kill)  # the bound on the whole start-up
    watchdog.start()
    try:
        assert proc.stdout is not None
        lines = iter(proc.stdout.readline, "")
        ready = next((line for line in lines if '"ready": true' in line), None)
        assert ready is not None, proc.communicate(timeout=30)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# --- read-only and full filesystems -----------------------------------------------------


@contextlib.contextmanager
def mounted(target: Path, source: Path | None, options: str = "ro,size=1m") -> Iterator[Path]:
    """Mount a tmpfs (source None; read-only by default) or a read-only bind of source at target."""
    if os.geteuid() != 0:
        missing(
            "root (to mount a filesystem for this test)", "run the tests as root, as .ci/run does"
        )
    target.mkdir()
    if source is None:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", target], check=True)
    else:
        subprocess.run(["mount", "--bind", source, target], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", target], check=True)
    try:
        yield target
    finally:
        subprocess.run(["umount", target], check=True)


def test_certs_on_an_empty_read_only_filesystem_is_exit_2(tmp_path: Path, scenarios: Path) -> None:
    with mounted(tmp_path / "ro", None) as certs:
        for command in COMMANDS:
            ran = invoke(command, scenarios, certs, tmp_path)
            assert_one_line_exit_2(ran, str(certs), "Read-only file system")


def test_stale_certs_on_a_read_only_filesystem_are_exit_2(
    tmp_path: Path, scenarios: Path, good_certs: Path
) -> None:
    stale = tmp_path / "stale"
    shutil.copytree(good_certs, stale)
    (stale / "tls13" / "cert.pem").unlink()  # must be reissued, which needs a write
    with mounted(tmp_path / "ro", stale) as certs:
        for command in COMMANDS:
            ran = invoke(command, scenarios, certs, tmp_path)
            assert_one_line_exit_2(ran, str(certs / "tls13"), "Read-only file system")


def test_control_current_certs_on_a_read_only_filesystem_are_used(
    tmp_path: Path, scenarios: Path, good_certs: Path
) -> None:
    with mounted(tmp_path / "ro", good_certs) as certs:
        assert (certs / "manifest.json").is_file()
        for command in ("certs", "run"):
            ran = invoke(command, scenarios, certs, tmp_path)
            assert ran.status == 0, ran.out + ran.err


def test_a_full_certs_filesystem_is_exit_2_and_recovers_once_freed(
    tmp_path: Path, scenarios: Path
) -> None:
    with mounted(tmp_path / "full", None, options="size=16k") as certs:
        ran = invoke("certs", scenarios, certs, tmp_path)
        assert_one_line_exit_2(ran, str(certs), "No space left on device", "free space")
        subprocess.run(["mount", "-o", "remount,size=1m", certs], check=True)
        ran = invoke("certs", scenarios, certs, tmp_path)
        assert ran.status == 0, ran.out + ran.err
