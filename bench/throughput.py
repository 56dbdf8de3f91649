"""Receiver throughput: deliveries/s per TLS version, the lab's receiver next to a real Postfix."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from bench.common import (
    Json,
    busy_fraction,
    cpu_times,
    find_child,
    free_port,
    process_cpu,
    say,
    summary,
    tree_cpu,
)
from bench.handshake import measure
from bench.loadgen import HELO, MAIL_FROM, Target, message, run_load
from bench.postfix_receiver import SMTP_SOURCE, PostfixUnavailable, running_postfix
from bench.suite_bench import pinned, shipped_receivers
from lab.backends import LocalBackend
from lab.evidence_store import EvidenceStore
from lab.pki import ensure_certs
from lab.spec import ReceiverSpec

PLAINTEXT = "plaintext"
MEMORY_MARKS = (2_000, 20_000)  # messages in all when the receiver's peak RSS is read
MEMORY_MARKS_QUICK = (20, 200)
FULL = {"messages": 500, "concurrency": 10, "limit_s": 60, "repeats": 3, "warmup": 20,
        "handshakes": 200}  # fmt: skip
QUICK = {"messages": 10, "concurrency": 2, "limit_s": 20, "repeats": 1, "warmup": 2,
         "handshakes": 5}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Receiver:
    """One receiver under load: where each receiver state listens, and its CPU counter."""

    name: str
    addresses: Mapping[str, tuple[str, int]]
    cpu: Callable[[], float] | None

    def target(self, spec: ReceiverSpec) -> Target:
        """Return the load target for a receiver state (its TLS version pinned, or plaintext)."""
        host, port = self.addresses[spec.id]
        version = spec.tls_min if spec.starttls else None
        return Target(host, port, spec.mx_host, spec.domain, version)


def smtp_source_capability() -> Json:
    """Return whether Debian's smtp-source can speak STARTTLS, with its usage line as evidence."""
    if not Path(SMTP_SOURCE).exists():
        return {"present": False, "starttls": False, "usage": None}
    done = subprocess.run([SMTP_SOURCE], capture_output=True, text=True, timeout=10, check=False)
    lines = (done.stderr or done.stdout).strip().splitlines()
    usage = lines[-1] if lines else ""
    return {"present": True, "starttls": "tls" in usage.lower(), "usage": usage}


def run_section(work: Path, certs: Path, quick: bool) -> Json:
    """Measure both receivers with the same generator, alternating them within each repeat."""
    settings = QUICK if quick else FULL
    specs = shipped_receivers()
    pki = ensure_certs(specs, certs)
    versions = pinned(specs)
    modes = {PLAINTEXT: next(s for s in specs if not s.starttls)}
    modes |= {v.value: versions[v] for v in sorted(versions, key=lambda v: v.rank)}
    chosen = list(modes.values())
    result: Json = {"status": "ok", "settings": settings, "generator": "bench.loadgen (asyncio)"}
    result["smtp_source"] = smtp_source_capability()
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(LocalBackend().start(chosen, pki, work / "evidence"))
        ours_pid = find_child("lab.serve")
        receivers = [
            Receiver(
                "ours",
                {s.id: (lab.endpoint(s.id).host, lab.endpoint(s.id).port) for s in chosen},
                _cpu_of(process_cpu, ours_pid),
            )
        ]
        try:
            ports = [free_port() for _ in chosen]
            postfix = stack.enter_context(running_postfix(chosen, pki, ports))
            addresses = {k: (v.host, v.port) for k, v in postfix.listeners.items()}
            receivers.append(Receiver("postfix", addresses, _cpu_of(tree_cpu, postfix.master_pid)))
            result["postfix"] = {"status": "ok", "version": _postfix_version()}
        except PostfixUnavailable as error:
            say(f"throughput: Postfix skipped: {error}")
            result["postfix"] = {"status": "skipped", "reason": str(error)}
        result["modes"] = {}
        for mode, spec in modes.items():
            say(f"throughput: {mode}, {settings['messages']} messages x{settings['repeats']}")
            result["modes"][mode] = _compare(receivers, spec, settings)
        result["smtp_source_plaintext"] = _smtp_source(receivers, modes[PLAINTEXT], settings)
        say(f"throughput: handshake latency, {settings['handshakes']} per version")
        result["handshake"] = _handshakes(receivers, modes, settings["handshakes"])
        result["memory"] = memory_growth(receivers[0], modes[PLAINTEXT], ours_pid, quick)
    result["target"] = throughput_target(result)
    say("throughput: evidence durability (store_message, append_session)")
    result["evidence_store"] = evidence_cost(work / "evidence-cost", settings["handshakes"])
    return result


