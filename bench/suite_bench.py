"""The ses-2025 suite on the local backend: whole-command wall time and where every second goes."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.accounting import accounting, traced_run
from bench.common import PROJECT_ROOT, Json, child_env, say, summary, timed_run, tlslab_command
from bench.handshake import measure
from bench.instrument import SMTP_PROBES, Probes, TimedLabRun, instrumented
from harness import console
from harness.report import write_report
from harness.run_start import new_run_id
from harness.scenarios import DEFAULT_ROOT, load_receiver, load_suite
from lab.backends import LocalBackend
from lab.evidence_store import read_sessions
from lab.pki import ensure_certs
from lab.spec import CertState, ReceiverSpec, TlsVersion

SUITE = "ses-2025"
DEFAULT_JOBS = 4
RUN_TIMEOUT = 120.0
FLOOR_CODE = "import ssl, aiosmtpd.smtp"  # the reference process of the start-up target
STARTUP_TARGET = 4.0  # the whole command at most 4x that process
PHASES = (
    "load_suite",
    "certificates",
    "receivers_start",
    "cells",
    "report",
    "receivers_stop",
    "console",
)
HARNESS_PROBES = ("build_message", "wait_for_sessions", "find_arrivals", "classify", "judge")
CELL_PROBES = (
    "run_cell",
    "send",
    "client_context",
    *(f"smtp.{m}" for m in SMTP_PROBES),
    "build_message",
    "wait_for_sessions",
    "find_arrivals",
    "classify",
    "judge",
)


def run_section(work: Path, certs: Path, quick: bool) -> Json:
    """Measure the suite: start-up, whole command, in-process phases and TLS handshakes.

    `certs` should not exist yet: the first run generates it and is reported separately.
    """
    runs = 1 if quick else 5
    result: Json = {"status": "ok", "suite": SUITE, "default_jobs": DEFAULT_JOBS}
    say("suite: whole command, first run (generates certificates)")
    result["first_run"] = _whole(work, certs, "first")
    say(f"suite: whole command x{runs}, alternating with traced runs (+1 warm-up)")
    if not quick:
        _whole(work, certs, "warm-up")
    whole, traced, floor = [], [], []
    for index in range(runs):
        whole.append(_whole(work, certs, f"run{index}"))
        floor.append(timed_run([sys.executable, "-c", FLOOR_CODE], 30)["seconds"])
        traced.append(traced_run(_run_args(work, certs, f"traced{index}"), work / f"m{index}.json"))
    result["whole_command"] = summary([w["seconds"] for w in whole]) | {
        "statuses": [w["status"] for w in whole]
    }
    result["startup_target"] = startup_target(result["whole_command"], summary(floor))
    result["accounting"] = accounting(traced, result["whole_command"])
    say("suite: start-up costs (interpreter, imports)")
    result["startup"] = startup(runs, 0 if quick else 1)
    result["breakdown"] = {}
    for jobs in (DEFAULT_JOBS, 1):
        say(f"suite: in-process phase breakdown, jobs={jobs}, x{runs}")
        result["breakdown"][str(jobs)] = breakdown(work, certs, jobs, runs, 0 if quick else 1)
    count = 5 if quick else 200
    say(f"suite: TLS handshake microbenchmark, {count} per version")
    result["handshake"] = handshakes(work, certs, count)
    return result


def startup_target(whole: Json, floor: Json) -> Json:
    """Return the whole command against the interpreter + `import ssl, aiosmtpd.smtp` floor."""
    ratio = (
        round(whole["median"] / floor["median"], 2) if whole["median"] and floor["median"] else None
    )
    return {
        "floor_code": FLOOR_CODE,
        "floor_s": floor,
        "ratio": ratio,
        "target_ratio": STARTUP_TARGET,
        "met": ratio is not None and ratio <= STARTUP_TARGET,
    }


def _run_args(work: Path, certs: Path, tag: str) -> list[str]:
    """Return the arguments of `tlslab` for one run of the suite into its own reports folder."""
    return ["run", "--suite", SUITE, "--reports", str(work / f"reports-{tag}"), "--certs",
            str(certs)]  # fmt: skip


def _whole(work: Path, certs: Path, tag: str) -> Json:
    """Run `tlslab run --suite ses-2025` once as a subprocess; return its timing."""
    return timed_run([*tlslab_command(), *_run_args(work, certs, tag)], RUN_TIMEOUT)


def startup(runs: int, warmups: int) -> Json:
    """Time the bare interpreter, `tlslab --help`, imports and exits of both processes."""

    def walls(argv: list[str]) -> Json:
        samples = [timed_run(argv, 30)["seconds"] for _ in range(warmups + runs)]
        return summary(samples[warmups:])

    return {
        "python_bare": walls([sys.executable, "-c", "pass"]),
        "tlslab_help": walls([*tlslab_command(), "--help"]),
        "receiver_process_import": walls([sys.executable, "-c", "import lab.serve"]),
        "imports_cli": import_profile("harness.cli"),
        "imports_receiver": import_profile("lab.serve"),
        "exit_cli": exit_cost("harness.cli", runs),
        "exit_receiver": exit_cost("lab.serve", runs),
    }


def exit_cost(module: str, runs: int) -> Json:
    """Time a process's exit after importing `module`: normal finalization against os._exit."""
    out: Json = {}
    for how, call in (("normal", "sys.exit(0)"), ("os_exit", "os._exit(0)")):
        code = f"import os, sys, {module}; print('ready', flush=True); sys.stdin.read(); {call}"
        samples = []
        for _ in range(runs):
            process = subprocess.Popen(
                [sys.executable, "-c", code],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=PROJECT_ROOT,
                env=child_env(),
            )
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdout.readline()
            began = time.perf_counter()
            process.stdin.close()
            process.wait(30)
            samples.append(time.perf_counter() - began)
            process.stdout.close()
        out[how] = summary(samples)
    return out


