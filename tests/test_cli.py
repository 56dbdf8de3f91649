"""Tests of the `tlslab` command run as a subprocess: exit statuses, messages, reports."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from harness.scenarios import DEFAULT_ROOT

PROJECT = Path(__file__).resolve().parents[1]
SHIPPED_SUITE = (DEFAULT_ROOT / "suites" / "ses-2025.yaml").read_text(encoding="utf-8")
WRONG_LINE = (
    '    ses-require-tls: {outcome: refused, study: true, note: "deliberately wrong expectation"}'
)
# tls10 delivers over TLS 1.0 where TLS 1.2 is expected; tls12, driven the same way, is the control
WRONG_VERSION_SUITE = """\
title: A delivery over the wrong TLS version fails its cell
description: tls10 expected at TLSv1.2 (it delivers TLSv1.0); tls12 the passing control.
receivers: [tls10, tls12]
senders: [ses-default]
cells:
  tls10:
    ses-default: {outcome: delivered, tls: TLSv1.2}
  tls12:
    ses-default: {outcome: delivered, tls: TLSv1.2}
"""


@dataclasses.dataclass(frozen=True)
class Ran:
    """What one `tlslab` invocation did."""

    status: int
    out: str
    err: str


def tlslab(*args: str | Path, cwd: Path = PROJECT) -> Ran:
    """Run `python -m harness.cli ARGS` without inheriting the lab's environment overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Ran(done.returncode, done.stdout, done.stderr)


def assert_usage_error(ran: Ran, *names: str) -> str:
    """Assert exit 2 and one traceback-free `tlslab: error:` line naming each of `names`."""
    assert "Traceback" not in ran.err, ran.err
    assert ran.status == 2, ran.err
    lines = ran.err.splitlines()
    assert len(lines) == 1, ran.err
    (line,) = lines
    assert line.startswith("tlslab: error: ")
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"
    return line


def make_root(base: Path, suites: dict[str, str]) -> Path:
    """Return a scenarios root with the shipped receivers and senders and the given suites."""
    root = base / "scenarios"
    for folder in ("receivers", "senders"):
        shutil.copytree(DEFAULT_ROOT / folder, root / folder)
    (root / "suites").mkdir()
    for name, text in suites.items():
        (root / "suites" / f"{name}.yaml").write_text(text, encoding="utf-8")
    return root


def wrong_suite() -> str:
    """Return ses-2025 with tls10 x ses-require-tls deliberately expected `refused`."""
    lines = SHIPPED_SUITE.splitlines()
    row = lines.index("  tls10:")
    assert lines[row + 2].startswith("    ses-require-tls: {outcome: delivered, tls: TLSv1.0")
    lines[row + 2] = WRONG_LINE
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a certificate folder shared by this module's runs (made once, then reused)."""
    return tmp_path_factory.mktemp("certs")


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory: pytest.TempPathFactory, certs: Path) -> tuple[Ran, Path]:
    """Run the shipped suite once for this module; return the run and its reports folder."""
    reports = tmp_path_factory.mktemp("shipped") / "reports"
    return tlslab("run", "--suite", "ses-2025", "--reports", reports, "--certs", certs), reports


# --- bad input: exit 2, one line, file + field + fix, no traceback -------------------------


def test_unknown_suite_id(tmp_path: Path) -> None:
    ran = tlslab("run", "--suite", "nope", "--reports", tmp_path / "r", "--certs", tmp_path / "c")
    assert_usage_error(
        ran, str(DEFAULT_ROOT / "suites" / "nope.yaml"), "'suite'", "'nope'", "fix:", "ses-2025"
    )
    assert not (tmp_path / "r").exists()


def test_suite_with_an_unknown_receiver(tmp_path: Path) -> None:
    suite = SHIPPED_SUITE.replace("receivers: [tls13,", "receivers: [tls99,")
    root = make_root(tmp_path, {"bad": suite})
    ran = tlslab(
        "run", "--suite", "bad", "--scenarios", root,
        "--reports", tmp_path / "r", "--certs", tmp_path / "c",
    )  # fmt: skip
    line = assert_usage_error(
        ran, str(root / "suites" / "bad.yaml"), "'receivers[0]'", "'tls99'", "fix: use one of"
    )
    assert "'tls13'" in line
    assert not (tmp_path / "r").exists()


def test_malformed_yaml_suite(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"broken": "receivers: [tls10\nsenders: [paubox]\n"})
    path = root / "suites" / "broken.yaml"
    ran = tlslab("run", "--suite", path, "--reports", tmp_path / "r", "--certs", tmp_path / "c")
    assert_usage_error(ran, str(path), "'line 2, column 8'", "invalid YAML", "fix the YAML syntax")


