"""The `tlslab` script's exit: what a normal interpreter exit does that anyone can see, kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
PROBE = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import harness.cli as cli
out = Path(sys.argv[1])
def late():
    time.sleep(0.2)
    (out / "thread").write_text("joined")
def main():
    threading.Thread(target=late).start()  # not a daemon: exit waits for it
    pool = ThreadPoolExecutor(1)  # never shut down: its idle worker must not hang the exit
    pool.submit(lambda: None).result()
    atexit.register(lambda: (out / "atexit").write_text("ran"))
    sys.stdout.write("buffered, no newline")
    sys.stderr.write("on stderr")
    return 3
cli.main = main
{finish}
"""


@pytest.mark.parametrize("finish", ["cli.script()", "sys.exit(main())"], ids=["script", "control"])
def test_the_script_exit_joins_threads_runs_atexit_and_flushes_like_a_normal_one(
    tmp_path: Path, finish: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(finish=finish), str(tmp_path)], cwd=PROJECT, env=env,
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert done.returncode == 3
    assert done.stdout == "buffered, no newline"
    assert done.stderr == "on stderr"
    assert (tmp_path / "thread").read_text() == "joined"
    assert (tmp_path / "atexit").read_text() == "ran"