def import_profile(module: str, top: int = 8) -> Json:
    """Return `python -X importtime` totals for `module`, self time grouped by top package."""
    argv = [sys.executable, "-X", "importtime", "-c", f"import {module}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    by_package: Counter[str] = Counter()
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        package = parts[2].strip().split(".")[0]
        by_package[package] += int(parts[0])
    total_ms = sum(by_package.values()) / 1000
    return {
        "module": module,
        "total_ms": round(total_ms, 1),
        "top_packages_ms": {k: round(v / 1000, 1) for k, v in by_package.most_common(top)},
    }


def breakdown(work: Path, certs: Path, jobs: int, runs: int, warmups: int) -> Json:
    """Run the suite in-process `runs` times with phase timers and probes; return medians."""
    samples: list[Json] = []
    for index in range(warmups + runs):
        sample = _one_breakdown(work / f"breakdown-{jobs}-{index}", certs, jobs)
        if index >= warmups:
            samples.append(sample)
    phases = {name: summary([s["phases"][name] for s in samples]) for name in PHASES}
    names = list(samples[-1]["probes"])
    probes = {name: summary([s["probes"].get(name, 0.0) for s in samples]) for name in names}
    last = samples[-1]
    return {
        "jobs": jobs,
        "runs": runs,
        "phases": phases,
        "in_process_total": summary([sum(s["phases"].values()) for s in samples]),
        "cells": {
            "count": last["cells"],
            "session_union": summary([s["session_union"] for s in samples]),
            "no_session": summary([s["phases"]["cells"] - s["session_union"] for s in samples]),
            "session_sum": summary([s["session_sum"] for s in samples]),
            "sessions": last["sessions"],
            "handshakes_ok": last["handshakes_ok"],
            "handshakes_failed": last["handshakes_failed"],
            "probes": probes,
            "probe_counts": last["probe_counts"],
            "patched": last["patched"],
        },
        "verdicts": last["verdicts"],
    }


def _one_breakdown(run_root: Path, certs: Path, jobs: int) -> Json:
    """Replay `tlslab run` step by step with timers; return phase seconds and cell probes."""
    phases: dict[str, float] = {}
    probes = Probes()
    began = time.perf_counter()
    loaded = load_suite(SUITE)
    phases["load_suite"] = time.perf_counter() - began
    specs = list(loaded.receivers.values())
    began = time.perf_counter()
    pki = ensure_certs(specs, certs)
    phases["certificates"] = time.perf_counter() - began
    run_id = new_run_id(loaded.suite.id, "local")
    run_dir = run_root / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    with contextlib.ExitStack() as stack:
        began = time.perf_counter()
        lab = stack.enter_context(LocalBackend().start(specs, pki, run_dir / "evidence"))
        phases["receivers_start"] = time.perf_counter() - began
        run = TimedLabRun(loaded, lab, run_dir, run_id, probes)
        cells = loaded.suite.cell_ids
        done = iter(range(1, len(cells) + 1))
        wall_start = time.time()
        began = time.perf_counter()
        with instrumented(probes), contextlib.redirect_stdout(out):
            run.run_cells(cells, jobs, lambda r: console.progress(next(done), len(cells), r))
        phases["cells"] = time.perf_counter() - began
        wall_end = time.time()
        began = time.perf_counter()
        write_report(run.report(), run_root)
        phases["report"] = time.perf_counter() - began
        stop_began = time.perf_counter()
    phases["receivers_stop"] = time.perf_counter() - stop_began
    began = time.perf_counter()
    with contextlib.redirect_stdout(out):
        report = run.report()
        print(console.matrix(report))
        print(console.totals(report))
    phases["console"] = time.perf_counter() - began
    records = [
        r for d in sorted((run_dir / "evidence").iterdir()) if d.is_dir() for r in read_sessions(d)
    ]
    intervals = [(float(r["started"]), float(r["ended"])) for r in records]
    versions = Counter(str(r.get("version")) for r in records if r.get("handshake") == "ok")
    return {
        "phases": phases,
        "cells": len(cells),
        "probes": _with_rests({name: probes.total(name) for name in CELL_PROBES}),
        "probe_counts": {name: probes.count(name) for name in CELL_PROBES},
        "patched": probes.patched,
        "session_union": union_seconds(intervals, wall_start, wall_end),
        "session_sum": sum(end - start for start, end in intervals),
        "sessions": len(records),
        "handshakes_ok": dict(versions),
        "handshakes_failed": sum(r.get("handshake") == "failed" for r in records),
        "verdicts": dict(Counter(r.verdict.value for r in report.results)),
    }


def _with_rests(totals: dict[str, float]) -> dict[str, float]:
    """Add what the probes leave over inside the driver's send and inside run_cell."""
    smtp = sum(totals[f"smtp.{method}"] for method in SMTP_PROBES)
    harness = sum(totals[name] for name in HARNESS_PROBES)
    return totals | {
        "driver_rest": totals["send"] - smtp - totals["client_context"],
        "run_cell_rest": totals["run_cell"] - totals["send"] - harness,
    }


def union_seconds(intervals: list[tuple[float, float]], low: float, high: float) -> float:
    """Return the length of the union of intervals, clipped to [low, high]."""
    total, cursor = 0.0, low
    for start, end in sorted(intervals):
        start, end = max(start, cursor), min(end, high)
        if end > start:
            total += end - start
            cursor = end
    return total


def shipped_receivers() -> list[ReceiverSpec]:
    """Return the study's nine receiver states (those of the ses-2025 suite), in file order."""
    study = set(load_suite("ses-2025").suite.receivers)
    files = sorted((DEFAULT_ROOT / "receivers").glob("*.yaml"))
    return [load_receiver(p) for p in files if p.stem in study]


def pinned(specs: list[ReceiverSpec]) -> dict[TlsVersion, ReceiverSpec]:
    """Return the receivers pinned to exactly one TLS version with a valid certificate."""
    return {
        s.tls_min: s
        for s in specs
        if s.starttls and s.tls_min == s.tls_max and s.certificate is CertState.VALID
    }


def handshakes(work: Path, certs: Path, count: int) -> Json:
    """Time STARTTLS handshakes per TLS version against the lab's tls10..tls13 receivers."""
    specs = shipped_receivers()
    pki = ensure_certs(specs, certs)
    results: dict[str, Any] = {}
    with LocalBackend().start(specs, pki, work / "handshake-evidence") as lab:
        for version, spec in sorted(pinned(specs).items(), key=lambda item: item[0].rank):
            end = lab.endpoint(spec.id)
            results[version.value] = measure((end.host, end.port), end.mx_host, version, count)
    return {"receiver": "lab (aiosmtpd, local backend)", "count": count, "versions": results}
