"""Scale: generated suites up to 100 receivers x 100 sender profiles (10,000 local cells)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from bench.common import PROJECT_ROOT, Json, child_env, say, tlslab_command
from bench.scaling import expected, profiles
from bench.suite_bench import shipped_receivers
from harness.model import ReferenceSenderProfile
from harness.scenarios import DEFAULT_ROOT, load_receiver
from lab.pki import ensure_certs

SENDERS = 100
FULL_SIZES = (10, 30, 100)  # receivers: x 100 senders = 1k, 3k and 10k cells
QUICK_SIZES = (2, 3)
QUICK_SENDERS = 5
TARGET_SECONDS = 60.0  # 10,000 cells
# a sixth of the generated cells are `defer` profiles, whose modelled retry waits 1.1 s: a
# wait, not work, so more cells than cores run at once
JOBS = 16


def write_scenarios(root: Path, receivers: int, senders: int) -> Path:
    """Write `receivers` copies of the study's states, `senders` profiles, one suite; return it."""
    states = shipped_receivers()
    (root / "receivers").mkdir(parents=True, exist_ok=True)
    chosen = []
    for index in range(receivers):
        state = states[index % len(states)]
        name = f"{state.id}-r{index:03d}"
        shutil.copy(
            DEFAULT_ROOT / "receivers" / f"{state.id}.yaml", root / "receivers" / f"{name}.yaml"
        )
        chosen.append(load_receiver(root / "receivers" / f"{name}.yaml"))
    distinct = profiles(states, senders)
    (root / "senders").mkdir(exist_ok=True)
    made: list[ReferenceSenderProfile] = []
    for index in range(senders):
        base = distinct[index % len(distinct)]
        profile = base.model_copy(update={"id": f"g{index:03d}"})  # short: the suite has a bound
        data = profile.model_dump(mode="json", exclude={"id"})
        (root / "senders" / f"{profile.id}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        made.append(profile)
    rows: dict[str, dict[str, Any]] = {}  # one row per receiver state: YAML aliases repeat it
    cells: dict[str, Any] = {}
    for receiver in chosen:
        kind = receiver.id.rsplit("-r", 1)[0]
        if kind not in rows:
            rows[kind] = {}
            for sender in made:
                outcome, tls = expected(receiver, sender)
                rows[kind][sender.id] = {"outcome": outcome} | ({"tls": tls} if tls else {})
        cells[receiver.id] = rows[kind]
    suite = {
        "title": f"Scale: {receivers} receivers x {senders} generated sender profiles",
        "receivers": [r.id for r in chosen],
        "senders": [s.id for s in made],
        "cells": cells,
    }
    (root / "suites").mkdir(exist_ok=True)
    path = root / "suites" / f"scale-{receivers}x{senders}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    ensure_certs(chosen, root / "certs")  # issued before the clock starts: reused by the run
    return path


def run_section(work: Path, certs: Path, quick: bool) -> Json:
    """Run each generated suite once with --jobs 4; cells/s and peak RSS of the run's processes."""
    sizes, senders = (QUICK_SIZES, QUICK_SENDERS) if quick else (FULL_SIZES, SENDERS)
    rows = []
    for receivers in sizes:
        root = work / f"scale-{receivers}"
        say(f"scale: writing {receivers} receivers x {senders} senders")
        suite = write_scenarios(root, receivers, senders)
        say(f"scale: running {receivers * senders} cells, --jobs {JOBS}")
        rows.append({"receivers": receivers, "senders": senders} | _run(suite, root))
        shutil.rmtree(root, ignore_errors=True)
    largest = rows[-1]
    met = (
        not quick
        and largest["status"] == 0
        and largest["cells"] == 10_000
        and largest["seconds"] <= TARGET_SECONDS
    )
    return {
        "status": "ok",
        "jobs": JOBS,
        "table": rows,
        "target": f"10,000 cells in at most {TARGET_SECONDS:.0f} s",
        "met": met,
    }


def _run(suite: Path, root: Path) -> Json:
    """Run `tlslab run` on the suite; return wall s, cells/s, peak RSS (MiB) and verdicts."""
    reports = root / "reports"
    certs = str(root / "certs")
    argv = [*tlslab_command(), "run", "--suite", str(suite), "--scenarios", str(root),
            "--certs", certs, "--reports", str(reports), "--jobs", str(JOBS)]  # fmt: skip
    began = time.perf_counter()
    with open(root / "out.txt", "wb") as out:
        process = subprocess.Popen(argv, cwd=PROJECT_ROOT, env=child_env(), stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        process.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - began
    verdicts: Counter[str] = Counter()
    latest = reports / "latest" / "results.json"
    if latest.exists():
        for cell in json.loads(latest.read_text(encoding="utf-8"))["results"]:
            verdicts[cell["verdict"]] += 1
    cells = sum(verdicts.values())
    tail = (root / "out.txt").read_text(errors="replace").strip().splitlines()[-2:]
    return {
        "cells": cells,
        "status": process.returncode,
        "seconds": round(seconds, 2),
        "cells_per_s": round(cells / seconds, 1) if seconds else None,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # the largest of the run's processes
        "verdicts": dict(verdicts),
        "tail": " | ".join(tail),
    }