def test_suite_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "suites" / "missing.yaml"
    ran = tlslab("run", "--suite", path, "--reports", tmp_path / "r", "--certs", tmp_path / "c")
    assert_usage_error(ran, str(path), "'(file)'", "not found", "fix:")


def test_unknown_backend(tmp_path: Path) -> None:
    ran = tlslab("run", "--backend", "nope", "--reports", tmp_path / "r", "--certs", tmp_path / "c")
    assert_usage_error(ran, "backend", "'nope'", "use one of ['attached', 'docker', 'local']")
    assert not (tmp_path / "r").exists()


def test_report_of_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    assert_usage_error(
        tlslab("report", missing), str(missing), "(file)", "no such file", "results.json"
    )


def test_report_of_a_folder_without_results(tmp_path: Path) -> None:
    assert_usage_error(
        tlslab("report", tmp_path), str(tmp_path / "results.json"), "(file)", "run folder"
    )


def test_report_of_invalid_json(tmp_path: Path) -> None:
    bad = tmp_path / "results.json"
    bad.write_text('{"suite": "ses-2025", ')
    assert_usage_error(
        tlslab("report", bad), str(bad), "(json)", "not valid JSON at line 1", "re-run the suite"
    )


def test_report_of_json_missing_a_field(tmp_path: Path) -> None:
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"suite": "x"}))
    assert_usage_error(tlslab("report", bad), str(bad), "backend", "add the required field")


def test_up_with_an_unknown_receiver(tmp_path: Path) -> None:
    ran = tlslab(
        "up", "--receivers", "tls10,tls99", "--evidence-dir", tmp_path / "e",
        "--certs", tmp_path / "c",
    )  # fmt: skip
    assert_usage_error(ran, "tls99.yaml", "'--receivers'", "'tls99'", "use some of")
    assert not (tmp_path / "e").exists()


def test_certs_with_a_broken_receiver(tmp_path: Path) -> None:
    root = make_root(tmp_path, {})
    (root / "receivers" / "tls11.yaml").write_text("certificate: revoked\n")
    ran = tlslab("certs", "--scenarios", root, "--certs", tmp_path / "c")
    assert_usage_error(ran, str(root / "receivers" / "tls11.yaml"), "'certificate'", "'valid'")


def test_impossible_date_in_a_receiver(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"ses-2025": SHIPPED_SUITE})
    (root / "receivers" / "tls10.yaml").write_text("description: 2020-13-45\n")
    ran = tlslab("run", "--scenarios", root, "--reports", tmp_path / "r", "--certs", tmp_path / "c")
    assert_usage_error(ran, str(root / "receivers" / "tls10.yaml"))


def test_overlong_suite_id(tmp_path: Path) -> None:
    ran = tlslab(
        "run", "--suite", "x" * 300, "--reports", tmp_path / "r", "--certs", tmp_path / "c"
    )
    assert_usage_error(ran, "'suite'")


# --- positive controls ---------------------------------------------------------------------


def test_shipped_suite_reproduces_the_study(shipped_run: tuple[Ran, Path]) -> None:
    ran, reports = shipped_run
    assert "Traceback" not in ran.err
    assert ran.status == 0, ran.out + ran.err
    assert "Suite ses-2025: 27 cells on the local backend" in ran.out
    assert "Study cells reproduced: 14/14" in ran.out
    assert "27 cells: 27 pass, 0 fail, 0 error" in ran.out
    assert "FAIL" not in ran.out
    latest = reports / "latest"
    for name in ("results.json", "summary.md", "report.html", "tlsrpt.json"):
        assert (latest / name).is_file(), name
    data = json.loads((latest / "results.json").read_text())
    assert data["suite"] == "ses-2025"
    assert data["backend"] == "local"
    assert len(data["results"]) == 27
    assert {c["verdict"] for c in data["results"]} == {"pass"}
    cells = {(c["receiver"], c["sender"]): c for c in data["results"]}
    assert cells["tls10", "ses-default"]["tls"]["version"] == "TLSv1.0"
    assert cells["no-starttls", "ses-default"]["tls"] is None
    assert cells["no-starttls", "ses-default"]["received"] is not None
    assert cells["no-starttls", "ses-require-tls"]["outcome"] == "refused"
    assert cells["no-starttls", "ses-require-tls"]["received"] is None
    found = {h["id"]: (h["count"], h["claim"]) for h in data["headline"]}
    assert found == {
        "controlled-tests": (14, 14),
        "invalid-certificates-delivered": (4, 4),
        "legacy-tls-with-require-tls": (2, 2),
        "failure-modes-with-require-tls": (3, 3),
    }
    for row in data["results"]:
        for link in row["evidence"]:
            assert (latest / link["path"]).is_file(), link
    kinds = {
        r["sender"]: {e["kind"] for e in r["evidence"]}
        for r in data["results"]
        if r["receiver"] == "self-signed"
    }
    assert kinds == {
        "ses-default": {"message", "sessions"},
        "ses-require-tls": {"message", "sessions"},
        "paubox": {"sessions", "portal"},
    }
    made = data["provenance"]
    assert made["suite_sha256"] == hashlib.sha256(SHIPPED_SUITE.encode()).hexdigest()
    assert made["suite_file"].endswith("scenarios/suites/ses-2025.yaml")
    assert made["backend"] == "local"
    assert made["started"] == data["started"]
    assert made["finished"] == data["finished"]


