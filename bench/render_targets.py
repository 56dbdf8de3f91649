"""Render the performance targets (issue 14): one table of ratios, then the new sections."""

from __future__ import annotations

from typing import Any

from bench.common import Json


def _fmt(value: Any, digits: int = 2) -> str:
    """Format a number or a missing value."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _verdict(met: Any) -> str:
    """Return `met`, `NOT met` or `not measured`."""
    if met is None:
        return "not measured"
    return "met" if met else "**NOT met**"


def targets(sections: Json) -> list[str]:
    """Return the table of every target: measured value, reference, ratio, met or not."""
    rows: list[list[str]] = []
    suite = sections.get("suite", {})
    start = suite.get("startup_target")
    if suite.get("status") == "ok" and start:
        rows.append(["1. `tlslab run --suite ses-2025`, whole process",
                     f"{_fmt(suite['whole_command']['median'], 3)} s",
                     f"`python -c \"{start['floor_code']}\"` "
                     f"{_fmt(start['floor_s']['median'], 3)} s",
                     f"{_fmt(start['ratio'])}x (target <= {start['target_ratio']:g}x)",
                     _verdict(start["met"])])  # fmt: skip
    else:
        rows.append(["1. local suite start-up", "-", "-", "-", _verdict(None)])
    whole = sections.get("docker", {}).get("whole_commands")
    for suite, row in (whole or {}).get("suites", {}).items():
        local = row.get("local_s", {}).get("median")
        rows.append([f"2. `tlslab run --suite {suite} --backend docker`, warm, whole command",
                     f"{_fmt(row['docker_s']['median'])} s",
                     f"local backend {_fmt(local)} s" if local is not None else "-",
                     f"{_fmt(row.get('ratio_to_local'))}x local (target <= {row['bound_s']:g} s)",
                     _verdict(row["met"])])  # fmt: skip
    if not whole:
        rows.append(["2. Docker run warm, Postfix suite warm", "-", "-", "-", _verdict(None)])
    external = sections.get("external", {})
    for row in external.get("table", []) if external.get("status") == "ok" else []:
        rows.append([f"3. 27 relay cells (never delivered), --jobs {row['jobs']}",
                     f"{_fmt(row['wall_s']['median'])} s",
                     f"window {external['observe_timeout_seconds']:g} s; same suite with a "
                     f"{external['reference_window_s']:g} s window "
                     f"{_fmt(row['reference_wall_s'])} s",
                     f"{_fmt(row['windows_beyond_reference'])} windows (target <= 1.5)",
                     _verdict(row["met"])])  # fmt: skip
    throughput = sections.get("throughput", {})
    target = throughput.get("target") if throughput.get("status") == "ok" else None
    if target:
        worst = [r for r in target["ratios"].values() if r is not None]
        rows.append(["4. receiver deliveries/s, every row", ", ".join(
                     f"{mode} {_fmt(r)}x" for mode, r in target["ratios"].items()),
                     "Postfix smtpd, same generator, same run",
                     f"min {_fmt(min(worst)) if worst else '-'}x (target >= 1.0x)",
                     _verdict(target["met"])])  # fmt: skip
    scale = sections.get("scale", {})
    if scale.get("status") == "ok" and scale.get("table"):
        last = scale["table"][-1]
        rows.append([f"5. {last['cells']} local cells, --jobs {scale['jobs']}",
                     f"{_fmt(last['seconds'])} s ({last['cells_per_s']} cells/s)",
                     scale["target"], "-", _verdict(scale["met"])])  # fmt: skip
    lines = ["| target | measured | reference (same run) | ratio | |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def external(s: Json) -> list[str]:
    """Return the relay cells' wall time per --jobs, against the same suite without its watch."""
    lines = ["| --jobs | wall s (median) | same suite, 0.01 s window | windows beyond | verdicts |",
             "|---|---|---|---|---|"]  # fmt: skip
    for row in s["table"]:
        lines.append(f"| {row['jobs']} | {_fmt(row['wall_s']['median'])} | "
                     f"{_fmt(row['reference_wall_s'])} | {_fmt(row['windows_beyond_reference'])} | "
                     f"{row['verdicts']} |")  # fmt: skip
    lines += ["", f"{s['cells']} cells of a loopback relay that accepts and never delivers "
              f"(observe_timeout_seconds {s['observe_timeout_seconds']:g}); it accepted "
              f"{s['accepted_by_relay']} messages. Target: {s['target']}.", ""]  # fmt: skip
    return lines


def scale(s: Json) -> list[str]:
    """Return cells/s and peak RSS per generated suite size."""
    lines = ["| cells | receivers x senders | wall s | cells/s | peak RSS MiB | verdicts |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for row in s["table"]:
        lines.append(f"| {row['cells']} | {row['receivers']} x {row['senders']} | "
                     f"{_fmt(row['seconds'])} | {row['cells_per_s']} | {row['peak_rss_mib']} | "
                     f"{row['verdicts']} |")  # fmt: skip
    lines += ["", f"`tlslab run --jobs {s['jobs']}`, certificates issued before the clock; peak "
              "RSS is the largest of the run's processes (harness or receiver child). "
              f"Target: {s['target']} — {_verdict(s['met'])}.", ""]  # fmt: skip
    return lines


def memory(s: Json) -> list[str]:
    """Return the receiver's peak RSS after 2,000 and 20,000 messages (or the quick counts)."""
    memory_data = s.get("memory") or {}
    if memory_data.get("status") != "ok":
        return []
    parts = [f"after {n} messages {v['peak_rss_mib']} MiB" for n, v in memory_data["after"].items()]
    return [f"Receiver peak RSS (VmHWM): at start {memory_data['pid_start_rss_mib']} MiB, "
            + ", ".join(parts) + ".", ""]  # fmt: skip
