"""`python -m bench.docker_timeline OUT.json ARGS...`: one Docker `tlslab ARGS` run as a timeline.

The same `harness.cli.main` as the `tlslab` script, with wall-clock marks around the Docker
backend's steps (network, each container's start, each ready wait, the DNS, each sender
container and worker, the cells, the report, the removal) and the engine's own container events
(create, start, kill, die, destroy) of the run's containers. Just before the removal it reads
each container's CPU seconds (cgroup v1 cpuacct, or v2 cpu.stat) and the engine's (dockerd and
containerd with their reaped children, e.g. runc and iptables). It prints the timeline and the
phase summary on standard error and writes both to OUT.json. For diagnosis, not for targets;
the engine is shared, so its CPU includes whatever else ran on it at the same time.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

T0 = time.time()
_MARKS: list[tuple[float, str]] = [(T0, "process start")]
_LOCK = threading.Lock()

import docker  # noqa: E402  (the imports are part of what the timeline shows)

import harness.run_output as run_output  # noqa: E402
import harness.runner as runner  # noqa: E402
import harness.senders.worker_pool as worker_pool  # noqa: E402
import lab.backends.docker as backend  # noqa: E402
from harness import cli  # noqa: E402

ENGINE_NAMES = ("dockerd", "containerd")
CGROUP_FILES = ("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage", "/sys/fs/cgroup/docker/{id}")


def mark(what: str) -> None:
    """Record `what` at the current wall-clock time."""
    with _LOCK:
        _MARKS.append((time.time(), what))


def _short(name: str) -> str:
    """Return a container name without its `tlslab-<run>-` prefix."""
    return name.split("-", 2)[-1]


def _around(owner: Any, attribute: str, label: str, detail: Callable[..., str]) -> None:
    """Wrap owner.attribute to mark `<label> start|end <detail>` around each call."""
    original: Callable[..., Any] = getattr(owner, attribute)

    @functools.wraps(original)
    def marked(*args: Any, **kwargs: Any) -> Any:
        extra = detail(*args, **kwargs)
        mark(f"{label} start {extra}".rstrip())
        try:
            return original(*args, **kwargs)
        finally:
            mark(f"{label} end {extra}".rstrip())

    setattr(owner, attribute, marked)


def _nothing(*_args: Any, **_kwargs: Any) -> str:
    """Return no detail."""
    return ""


def engine_cpu() -> float:
    """Return the CPU seconds of dockerd and containerd so far, reaped children included."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() not in ENGINE_NAMES:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / ticks
    return total


def container_cpu(container_id: str) -> float | None:
    """Return a container's CPU seconds from its cgroup (v1 cpuacct or v2 cpu.stat), if found."""
    v1 = Path(CGROUP_FILES[0].format(id=container_id))
    if v1.is_file():
        return int(v1.read_text()) / 1e9
    stat = Path(CGROUP_FILES[1].format(id=container_id)) / "cpu.stat"
    if stat.is_file():
        for line in stat.read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1]) / 1e6
    return None


