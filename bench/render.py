"""Render bench.json as Markdown tables: bench.md and the command's standard output."""

from __future__ import annotations

from typing import Any

from bench import docker_suites, render_targets
from bench.common import Json
from bench.scoreboard_bench import render_section as scoreboard_section

TARGET_SECONDS = 3.0


def _n(value: Any, digits: int = 3) -> str:
    """Format a number (or a missing value) for a table cell."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _ms(seconds: float | None) -> str:
    """Format seconds as milliseconds."""
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _spread(stats: Json | None, digits: int = 3) -> str:
    """Format a summary as `median (min-max)`."""
    if not stats or stats.get("median") is None:
        return "-"
    if stats["n"] == 1:
        return _n(stats["median"], digits)
    return f"{_n(stats['median'], digits)} ({_n(stats['min'], digits)}-{_n(stats['max'], digits)})"


def _ms_range(stats: Json | None) -> str:
    """Format a summary's min-max in milliseconds."""
    if not stats or stats.get("min") is None:
        return "-"
    return f"{stats['min'] * 1000:.0f}-{stats['max'] * 1000:.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Return a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _skipped(section: Json) -> list[str] | None:
    """Return the lines for a skipped or failed section, or None when it ran."""
    if section.get("status") == "skipped":
        return [f"Skipped: {section.get('reason')}", ""]
    if section.get("status") == "error":
        return [f"**Failed:** `{section.get('error')}`", ""]
    return None


def render(data: Json) -> str:
    """Return the whole report as Markdown."""
    m = data["machine"]
    lines = [
        "# Sender TLS Lab — benchmark",
        "",
        f"{m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB; Python {m['python']}, "
        f"{m['openssl']}; Postfix {m['postfix'] or '-'}; Docker {m['docker'] or '-'}; "
        f"{m['date']}; mode `{data['mode']}`; load average {m['load_average']} at start, "
        f"{data['load_average_end']} at the end.",
        "",
        "Figures are medians after warm-ups, with (min-max) over the runs; the machine is shared, "
        "so other work shows up as spread. Raw numbers: `bench.json`.",
        "",
    ]
    sections = data["sections"]
    lines += ["## Targets (ratios against references measured in the same run)", ""]
    lines += render_targets.targets(sections)
    for title, key, renderer in (
        ("1. `tlslab run --suite ses-2025` on the local backend", "suite", _suite),
        ("2. Scaling: 9 receivers x N generated sender profiles", "scaling", _scaling),
        ("3. Receiver throughput: the lab's receiver and Postfix smtpd", "throughput", _throughput),
        ("4. Docker backend: cold and warm start of every receiver", "docker", _docker),
        ("5. The scoreboard: every receiver x every sender", "scoreboard", scoreboard_section),
        (
            "6. External senders: submitted, then watched together",
            "external",
            render_targets.external,
        ),
        ("7. Scale: up to 100 receivers x 100 sender profiles", "scale", render_targets.scale),
    ):
        lines += [f"## {title}", ""]
        section = sections.get(key, {"status": "skipped", "reason": "not selected"})
        lines += _skipped(section) or renderer(section)
    return "\n".join(lines).rstrip() + "\n"


def _suite(s: Json) -> list[str]:
    """Whole-command timings, the wall-time accounting and the inside of the cells."""
    whole = s["whole_command"]
    met = whole["median"] is not None and whole["median"] < TARGET_SECONDS
    lines = _table(
        ["run", "wall s", "runs"],
        [
            ["first run (generates the certificates)", _n(s["first_run"]["seconds"]), "1"],
            ["whole command, certificates present", _spread(whole), str(whole["n"])],
        ],
    )
    lines += [
        f"Target: the whole suite under {TARGET_SECONDS:.0f} s on 2 cores — "
        f"{'met' if met else 'NOT met'} ({_n(whole['median'])} s).",
        "",
        "### Where every second goes (traced `tlslab run`, default `--jobs 4`)",
        "",
    ]
    acc = s["accounting"]
    total = acc["traced_total"]["median"] or 0.0
    rows = []
    for label, stats in acc["rows"].items():
        median = stats["median"]
        share = f"{median / total * 100:.0f} %" if total and median is not None else "-"
        rows.append([label, _ms(median), _ms_range(stats), share])
    rows.append(["**whole traced command**", _ms(total), _ms_range(acc["traced_total"]), "100 %"])
    lines += _table(["segment", "ms (median)", "min-max", "share"], rows)
    child = s["startup"]["receiver_process_import"]["median"]
    lines += [
        f"{acc['traced_runs']} runs of the same `harness.cli.main` under `bench/trace_cli.py`, "
        "which stamps the wall clock at each phase boundary of the very same process, so the "
        "segments of one run add up to its wall time (glue: the gaps between stamps). They "
        f"alternate with the untraced runs above (median {_n(acc['whole_median'])} s). The "
        f"receivers' child is forked from the harness, which has imported its code already "
        f"(a fresh `python -c 'import lab.serve'` would cost {_ms(child)} ms).",
        "",
    ]
    lines += _cells(s)
    lines += _startup(s["startup"])
    lines += ["### TLS handshake, plain ssl client against the lab's receivers", ""]
    rows = []
    for version, v in s["handshake"]["versions"].items():
        hs = v["handshake_ms"]
        rows.append([version, _n(hs["median"]), _n(hs.get("p90")), _n(v["session_ms"]["median"]),
                     str(v["errors"])])  # fmt: skip
    lines += _table(
        ["version", "handshake ms (median)", "p90", "whole STARTTLS session ms", "errors"], rows
    )
    lines += [f"N = {s['handshake']['count']} sequential handshakes per version.", ""]
    return lines