def memory_growth(receiver: Receiver, spec: ReceiverSpec, pid: int | None, quick: bool) -> Json:
    """Return the receiver's peak RSS (VmHWM) after 2,000 and after 20,000 plaintext messages."""
    marks = MEMORY_MARKS_QUICK if quick else MEMORY_MARKS
    if pid is None:
        return {"status": "skipped", "reason": "the receiver process was not found"}
    out: Json = {"status": "ok", "pid_start_rss_mib": _hwm_mib(pid), "after": {}}
    sent = 0
    for mark in marks:
        say(f"throughput: memory, {mark} plaintext messages in all")
        load = run_load(receiver.target(spec), mark - sent, 10, 600)
        sent = mark
        out["after"][str(mark)] = {"peak_rss_mib": _hwm_mib(pid), "failed": load.get("failed")}
    return out


def _hwm_mib(pid: int) -> float | None:
    """Return a process's peak resident set size in MiB (VmHWM from /proc), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


def throughput_target(result: Json) -> Json:
    """Return whether the lab's receiver reached 1.0x Postfix on every row, with the rows."""
    rows = {mode: v.get("ratio_per_s") for mode, v in result.get("modes", {}).items()}
    source = result.get("smtp_source_plaintext", {})
    if source.get("status") == "ok":
        rows["plaintext (smtp-source)"] = source.get("ratio_per_s")
    met = bool(rows) and all(r is not None and r >= 1.0 for r in rows.values())
    return {"ratio_target": 1.0, "ratios": rows, "met": met}


def evidence_cost(root: Path, count: int) -> Json:
    """Time the receiver's durable writes per delivery: the .eml and the session record."""
    store = EvidenceStore(root, "bench")
    payload = message(0, "bench.lab.test") + b"x" * 200
    record = {
        "receiver": "bench",
        "session_id": "bench-127.0.0.1-40000-0",
        "messages": [{"queue_id": "0123456789AB", "message_id": "<m@sender.lab.test>"}],
        "transcript": [f"C: COMMAND {i} " + "." * 40 for i in range(14)],
    }
    stored, appended = [], []
    for index in range(count):
        began = time.perf_counter()
        store.store_message(f"{index:012X}", payload)
        stored.append((time.perf_counter() - began) * 1000)
        began = time.perf_counter()
        store.append_session(record)
        appended.append((time.perf_counter() - began) * 1000)
    return {"store_message_ms": summary(stored, 3), "append_session_ms": summary(appended, 3)}


def _cpu_of(counter: Callable[[int], float], pid: int | None) -> Callable[[], float] | None:
    """Return a CPU-seconds probe for a process id, or None when the id is unknown."""
    if pid is None:
        return None
    return lambda: counter(pid)


