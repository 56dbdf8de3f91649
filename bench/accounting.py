"""Where every second of `tlslab run` goes: traced runs split the wall time into segments."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import PROJECT_ROOT, Json, child_env, summary

# (segment, from mark, to mark), in the order they happen; "spawn"/"exited" are the parent's
SEGMENTS = (
    ("interpreter start", "spawn", "child_start"),
    ("imports (harness.cli and all it pulls in)", "child_start", "imported"),
    ("argument parsing, backend lookup", "imported", "load_suite_start"),
    ("load suite YAML + validation", "load_suite_start", "load_suite_end"),
    ("certificate check", "certificates_start", "certificates_end"),
    ("receivers start (fork the `lab.serve` child until ready)", "receivers_start_start",
     "receivers_start_end"),
    ("cells", "cells_start", "cells_end"),
    ("report writing (4 files + latest link)", "report_start", "report_end"),
    ("receivers stop (SIGTERM until the child exited)", "receivers_stop_start",
     "receivers_stop_end"),
    ("matrix + totals on the console", "receivers_stop_end", "main_end"),
    ("interpreter exit (finalization)", "main_end", "exited"),
)  # fmt: skip
GLUE = "glue between the phases above"
TIMEOUT = 120.0


def traced_run(argv: list[str], marks_file: Path) -> Json:
    """Run `tlslab ARGV` under bench.trace_cli; return its wall time split into segments."""
    command = [sys.executable, "-m", "bench.trace_cli", str(marks_file), *argv]
    spawn = time.time()
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=child_env(), capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )  # fmt: skip
    exited = time.time()
    result: Json = {"seconds": round(exited - spawn, 4), "status": done.returncode}
    try:
        marks = json.loads(marks_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return result | {"segments": {}, "error": done.stderr.strip()[-300:]}
    marks |= {"spawn": spawn, "exited": exited}
    segments = {
        name: round(marks[end] - marks[start], 4)
        for name, start, end in SEGMENTS
        if start in marks and end in marks
    }
    segments[GLUE] = round(exited - spawn - sum(segments.values()), 4)
    return result | {"segments": segments}


def accounting(traced: list[Json], whole: Json) -> Json:
    """Return per-segment medians of the traced runs next to the untraced whole command."""
    names = [name for name, _start, _end in SEGMENTS] + [GLUE]
    rows = {
        name: summary([t["segments"][name] for t in traced if name in t["segments"]])
        for name in names
    }
    return {
        "traced_runs": len(traced),
        "traced_total": summary([t["seconds"] for t in traced]),
        "whole_median": whole["median"],
        "rows": rows,
        "statuses": [t["status"] for t in traced],
    }
