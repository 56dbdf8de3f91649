"""External senders: 27 relay cells against a loopback relay that accepts and never delivers."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.common import Json, free_port, say, summary, timed_run, tlslab_command
from bench.suite_bench import shipped_receivers
from harness.scenarios import DEFAULT_ROOT

PROFILES = 3  # 9 receivers x 3 relay profiles = the 27 cells of the study's suite
REFERENCE_WINDOW = 0.01  # the smallest observe_timeout_seconds: the run without its watches
TARGET_WINDOWS = 1.5  # the target: wall at most 1.5 windows plus the reference run


class BlackHole:
    """An aiosmtpd handler that takes every message and keeps none (a relay that never delivers)."""

    def __init__(self) -> None:
        """Count the messages accepted."""
        self.accepted = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Accept the message and drop it."""
        self.accepted += 1
        return "250 2.0.0 accepted, never delivered"


@contextlib.contextmanager
def black_hole_relay() -> Iterator[tuple[int, BlackHole]]:
    """Run the loopback relay on a free port in a thread; yield (port, handler)."""
    handler = BlackHole()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


def write_scenarios(root: Path, port: int, window: float) -> Path:
    """Write the shipped receivers, relay profiles on `port` and a 27-cell suite; return it."""
    receivers = shipped_receivers()
    (root / "receivers").mkdir(parents=True, exist_ok=True)
    for spec in receivers:
        shutil.copy(DEFAULT_ROOT / "receivers" / f"{spec.id}.yaml", root / "receivers")
    (root / "senders").mkdir(exist_ok=True)
    senders = [f"black-hole-{index}" for index in range(PROFILES)]
    for name in senders:
        profile: dict[str, Any] = {
            "driver": "relay",
            "description": "a loopback relay that accepts and never delivers (bench)",
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "observe_timeout_seconds": window,
        }
        (root / "senders" / f"{name}.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    cells = {r.id: {s: {"outcome": "not-observed"} for s in senders} for r in receivers}
    suite = {
        "title": "External senders watched together: a relay that never delivers",
        "receivers": [r.id for r in receivers],
        "senders": senders,
        "cells": cells,
    }
    (root / "suites").mkdir(exist_ok=True)
    path = root / "suites" / "black-hole.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def run_section(work: Path, certs: Path, quick: bool) -> Json:
    """Time the suite with a real window and with the smallest one, at --jobs 1 and 4."""
    window = 1.0 if quick else 6.0
    jobs_values = [1, 4]
    repeats = 1 if quick else 2
    result: Json = {"status": "ok", "cells": len(shipped_receivers()) * PROFILES}
    result["observe_timeout_seconds"] = window
    result["reference_window_s"] = REFERENCE_WINDOW
    rows = []
    with black_hole_relay() as (port, handler):
        for jobs in jobs_values:
            samples: dict[float, list[Json]] = {REFERENCE_WINDOW: [], window: []}
            for repeat in range(repeats):
                for seconds in samples:
                    say(f"external: --jobs {jobs}, window {seconds:g} s, run {repeat + 1}")
                    root = work / f"scenarios-{jobs}-{seconds:g}-{repeat}"
                    suite = write_scenarios(root, port, seconds)
                    samples[seconds].append(_run(suite, root, certs, jobs))
            reference = summary([s["seconds"] for s in samples[REFERENCE_WINDOW]])["median"]
            wall = summary([s["seconds"] for s in samples[window]])
            ratio = round((wall["median"] - reference) / window, 3)
            rows.append(
                {
                    "jobs": jobs,
                    "wall_s": wall,
                    "reference_wall_s": reference,
                    "windows_beyond_reference": ratio,
                    "met": ratio <= TARGET_WINDOWS,
                    "verdicts": [s["verdicts"] for s in samples[window]],
                    "statuses": [s["status"] for s in samples[window]],
                }
            )
        result["accepted_by_relay"] = handler.accepted
    result["table"] = rows
    result["target"] = f"wall <= reference + {TARGET_WINDOWS} x observe_timeout_seconds"
    return result


def _run(suite: Path, root: Path, certs: Path, jobs: int) -> Json:
    """Run the suite as `tlslab run`; return wall seconds and its verdict counts."""
    reports = root / "reports"
    argv = [*tlslab_command(), "run", "--suite", str(suite), "--scenarios", str(root),
            "--certs", str(certs), "--reports", str(reports), "--jobs", str(jobs)]  # fmt: skip
    done = timed_run(argv, 600)
    verdicts: Counter[str] = Counter()
    latest = reports / "latest" / "results.json"
    if latest.exists():
        for cell in json.loads(latest.read_text(encoding="utf-8"))["results"]:
            verdicts[cell["verdict"]] += 1
    shutil.rmtree(root, ignore_errors=True)
    return done | {"verdicts": dict(verdicts)}