def _cells(s: Json) -> list[str]:
    """Return the cells-phase table: SMTP and TLS time against harness overhead, per --jobs."""
    columns = sorted(s["breakdown"], key=int)
    handshake = {k: v["handshake_ms"]["median"] for k, v in s["handshake"]["versions"].items()}

    def probe(jobs: str, name: str) -> float:
        return float(s["breakdown"][jobs]["cells"]["probes"][name]["median"] or 0.0)

    def cell_rows(jobs: str) -> dict[str, float]:
        b = s["breakdown"][jobs]
        estimated = sum(
            n * (handshake.get(v) or 0.0) / 1000 for v, n in b["cells"]["handshakes_ok"].items()
        )
        wall = b["phases"]["cells"]["median"]
        union = b["cells"]["session_union"]["median"]
        return {
            "cells phase, wall": wall,
            "  wall with at least one SMTP session open (receiver records)": union,
            "  wall with no session open (sender and harness between sessions)": b["cells"][
                "no_session"
            ]["median"],
            "sum over cells of run_cell (thread time)": probe(jobs, "run_cell"),
            "  sender send()": probe(jobs, "send"),
            "    SMTP connect + banner": probe(jobs, "smtp.connect"),
            "    EHLO (x2 with TLS)": probe(jobs, "smtp.ehlo"),
            "    STARTTLS + TLS handshake (measured)": probe(jobs, "smtp.starttls"),
            "      of which handshakes (microbenchmark median x count)": estimated,
            "    MAIL/RCPT/DATA (receiver stores the message durably)": probe(
                jobs, "smtp.sendmail"
            ),
            "    QUIT + close": probe(jobs, "smtp.__exit__"),
            "    TLS context creation": probe(jobs, "client_context"),
            "    rest of the driver (policy, portal copy)": probe(jobs, "driver_rest"),
            "  harness: wait_for_sessions": probe(jobs, "wait_for_sessions"),
            "  harness: find_arrivals (read records + .eml)": probe(jobs, "find_arrivals"),
            "  harness: classify + judge": probe(jobs, "classify") + probe(jobs, "judge"),
            "  harness: build_message": probe(jobs, "build_message"),
            "  harness: rest of run_cell (result, driver lookup)": probe(jobs, "run_cell_rest"),
        }

    tables = {jobs: cell_rows(jobs) for jobs in columns}
    labels = list(tables[columns[0]])
    rows = [[label.replace("  ", "&nbsp;&nbsp;")] + [_ms(tables[j][label]) for j in columns]
            for label in labels]  # fmt: skip
    b = s["breakdown"][columns[0]]["cells"]
    return [
        "### Inside the cells: SMTP and TLS against harness overhead",
        "",
        *_table(["ms", *[f"--jobs {j}" for j in columns]], rows),
        f"{b['count']} cells, {b['sessions']} SMTP sessions, handshakes ok "
        f"{b['handshakes_ok']}, failed {b['handshakes_failed']}. With `--jobs 1` the sums "
        "add up to the wall time; with more jobs they are thread time spent concurrently.",
        "",
    ]


