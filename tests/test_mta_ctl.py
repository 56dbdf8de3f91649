"""The MTA containers' `ctl.sh await` (lab/docker/mta/common.sh), run by the host's /bin/sh."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

COMMON = Path(__file__).resolve().parents[1] / "lab" / "docker" / "mta" / "common.sh"


def ctl(tmp_path: Path) -> Path:
    """Write a ctl.sh that sources common.sh on a log in `tmp_path`, as the MTA images do."""
    script = tmp_path / "ctl.sh"
    script.write_text(
        f"#!/bin/sh\nset -eu\nLOG={tmp_path}/mta.log\nREADY={tmp_path}/ready\n"
        f'. {COMMON}\nmta_common "$@"\n',
        encoding="utf-8",
    )
    (tmp_path / "mta.log").write_text("old line status=sent\n", encoding="utf-8")
    return script


def await_lines(script: Path, count: int, appended: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `ctl.sh await 3 OFFSET count status=sent` while `appended` lines reach the log."""
    log = script.parent / "mta.log"
    offset = log.stat().st_size
    argv = ["sh", str(script), "await", "3", str(offset), str(count), "status=sent"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def append() -> None:
        with log.open("a", encoding="utf-8") as handle:
            for line in appended:
                handle.write(line + "\n")
                handle.flush()

    writer = threading.Thread(target=append)
    writer.start()
    out, err = process.communicate(timeout=15)
    writer.join()
    return subprocess.CompletedProcess(argv, process.returncode, out, err)


def test_await_returns_the_log_since_offset_once_enough_lines_match(tmp_path: Path) -> None:
    """Two matching lines awaited, two written: exit 0, only the lines after OFFSET printed."""
    lines = ["a status=deferred", "b status=sent", "c status=sent"]
    result = await_lines(ctl(tmp_path), 2, lines)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == lines


def test_await_times_out_with_exit_1_when_too_few_lines_match(tmp_path: Path) -> None:
    """Three awaited, two written (the one before OFFSET does not count): exit 1, log printed."""
    lines = ["a status=deferred", "b status=sent", "c status=sent"]
    result = await_lines(ctl(tmp_path), 3, lines)
    assert result.returncode == 1
    assert result.stdout.splitlines() == lines
