"""A small scoreboard on the Docker backend: real Postfix, the reference sender, real receivers.

Bounded by flags (3 receiver states x 4 senders); the whole board is `make scoreboard`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import PROJECT
from tools import missing

from harness.scenarios import DEFAULT_ROOT
from harness.scoreboard.files import load_board
from harness.scoreboard.model import Scoreboard
from lab.backends import BackendError
from lab.backends.docker import RUN_LABEL, docker_client

pytestmark = pytest.mark.integration
RECEIVERS = "tls13,no-starttls,no-shared-cipher"
SENDERS = "postfix-may,postfix-verify,postfix-unstated,ses-default"
RUN_SECONDS = 600  # includes an image build when this source tree has none yet


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> Any:
    """Return a docker client; without an engine skip the module in one line."""
    try:
        return docker_client()
    except BackendError as error:
        missing("no Docker engine answers", error.hint, docker=True, node=request.node)


@pytest.fixture(scope="module")
def ran(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Scoreboard]:
    """Run the bounded board once with `tlslab scoreboard`; return its folder, output, board."""
    base = tmp_path_factory.mktemp("board-docker")
    scenarios = base / "scenarios"
    shutil.copytree(DEFAULT_ROOT, scenarios)
    (scenarios / "senders" / "postfix-unstated.yaml").write_text(
        "description: no suite states its cells\ndriver: postfix\nsecurity_level: encrypt\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "scoreboard", "--backend", "docker",
         "--receivers", RECEIVERS, "--senders", SENDERS, "--scenarios", str(scenarios),
         "--reports", str(base / "r"), "--certs", str(base / "c")],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=RUN_SECONDS, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not (base / "r" / "scoreboard").exists(), "a subset must not move reports/scoreboard"
    (folder,) = (base / "r").glob("*-scoreboard-docker-*")
    return folder, done.stdout, load_board(folder)


def test_every_cell_ran_and_stated_ones_match(ran: tuple[Path, str, Scoreboard]) -> None:
    _, out, board = ran
    assert board.complete
    assert len(board.cells) == 12
    assert [s.software for s in board.senders] == ["Postfix"] * 3 + ["policy models"]
    judged = [c for c in board.cells if c.sender != "postfix-unstated"]
    assert {c.verdict.value if c.verdict else None for c in judged} == {"pass"}
    assert all(
        c.expected_from in ("postfix", "postfix-beyond", "ses-2025", "beyond") for c in judged
    )
    unstated = [c for c in board.cells if c.sender == "postfix-unstated"]
    assert [(c.verdict, c.expected) for c in unstated] == [(None, None)] * 3
    assert out.count("observed only") == 3


def test_a_failed_handshake_then_plaintext_is_scored_and_its_negative_control(
    ran: tuple[Path, str, Scoreboard],
) -> None:
    _, _, board = ran
    may = board.cell("no-shared-cipher", "postfix-may")
    verify = board.cell("no-shared-cipher", "postfix-verify")
    assert may is not None
    assert verify is not None
    assert (may.downgraded, may.tls, may.risk.value) == (True, None, "downgraded")
    failed = [s for s in may.sessions if s.handshake != "ok" and s.starttls]
    assert failed, may.sessions  # the receiver recorded the failed handshake itself
    assert (verify.outcome.value, verify.downgraded) == ("deferred", False)
    scores = {s.id: s.score for s in board.senders}
    assert (
        "plaintext after a failed handshake at 1 receiver (no-shared-cipher)"
        in scores["postfix-may"]
    )
    assert "never plaintext after a failed handshake" in scores["postfix-verify"]
    assert scores["postfix-verify"].startswith("delivered to 0 of 2 unsafe receivers")
    assert scores["postfix-may"].startswith("delivered to 2 of 2 unsafe receivers")


def test_versions_are_read_from_the_running_senders(ran: tuple[Path, str, Scoreboard]) -> None:
    _, _, board = ran
    versions = {v.software: v for v in board.versions}
    assert set(versions) == {"Postfix", "OpenSSL", "OpenSSL (Python ssl)"}
    for found in versions.values():
        assert re.fullmatch(r"\d+\.\d+\.\d+[\w.-]*", found.version), found
    assert versions["Postfix"].sender == "postfix-may"


def test_cells_link_to_evidence_files_that_exist(ran: tuple[Path, str, Scoreboard]) -> None:
    folder, _, board = ran
    delivered = [c for c in board.cells if c.outcome.value == "delivered"]
    assert delivered
    for cell in delivered:
        messages = [e.path for e in cell.evidence if e.kind == "message"]
        assert messages, cell.id
        assert f"X-TLSLab-Cell: {cell.id}" in (folder / messages[0]).read_text()
    for cell in board.cells:
        if cell.sender.startswith("postfix-"):
            assert cell.sender_log is not None, cell.id
            assert "status=" in (folder / cell.sender_log).read_text()
        else:
            assert cell.sender_log is None  # negative control: the reference sender keeps none
    page = (folder / "index.html").read_text()
    assert page.count('<td id="cell-') == 12


def test_diff_of_the_board_with_itself_and_with_a_changed_copy(
    ran: tuple[Path, str, Scoreboard], tmp_path: Path
) -> None:
    folder, _, _ = ran
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}

    def diff(old: Path, new: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "harness.cli", "diff", str(old), str(new)],
            cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    same = diff(folder, folder / "scoreboard.json")
    assert same.returncode == 0, same.stdout + same.stderr
    data = json.loads((folder / "scoreboard.json").read_text())
    data["versions"][0]["version"] = "9.9.9"
    data["cells"][0]["outcome"] = "refused"
    changed = tmp_path / "scoreboard.json"
    changed.write_text(json.dumps(data))
    moved = diff(folder, changed)
    assert moved.returncode == 1, moved.stdout + moved.stderr
    assert "-> 9.9.9" in moved.stdout
    assert "1 of 12 cells changed" in moved.stdout


@pytest.mark.usefixtures("ran")
def test_nothing_is_left_running(engine: Any) -> None:
    names = [c.name for c in engine.containers.list(all=True, filters={"label": RUN_LABEL})]
    mine = [n for n in names if "postfix-unstated" in n]  # only this test has that sender
    assert mine == []


def test_sigterm_writes_a_partial_board_and_leaves_the_link_alone(
    engine: Any, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    argv = [sys.executable, "-m", "harness.cli", "scoreboard", "--backend", "docker",
            "--receivers", "tls13,tls12,tls11,tls10,expired,self-signed",
            "--senders", "postfix-verify", "--reports", str(tmp_path / "r"),
            "--certs", str(tmp_path / "c")]  # fmt: skip
    with subprocess.Popen(
        argv, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:  # blocks on the child's output: the first finished cell
            if line.startswith("[1/6]"):
                break
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=RUN_SECONDS)
    assert child.returncode == 143, err
    assert "partial board is in" in err
    assert not (tmp_path / "r" / "scoreboard").exists()
    (folder,) = (tmp_path / "r").glob("*-scoreboard-docker-*")
    board = load_board(folder)
    assert (board.complete, board.stopped_by) == (False, "SIGTERM")
    assert 1 <= len(board.cells) < 6
    assert len(board.cells) + len(board.not_run) == 6
    assert "Incomplete scoreboard (interrupted by SIGTERM)" in (folder / "index.html").read_text()
