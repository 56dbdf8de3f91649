"""The scoreboard (the lab's biggest job): whole-command wall time cold and warm, per family.

Runs `tlslab scoreboard` as a user would, twice or more into fresh folders: the first run makes
its certificates and (only when this source tree has no images yet) builds the images; the later
runs reuse both. Each run's scoreboard.json says where the time went (start-up, cells, each
receiver family). The reference for the ratio is measured in the same run: the sum of every
cell's seconds, what the board would cost with one cell at a time.
"""

from __future__ import annotations

import json
import resource
import subprocess
import time
from pathlib import Path

from bench.common import PROJECT_ROOT, Json, child_env, say, summary, tlslab_command

TARGET_SECONDS = 180.0  # the whole board, warm images, this 2-core machine
RUN_TIMEOUT = 900.0
QUICK = ("--receivers", "tls13,no-starttls,no-shared-cipher", "--senders", "postfix-may,paubox")


def _children_cpu() -> float:
    """Return the user + system CPU seconds of every finished child process so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(work: Path, certs: Path, name: str, subset: tuple[str, ...]) -> Json:
    """Run the scoreboard once into `work/name`; return its wall time and the board's timings."""
    argv = [*tlslab_command(), "scoreboard", "--reports", str(work / name), "--certs", str(certs)]
    cpu = _children_cpu()
    began = time.perf_counter()
    try:
        done = subprocess.run(
            [*argv, *subset], cwd=PROJECT_ROOT, env=child_env(), capture_output=True, text=True,
            timeout=RUN_TIMEOUT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"seconds": RUN_TIMEOUT, "error": f"timed out after {RUN_TIMEOUT:g} s"}
    ran: Json = {"seconds": round(time.perf_counter() - began, 2)}
    ran["harness_cpu_s"] = round(_children_cpu() - cpu, 2)  # the tlslab process and its children
    board_file = work / name / "scoreboard" / "scoreboard.json"
    if done.returncode != 0 or not board_file.is_file():
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-4:])
        ran["error"] = f"exit {done.returncode}: {tail}"
        return ran
    board = json.loads(board_file.read_text(encoding="utf-8"))
    ran["built_images"] = "building images" in done.stdout + done.stderr
    ran["cells"] = len(board["cells"])
    ran["start_s"] = board["start_seconds"]
    ran["cells_s"] = board["cells_seconds"]
    ran["serial_cells_s"] = round(sum(c["seconds"] for c in board["cells"]), 2)
    ran["families"] = board["families"]
    ran["senders"] = len(board["senders"])
    ran["receivers"] = len(board["receivers"])
    return ran


def run_section(work: Path, certs: Path, quick: bool) -> Json:
    """Measure the scoreboard cold (fresh certificates) and warm; skip without Docker."""
    from lab.backends import BackendError
    from lab.backends.docker import docker_client

    try:
        docker_client()
    except BackendError as error:
        return {"status": "skipped", "reason": f"no Docker engine answers: {error}"}
    work.mkdir(parents=True, exist_ok=True)
    subset = QUICK if quick else ()
    warm_runs = 1 if quick else 2
    own_certs = work / "certs"  # its own: the first run makes them, as a fresh checkout would
    say("scoreboard: first run (fresh certificates and folders)")
    result: Json = {"status": "ok", "subset": list(subset), "target_s": TARGET_SECONDS}
    result["cold"] = one_run(work, own_certs, "cold", subset)
    warm = []
    for index in range(warm_runs):
        say(f"scoreboard: warm run {index + 1}/{warm_runs}")
        warm.append(one_run(work, own_certs, f"warm-{index}", subset))
    result["warm"] = warm
    good = [w for w in warm if "error" not in w]
    if "error" in result["cold"] or len(good) < len(warm):
        result["status"] = "error"
        result["error"] = "; ".join(r["error"] for r in [result["cold"], *warm] if "error" in r)
        return result
    result["warm_s"] = summary([w["seconds"] for w in good], 2)
    median = result["warm_s"]["median"]
    result["meets_target"] = not subset and median <= TARGET_SECONDS
    serial = summary([w["serial_cells_s"] for w in good], 2)["median"]
    cells = summary([w["cells_s"] for w in good], 2)["median"]
    result["concurrency_ratio"] = round(serial / cells, 2) if cells else None
    return result


def render_section(s: Json) -> list[str]:
    """Return the section's Markdown: cold and warm wall time, start-up, cells, per family."""
    cold, warm = s["cold"], s["warm"]
    scope = f"subset {' '.join(s['subset'])}" if s["subset"] else "the whole board"
    lines = [
        f"{scope}: {cold['cells']} cells ({cold['receivers']} receiver states x "
        f"{cold['senders']} senders), one lane per sender.",
        "",
    ]
    rows = [["run", "wall s", "start-up s", "cells s", "sum of cell s", "tlslab CPU s", "built"]]
    for label, run in [("first (fresh certs)", cold)] + [
        (f"warm {i + 1}", w) for i, w in enumerate(warm)
    ]:
        rows.append(
            [label, f"{run['seconds']:.1f}", f"{run['start_s']:.1f}", f"{run['cells_s']:.1f}",
             f"{run['serial_cells_s']:.1f}", f"{run['harness_cpu_s']:.1f}",
             "images built" if run["built_images"] else "-"]
        )  # fmt: skip
    lines += _table(rows)
    if s["subset"]:
        target = f"a subset, so not judged against the {s['target_s']:g} s target"
    else:
        verb = "meets" if s["meets_target"] else "does not meet"
        target = f"{verb} the target of {s['target_s']:g} s for the whole board"
    lines += [
        "",
        f"Warm median {s['warm_s']['median']} s: {target}. Cells ran {s['concurrency_ratio']}x "
        "faster than one at a time (sum of cell seconds / cells wall time, same run). "
        "tlslab CPU: the command's own process and children (not the Docker engine's).",
        "",
        "Per family (last warm run):",
        "",
    ]
    fam = [["family", "cells", "wall s", "sum of cell s"]]
    fam += [
        [f["family"], str(f["cells"]), f"{f['wall_seconds']:.1f}", f"{f['cell_seconds']:.1f}"]
        for f in warm[-1]["families"]
    ]
    return [*lines, *_table(fam)]


def _table(rows: list[list[str]]) -> list[str]:
    """Return rows as a Markdown table, the first row the header."""
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return out + ["| " + " | ".join(r) + " |" for r in rows[1:]]


__all__ = ["render_section", "run_section"]
