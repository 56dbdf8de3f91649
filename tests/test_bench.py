"""Tests of the benchmark's plumbing: `--quick` output shape and the scaling suites' semantics.

Never timings: the figures themselves come from `make bench` on a quiet machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:  # bench/ is a top-level folder, not an installed package
    sys.path.insert(0, str(PROJECT))

from tools import missing, required  # noqa: E402

from bench.postfix_receiver import unavailable_reason  # noqa: E402
from bench.scaling import expected, profiles, write_scenarios  # noqa: E402
from bench.suite_bench import shipped_receivers, union_seconds  # noqa: E402
from harness.model import ReferenceSenderProfile  # noqa: E402
from harness.scenarios import load_suite  # noqa: E402

POSTFIX_FIX = "make system-deps as root: Debian's postfix, smtpd and smtp-source"


def test_policy_semantics_reproduce_the_shipped_study_suite() -> None:
    loaded = load_suite("ses-2025")
    for receiver, sender in loaded.suite.cell_ids:
        cell = loaded.suite.expectation(receiver, sender)
        want = (str(cell.outcome), None if cell.tls is None else str(cell.tls))
        profile = loaded.senders[sender]
        assert isinstance(profile, ReferenceSenderProfile)
        got = expected(loaded.receivers[receiver], profile)
        assert got == want, f"{receiver}-{sender}"


def test_generated_profiles_behave_differently_and_suites_load(tmp_path: Path) -> None:
    receivers = shipped_receivers()
    chosen = profiles(receivers)
    assert len(chosen) == 30
    vectors = {tuple(expected(r, p) for r in receivers) for p in chosen}
    assert len(vectors) == len(chosen)
    suites = write_scenarios(tmp_path, [2, 30])
    assert sorted(suites) == [18, 270]
    loaded = load_suite(suites[270], tmp_path)
    assert len(loaded.suite.cell_ids) == 270


def test_union_of_session_intervals_is_clipped_and_merged() -> None:
    intervals = [(1.0, 3.0), (2.0, 4.0), (6.0, 7.0), (9.0, 12.0)]
    assert union_seconds(intervals, 0.0, 10.0) == pytest.approx(5.0)
    assert union_seconds([], 0.0, 10.0) == 0.0


@pytest.mark.integration
def test_quick_run_writes_json_and_markdown_of_the_documented_shape(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason is not None and required():  # fail before minutes of benchmark, not after
        missing(f"no Postfix comparison: {reason}", POSTFIX_FIX)
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    markdown = (tmp_path / "bench.md").read_text(encoding="utf-8")
    assert done.stdout.strip() == markdown.strip()
    assert data["mode"] == "quick"
    assert {"cores", "cpu_model", "python", "openssl", "date"} <= set(data["machine"])
    sections = data["sections"]
    assert set(sections) == {
        "suite", "scaling", "throughput", "docker", "scoreboard", "external", "scale",
    }  # fmt: skip
    assert sections["docker"]["status"] == "skipped"
    assert sections["scoreboard"]["status"] == "skipped"
    assert "## Targets" in markdown

    suite = sections["suite"]
    assert suite["status"] == "ok"
    assert suite["first_run"]["status"] == 0
    assert suite["whole_command"]["statuses"] == [0]
    assert set(suite["breakdown"]) == {"1", "4"}
    for breakdown in suite["breakdown"].values():
        assert breakdown["verdicts"] == {"pass": 27}
        assert breakdown["cells"]["probe_counts"]["run_cell"] == 27
    assert set(suite["handshake"]["versions"]) == {"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
    assert suite["startup_target"]["floor_s"]["n"] == 1
    assert isinstance(suite["startup_target"]["met"], bool)
    accounting = suite["accounting"]
    assert accounting["statuses"] == [0]
    assert accounting["rows"]["cells"]["n"] == 1
    assert accounting["rows"]["interpreter exit (finalization)"]["n"] == 1

    scaling = sections["scaling"]
    assert scaling["status"] == "ok"
    assert scaling["consistent"] is True
    assert all(row["all_pass"] for row in scaling["table"])
    assert {(row["cells"], row["jobs"]) for row in scaling["table"]} == {
        (9, 1), (9, 2), (18, 1), (18, 2),
    }  # fmt: skip

    external = sections["external"]
    assert external["status"] == "ok"
    assert [row["jobs"] for row in external["table"]] == [1, 4]
    for row in external["table"]:  # the relay accepted every message; none ever arrived
        assert row["statuses"] == [0]
        assert row["verdicts"] == [{"pass": 27}]
    assert external["accepted_by_relay"] == 4 * 27

    scale = sections["scale"]
    assert scale["status"] == "ok"
    assert [(row["cells"], row["verdicts"]) for row in scale["table"]] == [
        (10, {"pass": 10}), (15, {"pass": 15}),
    ]  # fmt: skip
    assert all(row["peak_rss_mib"] > 0 for row in scale["table"])
    assert scale["met"] is False  # quick mode never runs the 10,000 cells the target names

    throughput = sections["throughput"]
    assert throughput["status"] == "ok"
    assert list(throughput["memory"]["after"]) == ["20", "200"]
    assert all(v["failed"] == 0 for v in throughput["memory"]["after"].values())
    assert set(throughput["target"]["ratios"]) >= {"plaintext", "TLSv1.3"}
    assert throughput["smtp_source"]["starttls"] is False
    assert set(throughput["modes"]) == {"plaintext", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
    for mode in throughput["modes"].values():
        assert mode["ours"]["failed"] == 0
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6.", "## 7."):
        assert heading in markdown
    # the comparison with Postfix: asserted, or a visible skip (a failure under LAB_REQUIRE_TOOLS=1)
    if throughput["postfix"]["status"] != "ok":
        missing(f"no Postfix comparison: {throughput['postfix']['reason']}", POSTFIX_FIX)
    for mode in throughput["modes"].values():
        assert mode["postfix"]["failed"] == 0
        assert "ratio_per_s" in mode


def test_docker_whole_command_rows_are_judged_against_their_bounds() -> None:
    """Row 2 of the targets: a median within its bound is met, one above it is not."""
    from bench.render_targets import targets

    def row(median: float, bound: float) -> dict[str, object]:
        return {"bound_s": bound, "docker_s": {"median": median}, "met": median <= bound}

    whole = {"suites": {"ses-2025": row(3.9, 4.0), "postfix": row(9.1, 8.5)}}
    table = "\n".join(targets({"docker": {"whole_commands": whole}}))
    assert (
        "| 2. `tlslab run --suite ses-2025 --backend docker`, warm, whole command | 3.90 s" in table
    )
    ses, postfix = (line for line in table.splitlines() if line.startswith("| 2."))
    assert ses.endswith("| met |")
    assert postfix.endswith("| **NOT met** |")  # control: over its bound
    assert "not measured" in "\n".join(targets({}))  # no docker section: not measured