def test_shipped_run_writes_rfc8460_files_the_schema_accepts(
    shipped_run: tuple[Ran, Path],
) -> None:
    _, reports = shipped_run
    latest = reports / "latest"
    schema = json.loads((PROJECT / "harness" / "tlsrpt.schema.json").read_text())
    check = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    index = json.loads((latest / "tlsrpt.json").read_text())
    assert [e["sender"] for e in index["reports"]] == ["ses-default", "ses-require-tls", "paubox"]
    for entry in index["reports"]:
        document = json.loads((latest / entry["file"]).read_text())
        assert [e.message for e in check.iter_errors(document)] == [], entry["file"]
    paubox = json.loads((latest / "tlsrpt" / "paubox.json").read_text())
    by_domain = {p["policy"]["policy-domain"]: p for p in paubox["policies"]}
    (expired,) = by_domain["expired.lab.test"]["failure-details"]
    assert expired["result-type"] == "certificate-expired"
    (legacy,) = by_domain["tls10.lab.test"]["failure-details"]
    assert legacy["failure-reason-code"] == "protocol_version"


def test_report_re_renders_a_run(shipped_run: tuple[Ran, Path]) -> None:
    _, reports = shipped_run
    run_dir = (reports / "latest").resolve()
    (run_dir / "summary.md").unlink()
    ran = tlslab("report", run_dir)
    assert "Traceback" not in ran.err
    assert ran.status == 0, ran.err
    assert f"Re-rendered {run_dir}" in ran.out
    assert "tls10" in ran.out
    assert "Study cells reproduced: 14/14" in (run_dir / "summary.md").read_text()
    # the results.json file itself is accepted too
    assert tlslab("report", run_dir / "results.json").status == 0


def test_a_wrong_expectation_fails_that_cell_only(tmp_path: Path, certs: Path) -> None:
    root = make_root(tmp_path, {"wrong": wrong_suite()})
    reports = tmp_path / "r"
    ran = tlslab(
        "run", "--suite", "wrong", "--scenarios", root,
        "--reports", reports, "--certs", certs,
    )  # fmt: skip
    assert "Traceback" not in ran.err
    assert ran.status == 1, ran.out + ran.err
    progress = [line for line in ran.out.splitlines() if "tls10-ses-require-tls" in line]
    assert len(progress) == 1
    assert "FAIL" in progress[0]
    assert "delivered TLSv1.0" in progress[0]
    assert "expected refused" in ran.out
    assert "27 cells: 26 pass, 1 fail, 0 error" in ran.out
    assert "Study cells reproduced: 13/14" in ran.out
    data = json.loads((reports / "latest" / "results.json").read_text())
    verdicts = {(c["receiver"], c["sender"]): c["verdict"] for c in data["results"]}
    assert verdicts.pop(("tls10", "ses-require-tls")) == "fail"
    assert len(verdicts) == 26
    assert set(verdicts.values()) == {"pass"}


def test_a_delivery_over_the_wrong_tls_version_fails_that_cell(tmp_path: Path, certs: Path) -> None:
    root = make_root(tmp_path, {"wrong-version": WRONG_VERSION_SUITE})
    reports = tmp_path / "r"
    ran = tlslab(
        "run", "--suite", "wrong-version", "--scenarios", root,
        "--reports", reports, "--certs", certs,
    )  # fmt: skip
    assert "Traceback" not in ran.err
    assert ran.status == 1, ran.out + ran.err
    (progress,) = [line for line in ran.out.splitlines() if "tls10-ses-default" in line]
    assert "FAIL" in progress
    assert "delivered TLSv1.0" in progress
    assert "expected delivered TLSv1.2; arrived over TLSv1.0" in ran.out
    assert "2 cells: 1 pass, 1 fail, 0 error" in ran.out
    data = json.loads((reports / "latest" / "results.json").read_text())
    cells = {c["receiver"]: c for c in data["results"]}
    assert cells["tls10"]["verdict"] == "fail"
    assert cells["tls10"]["outcome"] == "delivered"
    assert cells["tls10"]["tls"]["version"] == "TLSv1.0"
    assert cells["tls12"]["verdict"] == "pass"
    assert cells["tls12"]["tls"]["version"] == "TLSv1.2"