def _startup(st: Json) -> list[str]:
    """Interpreter and import costs of both processes."""
    lines = ["### Start-up", ""]
    lines += _table(
        ["what", "ms"],
        [
            ["bare interpreter (`python -c pass`)", _ms(st["python_bare"]["median"])],
            ["`tlslab --help` (interpreter + imports + argparse)",
             _ms(st["tlslab_help"]["median"])],
            ["receiver child: `python -c 'import lab.serve'`",
             _ms(st["receiver_process_import"]["median"])],
            ["exit after `import harness.cli`: normal finalization / `os._exit`",
             f"{_ms(st['exit_cli']['normal']['median'])} / "
             f"{_ms(st['exit_cli']['os_exit']['median'])}"],
            ["exit after `import lab.serve`: normal finalization / `os._exit`",
             f"{_ms(st['exit_receiver']['normal']['median'])} / "
             f"{_ms(st['exit_receiver']['os_exit']['median'])}"],
        ],
    )  # fmt: skip
    for key in ("imports_cli", "imports_receiver"):
        profile = st[key]
        top = ", ".join(f"{k} {v}" for k, v in profile["top_packages_ms"].items())
        lines += [f"`import {profile['module']}`: {profile['total_ms']} ms self time; "
                  f"by package (ms): {top}.", ""]  # fmt: skip
    return lines


def _scaling(s: Json) -> list[str]:
    """Wall seconds for cells x jobs, the linear fit and the correctness checks."""
    jobs = sorted({row["jobs"] for row in s["table"]})
    sizes = sorted({row["cells"] for row in s["table"]})
    by = {(row["cells"], row["jobs"]): row for row in s["table"]}
    rows = []
    for cells in sizes:
        row = [str(cells)]
        for j in jobs:
            r = by.get((cells, j))
            row.append(f"{_spread(r['wall_s'], 2)} s, {r['cells_per_s']}/s" if r else "-")
        rows.append(row)
    lines = _table(["cells", *[f"--jobs {j}" for j in jobs]], rows)
    fit_rows = [[f"--jobs {j}", _n(f["fixed_s"]), _n(f["per_cell_ms"], 2),
                 _n(f["marginal_cells_per_s"], 1)] for j, f in s["fit"].items()]  # fmt: skip
    lines += ["Fit of the medians, wall = fixed + per-cell x cells:", ""]
    lines += _table(["jobs", "fixed s", "ms per cell", "marginal cells/s"], fit_rows)
    all_pass = all(row["all_pass"] for row in s["table"])
    lines += [
        f"{s['senders']} generated reference-sender profiles (tls x min_version x verify x "
        "on_policy_unmet, one per distinct behaviour); expectations computed from the policy "
        f"semantics. Every run all pass: {'yes' if all_pass else 'NO'}; every run of a suite, at "
        f"any --jobs, observed the same outcomes: {'yes' if s['consistent'] else 'NO'}.",
        "",
    ]
    return lines


def _throughput(s: Json) -> list[str]:
    """Deliveries/s and CPU per delivery, ours against Postfix, with ratios."""
    cfg = s["settings"]
    source = s["smtp_source"]
    lines = render_targets.memory(s)
    lines += [
        f"Load: {cfg['messages']} messages per measurement, {cfg['concurrency']} concurrent "
        f"clients, one SMTP session per message, at most {cfg['limit_s']} s, {cfg['repeats']} "
        f"repeats alternating the receivers, {cfg['warmup']} warm-up deliveries each.",
        "",
        "Debian's `smtp-source` cannot speak STARTTLS"
        if source.get("present") and not source.get("starttls")
        else f"smtp-source: {source}",
    ]
    if source.get("usage"):
        lines[-1] += f" — its usage line offers no TLS option: `{source['usage'].split(': ')[-1]}`"
    lines[-1] += (
        ". It drives the plaintext row; every row (plaintext too, as a cross-check) is also "
        "driven by `bench/loadgen.py`, one fixed asyncio client used unchanged on both receivers."
    )
    lines.append("")
    postfix = s.get("postfix", {})
    if postfix.get("status") != "ok":
        lines += [f"Postfix skipped: {postfix.get('reason')}", ""]
    rows = []
    plain = s.get("smtp_source_plaintext", {})
    if plain.get("status") == "ok":
        rows.append(_throughput_row("plaintext (smtp-source)", plain))
    for mode, v in s["modes"].items():
        rows.append(_throughput_row(f"{mode} (loadgen)", v))
    lines += _table(
        ["mode", "ours/s", "Postfix/s", "ratio ours/Postfix", "ours CPU ms/msg",
         "Postfix CPU ms/msg", "CPU ratio", "machine busy", "failed"],
        rows,
    )  # fmt: skip
    generator = [
        r["generator_cpu_s"] * 1000 / r["delivered"]
        for v in s["modes"].values()
        for who in ("ours", "postfix")
        for r in v.get(who, {}).get("runs", [])
        if r.get("delivered")
    ]
    if generator:
        lines += [
            f"The load generator itself used {min(generator):.2f}-{max(generator):.2f} ms CPU "
            "per message (TLS rows at the top end), on the same 2 cores.",
            "",
        ]
    lines += [
        "CPU ms/msg: the receiver's own CPU time (the lab's one `lab.serve` process; Postfix's "
        "master and every daemon it ran) per delivered message. Machine busy: share of both "
        "cores in use during the measurement (1.0 = saturated, the generator included).",
        "",
        "Handshake latency (sequential plain ssl client, median ms):",
        "",
    ]
    evidence = s.get("evidence_store")
    hs = s.get("handshake", {})
    versions = list(next(iter(hs.values()), {}))
    lines += _table(
        ["receiver", *versions],
        [[name, *[_n(v[ver]["handshake_ms"]["median"]) for ver in versions]]
         for name, v in hs.items()],
    )  # fmt: skip
    if evidence:
        lines += [
            "The lab receiver's durable evidence per delivery, on this machine's disk: "
            f"`store_message` (write, fsync, rename, directory fsync) "
            f"{_spread(evidence['store_message_ms'])} ms and `append_session` (append + fsync, "
            f"on the event-loop thread) {_spread(evidence['append_session_ms'])} ms.",
            "",
        ]
    return lines


