"""The provenance block: lab version and commit, tools, host, suite file and its sha256."""

from __future__ import annotations

import hashlib
import json
import platform
import socket
import ssl
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from test_report import make_report

from harness import provenance
from harness.paths import PROJECT_ROOT
from harness.report import load_results, write_report
from harness.scenarios import DEFAULT_ROOT

SUITE = DEFAULT_ROOT / "suites" / "ses-2025.yaml"


def test_collect_names_the_tools_host_and_suite_bytes() -> None:
    found = provenance.collect(SUITE, "local", "2025-01-01T00:00:00+00:00", "2025-01-01T00:01:00")
    assert found.suite_file == str(SUITE)
    assert found.suite_sha256 == hashlib.sha256(SUITE.read_bytes()).hexdigest()
    assert found.python == platform.python_version()
    assert found.openssl == ssl.OPENSSL_VERSION
    assert found.aiosmtpd == metadata.version("aiosmtpd")
    assert found.lab_version == metadata.version("sender-tls-lab")
    assert found.host == socket.gethostname()
    assert (found.backend, found.started) == ("local", "2025-01-01T00:00:00+00:00")
    head = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    assert found.lab_commit.removesuffix("+modified") == (head or "unknown")


def test_a_changed_suite_file_changes_its_hash(tmp_path: Path) -> None:
    copy = tmp_path / "ses-2025.yaml"
    copy.write_bytes(SUITE.read_bytes())
    same = provenance.file_sha256(copy)
    copy.write_bytes(SUITE.read_bytes() + b"# edited\n")
    assert provenance.file_sha256(copy) != same
    assert provenance.file_sha256(tmp_path / "gone.yaml") == "unknown"


def test_outside_git_the_commit_is_unknown(tmp_path: Path) -> None:
    assert provenance.lab_commit(tmp_path) == "unknown"


def git_repo(folder: Path) -> str:
    """Make a git repository with one commit in `folder`; return the commit."""
    folder.mkdir()
    for args in (["init", "-q"], ["-c", "user.name=t", "-c", "user.email=t@lab.test", "commit",
                                  "-q", "--allow-empty", "-m", "one"]):  # fmt: skip
        subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)
    return subprocess.run(
        ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_prefetched_commit_is_answered_later_without_running_git_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fetched, other = tmp_path / "fetched", tmp_path / "other"
    head = git_repo(fetched)
    git_repo(other)
    provenance.prefetch_lab_commit(fetched).join(timeout=30)

    def no_git(*args: object, **kwargs: object) -> None:
        raise OSError("git is not run again")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert provenance.lab_commit(fetched) == head
    assert provenance.lab_commit(other) == "unknown"  # control: never fetched, so git is run


def test_provenance_is_in_results_json_html_and_summary(tmp_path: Path) -> None:
    found = provenance.collect(SUITE, "local", "2025-01-01T00:00:00+00:00", "2025-01-01T00:01:00")
    run = write_report(make_report().model_copy(update={"provenance": found}), tmp_path)
    data = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert data["provenance"]["suite_sha256"] == found.suite_sha256
    assert data["provenance"]["openssl"] == ssl.OPENSSL_VERSION
    assert load_results(run).provenance == found
    page = (run / "report.html").read_text(encoding="utf-8")
    block = page[page.index('<section id="provenance">') :]
    for value in (found.lab_commit, found.openssl, found.aiosmtpd, found.suite_sha256):
        assert f"<code>{value}</code>" in block or value in block
    assert "<dt>suite sha256</dt>" in block
    text = (run / "summary.md").read_text(encoding="utf-8")
    assert f"- suite sha256: `{found.suite_sha256}`" in text
    assert f"- host: `{found.host}`" in text


def test_an_older_results_json_without_provenance_renders_without_the_block(
    tmp_path: Path,
) -> None:
    run = write_report(make_report(), tmp_path)
    assert 'id="provenance"' not in (run / "report.html").read_text(encoding="utf-8")
    assert "## Provenance" not in (run / "summary.md").read_text(encoding="utf-8")
