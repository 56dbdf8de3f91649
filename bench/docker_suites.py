"""Docker (2): whole `tlslab run` commands on the Docker backend, warm, against their targets.

Each suite runs once to warm up (images present, certificates issued), then `runs` times into
fresh report folders; the median whole-command wall time is judged against the issue's bound.
The same suite on the local backend, timed in the same run, is the reference of the ratio.
"""

from __future__ import annotations

from pathlib import Path

from bench.common import Json, load_average, say, summary, timed_run, tlslab_command

RUN_TIMEOUT = 300.0
# (suite, bound in seconds for the whole warm command, whether the local backend can run it)
SUITES = (("ses-2025", 4.0, True), ("postfix", 8.5, False))


def _run(suite: str, backend: str, certs: Path, reports: Path) -> Json:
    """Run one suite once; return its wall seconds, exit status and output tail."""
    argv = [*tlslab_command(), "run", "--suite", suite, "--backend", backend]
    argv += ["--certs", str(certs), "--reports", str(reports)]
    return timed_run(argv, RUN_TIMEOUT)


def whole_runs(work: Path, certs: Path, quick: bool) -> Json:
    """Time each suite's whole warm command on Docker (and ses-2025 locally, the reference)."""
    runs = 1 if quick else 3
    result: Json = {"runs": runs, "load_before": load_average(), "suites": {}}
    for suite, bound, local_too in SUITES:
        say(f"docker: whole `tlslab run --suite {suite} --backend docker`, warm-up")
        warm_up = _run(suite, "docker", certs, work / f"{suite}-warm-up")
        row: Json = {"bound_s": bound, "warm_up": warm_up}
        samples = []
        for index in range(runs):
            say(f"docker: whole `tlslab run --suite {suite} --backend docker` {index + 1}/{runs}")
            samples.append(_run(suite, "docker", certs, work / f"{suite}-{index}"))
        failed = [s for s in [warm_up, *samples] if s["status"] != 0]
        row["docker_s"] = summary([s["seconds"] for s in samples], 3)
        if local_too:
            local = [_run(suite, "local", certs, work / f"{suite}-local-{i}") for i in range(runs)]
            failed += [s for s in local if s["status"] != 0]
            row["local_s"] = summary([s["seconds"] for s in local], 3)
            row["ratio_to_local"] = round(row["docker_s"]["median"] / row["local_s"]["median"], 2)
        if failed:
            row["error"] = "; ".join(f"exit {s['status']}: {s['tail']}" for s in failed)[:600]
        row["met"] = not failed and row["docker_s"]["median"] <= bound
        result["suites"][suite] = row
    result["load_after"] = load_average()
    result["met"] = all(row["met"] for row in result["suites"].values())
    return result


def render(s: Json) -> list[str]:
    """Return the table of whole warm Docker commands against their bounds."""
    lines = ["| suite | warm wall s (median) | bound | local backend s | ratio | |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for suite, row in s["suites"].items():
        local = row.get("local_s", {}).get("median")
        verdict = "met" if row["met"] else "**NOT met**"
        if "error" in row:
            verdict += f" ({row['error']})"
        lines.append(
            f"| {suite} | {row['docker_s']['median']} | <= {row['bound_s']:g} s | "
            f"{local if local is not None else '-'} | {row.get('ratio_to_local', '-')} | "
            f"{verdict} |"
        )  # fmt: skip
    lines += ["", f"Whole `tlslab run` commands, {s['runs']} warm runs each after a warm-up; load "
              f"average {s['load_before']} before, {s['load_after']} after.", ""]  # fmt: skip
    return lines