def _postfix_version() -> str | None:
    """Return Postfix's mail_version."""
    done = subprocess.run(
        ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or None


def _compare(receivers: list[Receiver], spec: ReceiverSpec, settings: dict[str, int]) -> Json:
    """Warm up, then measure every receiver in turn within each repeat; add the ratios."""
    messages, concurrency, limit = (
        settings["messages"],
        settings["concurrency"],
        settings["limit_s"],
    )
    for receiver in receivers:
        run_load(receiver.target(spec), settings["warmup"], concurrency, limit)
    samples: dict[str, list[Json]] = {r.name: [] for r in receivers}
    for _ in range(settings["repeats"]):
        for receiver in receivers:
            target = receiver.target(spec)
            load = functools.partial(run_load, target, messages, concurrency, limit)
            sample = _with_cpu(load, receiver)
            samples[receiver.name].append(sample)
    return _ratios({name: _aggregate(runs) for name, runs in samples.items()})


def _with_cpu(run: Callable[[], Json], receiver: Receiver) -> Json:
    """Run one measurement, adding the receiver's CPU time and the machine's busy share."""
    machine = cpu_times()
    before = receiver.cpu() if receiver.cpu else 0.0
    result = run()
    used = receiver.cpu() - before if receiver.cpu else None
    delivered = result.get("delivered") or 0
    result["receiver_cpu_s"] = None if used is None else round(used, 3)
    result["receiver_cpu_ms_per_delivery"] = (
        round(used * 1000 / delivered, 3) if used is not None and delivered else None
    )
    result["machine_busy"] = busy_fraction(machine, cpu_times())
    return result


def _aggregate(runs: list[Json]) -> Json:
    """Return the medians of repeated measurements, with every run kept."""
    cpu = [r["receiver_cpu_ms_per_delivery"] for r in runs if r["receiver_cpu_ms_per_delivery"]]
    return {
        "per_s": summary([r["per_s"] for r in runs if r.get("per_s")], 2),
        "receiver_cpu_ms_per_delivery": summary(cpu, 3),
        "failed": sum(r.get("failed", 0) for r in runs),
        "runs": runs,
    }


def _ratios(by_receiver: dict[str, Json]) -> Json:
    """Add ours/postfix ratios of throughput and of receiver CPU per delivery."""
    out: Json = dict(by_receiver)
    ours, postfix = by_receiver.get("ours"), by_receiver.get("postfix")
    if ours and postfix:
        out["ratio_per_s"] = _ratio(ours["per_s"]["median"], postfix["per_s"]["median"])
        out["ratio_cpu_per_delivery"] = _ratio(
            ours["receiver_cpu_ms_per_delivery"]["median"],
            postfix["receiver_cpu_ms_per_delivery"]["median"],
        )
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    """Return a/b rounded, or None when either is missing."""
    return round(a / b, 3) if a and b else None


def _smtp_source(receivers: list[Receiver], spec: ReceiverSpec, settings: dict[str, int]) -> Json:
    """Plaintext deliveries/s with Debian's smtp-source (it has no STARTTLS), both receivers."""
    if not Path(SMTP_SOURCE).exists():
        return {"status": "skipped", "reason": f"{SMTP_SOURCE} missing (Debian package postfix)"}
    say(f"throughput: smtp-source plaintext, {settings['messages']} messages")
    samples: dict[str, list[Json]] = {r.name: [] for r in receivers}
    for _ in range(settings["repeats"]):
        for receiver in receivers:
            target = receiver.target(spec)
            sample = _with_cpu(functools.partial(_source_once, target, settings), receiver)
            samples[receiver.name].append(sample)
    return {"status": "ok"} | _ratios({n: _aggregate(r) for n, r in samples.items()})


def _source_once(target: Target, settings: dict[str, int]) -> Json:
    """Run smtp-source once: M messages over C parallel sessions, one message per session."""
    messages = settings["messages"]
    argv = [SMTP_SOURCE, "-4", "-s", str(settings["concurrency"]), "-m", str(messages),
            "-l", "500", "-M", HELO, "-f", MAIL_FROM, "-t", f"inbox@{target.domain}",
            f"{target.host}:{target.port}"]  # fmt: skip
    began = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=settings["limit_s"])
    except subprocess.TimeoutExpired:
        return {"delivered": 0, "failed": messages, "per_s": None, "error": "timed out"}
    seconds = time.perf_counter() - began
    ok = done.returncode == 0
    return {
        "delivered": messages if ok else 0,
        "failed": 0 if ok else messages,
        "seconds": round(seconds, 4),
        "per_s": round(messages / seconds, 2) if ok else None,
        "error": None if ok else done.stderr.strip()[-300:],
    }


def _handshakes(receivers: list[Receiver], modes: dict[str, ReceiverSpec], count: int) -> Json:
    """Time sequential STARTTLS handshakes per version against every receiver."""
    out: Json = {}
    for receiver in receivers:
        versions: Json = {}
        for mode, spec in modes.items():
            if mode == PLAINTEXT:
                continue
            target = receiver.target(spec)
            versions[mode] = measure(
                (target.host, target.port), target.mx_host, spec.tls_min, count
            )
        out[receiver.name] = versions
    return out
