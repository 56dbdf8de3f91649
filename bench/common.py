"""Shared helpers: statistics, machine facts, CPU counters, progress lines, the tlslab command."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
Json = dict[str, Any]


def say(line: str) -> None:
    """Print one progress line on standard error (standard output carries the Markdown)."""
    stamp = time.strftime("%H:%M:%S")
    print(f"[bench {stamp}] {line}", file=sys.stderr, flush=True)


def summary(values: Sequence[float], digits: int = 4) -> Json:
    """Return n, median, min, max and the raw values (rounded) of a sample."""
    if not values:
        return {"n": 0, "median": None, "min": None, "max": None, "values": []}
    return {
        "n": len(values),
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "values": [round(v, digits) for v in values],
    }


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Return the given percentile (0..1) of a sample by nearest rank, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def tlslab_command() -> list[str]:
    """Return the argv prefix of the `tlslab` command of this interpreter's environment."""
    script = Path(sys.executable).parent / "tlslab"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "harness.cli"]


def child_env() -> dict[str, str]:
    """Return the environment for lab commands, without the TLSLAB_* overrides of the caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}


def timed_run(argv: list[str], timeout: float, cwd: Path = PROJECT_ROOT) -> Json:
    """Run a command to completion; return its wall seconds, exit status and output tail."""
    began = time.perf_counter()
    try:
        done = subprocess.run(
            argv, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"seconds": timeout, "status": None, "tail": f"timed out after {timeout} s"}
    seconds = time.perf_counter() - began
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    return {"seconds": round(seconds, 4), "status": done.returncode, "tail": " | ".join(tail)}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load_average() -> list[float]:
    """Return the 1, 5 and 15 minute load averages (other engineers' work shows up here)."""
    return [round(x, 2) for x in os.getloadavg()]


def cpu_times() -> tuple[float, float]:
    """Return (busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [float(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])
    return total - idle, total


def busy_fraction(before: tuple[float, float], after: tuple[float, float]) -> float | None:
    """Return the share of the machine's CPU time that was busy between two cpu_times()."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total > 0 else None


def process_cpu(pid: int, children: bool = False) -> float:
    """Return a process's CPU seconds (user+system), plus its reaped children's when asked."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = float(os.sysconf("SC_CLK_TCK"))
    used = float(fields[11]) + float(fields[12])
    if children:
        used += float(fields[13]) + float(fields[14])
    return used / ticks


def child_pids(parent: int) -> list[int]:
    """Return the ids of the live processes whose parent is `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def tree_cpu(root: int) -> float:
    """Return CPU seconds of a process, its reaped children and its live children."""
    return process_cpu(root, children=True) + sum(process_cpu(p) for p in child_pids(root))


def find_child(marker: str) -> int | None:
    """Return the id of this process's child whose command line contains or name is `marker`."""
    for pid in child_pids(os.getpid()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if marker.encode() in cmdline or name == marker:
            return pid
    return None


def cpu_model() -> str:
    """Return the CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version_of(argv: list[str]) -> str | None:
    """Return the first output line of a version command, or None when it is not there."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else None


def machine_info() -> Json:
    """Return the facts that make the numbers comparable: cores, CPU, versions, date, load."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "postfix": _version_of(["postconf", "-d", "-h", "mail_version"]),
        "docker": _version_of(["docker", "version", "--format", "{{.Server.Version}}"]),
        "load_average": load_average(),
    }