def _throughput_row(label: str, v: Json) -> list[str]:
    """One row of the throughput table."""
    ours, postfix = v.get("ours", {}), v.get("postfix", {})

    def busy(x: Json) -> str:
        values = [r.get("machine_busy") for r in x.get("runs", []) if r.get("machine_busy")]
        return _n(max(values), 2) if values else "-"

    return [
        label,
        _spread(ours.get("per_s"), 1),
        _spread(postfix.get("per_s"), 1),
        _n(v.get("ratio_per_s"), 2),
        _n(ours.get("receiver_cpu_ms_per_delivery", {}).get("median"), 2),
        _n(postfix.get("receiver_cpu_ms_per_delivery", {}).get("median"), 2),
        _n(v.get("ratio_cpu_per_delivery"), 2),
        f"{busy(ours)} / {busy(postfix)}",
        f"{ours.get('failed', '-')} / {postfix.get('failed', '-')}",
    ]


def _docker(s: Json) -> list[str]:
    """Warm and cold start of every receiver on the Docker backend."""
    cold = s.get("cold_build", {})
    first = s["first_start"]
    rows = [
        [f"first start of this run (built images: {'yes' if first['built_images'] else 'no'})",
         _n(first["start_s"]), _n(first["stop_s"])],
        [f"warm start, images present (x{s['runs']})", _spread(s["warm_start_s"]),
         _spread(s["warm_stop_s"])],
        ["ensure_images alone, images present (source hash + lookups)",
         _n(s["ensure_images_warm_s"]), "-"],
        ["cold: prepare build context (project wheel + dependency wheels)",
         _n(cold.get("prepare_context_s")), "-"],
        ["cold: build `lab` image, no layer cache", _n(cold.get("build_lab_s")), "-"],
        ["cold: build `postfix` image on it", _n(cold.get("build_postfix_s")), "-"],
        ["**cold start = cold build + warm start**", _n(s.get("cold_start_s")), "-"],
    ]  # fmt: skip
    for sample in s.get("rebuilt_during_warm", []):
        rows.insert(2, ["warm start that rebuilt the images (source changed meanwhile)",
                        _n(sample["start_s"]), _n(sample["stop_s"])])  # fmt: skip
    lines = _table(["what", "start s", "stop s"], rows)
    steps = s.get("warm_steps_s", {})
    if steps:
        counts = s["first_start"].get("steps_count", {})
        parts = [f"{name} {_n(stats['median'], 2)} s (x{counts.get(name, '?')})"
                 for name, stats in steps.items()]  # fmt: skip
        lines += ["Warm start and stop, summed per step (median): " + "; ".join(parts) + ".", ""]
    if cold.get("error"):
        lines += [f"Cold build failed: `{cold['error']}`", ""]
    if s.get("whole_commands"):
        lines += docker_suites.render(s["whole_commands"])
    lines += [
        f"{s['receivers']} receivers plus the lab DNS container. The cold build uses private "
        "tags and no layer cache instead of deleting the shared `sender-tls-lab/*` images, which "
        f"other runs on this engine use ({s['other_lab_containers_running']} lab containers "
        "were running when this section started).",
        "",
    ]
    return lines