class Recorder:
    """The marks, the engine's events and the CPU figures of one run."""

    def __init__(self) -> None:
        """Start following the engine's container events; read the engine's CPU so far."""
        self.client = docker.from_env()
        self.events: list[dict[str, Any]] = []
        self.cpu: dict[str, float] = {}
        self.engine_start = engine_cpu()
        threading.Thread(target=self._follow, daemon=True).start()
        self._patch()

    def _follow(self) -> None:
        """Keep the container events of lab runs (those with the run label)."""
        for event in self.client.events(decode=True, filters={"type": "container"}, since=T0):
            attributes = event.get("Actor", {}).get("Attributes", {})
            if backend.RUN_LABEL in attributes and not event.get("Action", "").startswith("exec"):
                self.events.append(event)

    def _patch(self) -> None:
        """Mark the backend's, the runner's and the worker pool's steps."""
        lab = backend._LabContainers
        _around(lab, "__init__", "network create", _nothing)
        _around(lab, "start_receivers", "receivers' containers", _nothing)
        _around(lab, "_run", "container", lambda _self, name, *_a, **_k: name)
        _around(lab, "await_receiver", "ready wait", lambda _self, c: _short(c.name))
        _around(lab, "start_dns", "dns", _nothing)
        _around(lab, "sender_host", "sender container", lambda _self, spec: spec.role)
        _around(worker_pool.Worker, "__init__", "worker", lambda _s, host, *_a: _short(host.name))
        _around(runner.LabRun, "run_cells", "cells", _nothing)
        _around(run_output, "write_report", "report", _nothing)
        original = lab.remove_all

        def remove_all(containers: Any) -> None:
            for container in containers.containers:
                seconds = container_cpu(container.id)
                if seconds is not None:
                    self.cpu[_short(container.name)] = seconds
            self.cpu["engine until the removal"] = engine_cpu() - self.engine_start
            mark("removal start")
            try:
                original(containers)
            finally:
                mark("removal end")
                self.cpu["engine in all"] = engine_cpu() - self.engine_start

        lab.remove_all = remove_all  # type: ignore[method-assign,assignment]

    def rows(self) -> list[tuple[float, str]]:
        """Return the marks and the engine's events in time order, in seconds since the start."""
        rows = [(t - T0, what) for t, what in _MARKS]
        for event in self.events:
            name = _short(event["Actor"]["Attributes"].get("name", "?"))
            rows.append((event["timeNano"] / 1e9 - T0, f"  engine {event['Action']} {name}"))
        return sorted(rows)


def phases(rows: list[tuple[float, str]]) -> dict[str, float]:
    """Return the run's phases in seconds, from the first and last time of each mark."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for seconds, what in rows:
        first.setdefault(what, seconds)
        last[what] = seconds

    def at(what: str, prefix: bool = False) -> float:
        found = [s for w, s in first.items() if w == what or (prefix and w.startswith(what))]
        return min(found) if found else float("nan")

    def end(what: str) -> float:
        found = [s for w, s in last.items() if w.startswith(what)]
        return max(found) if found else float("nan")

    return {
        "until the network exists": at("network create end"),
        "receivers' containers created and started": at("receivers' containers end")
        - at("receivers' containers start"),
        "then until every receiver and the DNS answer": at("cells start")
        - at("receivers' containers end"),
        "first sender container up (from the lab up; < 0: before)": at("sender container end", True)
        - at("cells start"),
        "first worker ready (after its container)": at("worker end", True)
        - at("sender container end", True),
        "cells (from the lab up)": at("cells end") - at("cells start"),
        "report": at("report end") - at("report start"),
        "removal": at("removal end") - at("removal start"),
        "whole command": end("main end"),
    }


def main() -> int:
    """Run the command with the recorder, print and write its timeline, return its status."""
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    recorder = Recorder()
    mark("imported")
    status = cli.main(argv)
    mark("main end")
    time.sleep(0.3)  # the engine's last events
    usage = resource.getrusage(resource.RUSAGE_SELF)
    recorder.cpu["harness process"] = usage.ru_utime + usage.ru_stime
    rows = recorder.rows()
    summary = {name: round(seconds, 3) for name, seconds in phases(rows).items()}
    cpu = {name: round(seconds, 3) for name, seconds in recorder.cpu.items()}
    for seconds, what in rows:
        print(f"{seconds:8.3f} {what}", file=sys.stderr)
    for name, seconds in summary.items():
        print(f"phase {seconds:7.3f} s  {name}", file=sys.stderr)
    print(f"cpu seconds: {json.dumps(cpu)}", file=sys.stderr)
    workers = sum(1 for _, what in rows if what.startswith("worker end"))
    result = {"phases": summary, "cpu_s": cpu, "workers": workers, "load": os.getloadavg()}
    out.write_text(json.dumps({**result, "timeline": rows}, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
