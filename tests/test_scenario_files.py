"""Tests of harness.scenario_files: hostile scenario files are refused by name, quickly, quietly."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_scenarios import BASE_SUITE, expect_error, make_root

from harness.scenario_files import MAX_DEPTH, MAX_FILE_BYTES
from harness.scenarios import ScenarioError, load_receiver, load_sender, load_suite
from lab.bounds import TEXT_MAX_LENGTH, TITLE_MAX_LENGTH
from lab.spec import TlsVersion


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


# --- hostile files: refused by name, nothing of their content printed -----------------------

SECRET_LINE = "leaked-secret-line: 1\n"  # parsed, this would be an unknown field name


def test_a_named_file_linking_outside_the_scenarios_root_is_refused_unread(
    root: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET_LINE)
    receiver = root / "receivers" / "tls12.yaml"
    receiver.unlink()
    receiver.symlink_to(secret)
    error = expect_error(lambda: load_suite("small", root), receiver, "(file)", "inside", "outside")
    assert "leaked" not in str(error)
    # control: a link that stays inside the scenarios tree is followed
    shared = root / "shared" / "tls12.yaml"
    shared.parent.mkdir()
    shared.write_text("tls_min: TLSv1.2\ntls_max: TLSv1.2\n")
    receiver.unlink()
    receiver.symlink_to(Path("..") / "shared" / "tls12.yaml")
    assert load_suite("small", root).receivers["tls12"].tls_max is TlsVersion.TLS12


def test_a_suite_named_by_id_must_stay_inside_the_root_but_a_suite_path_may_not(
    root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "mine" / "small.yaml"
    outside.parent.mkdir()
    outside.write_text(BASE_SUITE)
    named = root / "suites" / "small.yaml"
    named.unlink()
    named.symlink_to(outside)
    expect_error(lambda: load_suite("small", root), named, "(file)", "inside", "outside")
    # the user's own file given by path: allowed; its receivers still come from `root`
    assert load_suite(outside, root).receivers["tls10"].tls_max is TlsVersion.TLS10


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda p: os.mkfifo(p), "named pipe"),
        (lambda p: p.mkdir(), "directory"),
        (lambda p: p.symlink_to(p), "link loop"),
        (lambda p: p.symlink_to(p.parent / "gone.yaml"), "link to a missing file"),
    ],
    ids=["fifo", "directory", "link-loop", "dangling-link"],
)
def test_a_receiver_that_is_not_a_regular_file_is_refused_by_name(
    root: Path, make: Callable[[Path], object], problem: str
) -> None:
    receiver = root / "receivers" / "tls12.yaml"
    receiver.unlink()
    make(receiver)
    # not "unknown id 'tls12'" while listing tls12: the loader says what is really wrong
    expect_error(lambda: load_suite("small", root), receiver, "(file)", "", problem)


def test_a_suite_id_that_is_a_link_loop_is_not_reported_as_unknown(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.unlink()
    path.symlink_to(path)
    expect_error(lambda: load_suite("small", root), path, "(file)", "link", "link loop")


def test_an_oversized_file_is_refused_before_parsing(root: Path) -> None:
    path = root / "receivers" / "tls12.yaml"
    path.write_text("description: " + "x" * 140_000 + "\n")
    expect_error(lambda: load_receiver(path), path, "(file)", "shorten", f"{MAX_FILE_BYTES} bytes")


@pytest.mark.parametrize(
    ("folder", "field", "limit"),
    [("receivers", "description", TEXT_MAX_LENGTH), ("suites", "title", TITLE_MAX_LENGTH)],
)
def test_free_text_longer_than_its_bound_is_refused(
    root: Path, folder: str, field: str, limit: int
) -> None:
    path = root / folder / ("tls12.yaml" if folder == "receivers" else "small.yaml")
    base = "" if folder == "receivers" else BASE_SUITE.replace("title: a small suite\n", "")
    path.write_text(f"{field}: {'x' * (limit + 1)}\n{base}")
    expect_error(lambda: load_suite("small", root), path, field, "shorten", f"at most {limit}")
    path.write_text(f"{field}: {'x' * limit}\n{base}")
    assert load_suite("small", root)  # control: exactly at the bound


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("description:\n  " + "[" * 5000 + "]" * 5000 + "\n", "line 2"),
        ("description: " + "{a: " * 5000 + "\n", "line 1"),
        ("- " * 5000 + "x\n", "line 1"),
        ("".join(" " * i + f"k{i}:\n" for i in range(300)), f"line {MAX_DEPTH}"),
    ],
    ids=["flow-sequences", "flow-mappings", "block-sequences", "block-mappings"],
)
def test_deep_nesting_is_one_error_naming_the_line(root: Path, text: str, line: str) -> None:
    path = root / "receivers" / "tls12.yaml"
    path.write_text(text)
    expect_error(lambda: load_receiver(path), path, line, "flatten", f"{MAX_DEPTH} levels")
    path.write_text("a: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2) + "\n")
    expect_error(lambda: load_receiver(path), path, "a", "remove the field")  # within the bound


def test_a_duplicate_key_names_the_key_and_both_lines(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.write_text(BASE_SUITE + "  tls10:\n    ses-default: {outcome: refused}\n")
    error = expect_error(lambda: load_suite("small", root), path, "tls10", "keep one", "line 11")
    assert "first on line 5" in error.problem
    path.write_text("<<: &base {a: 1}\n" + BASE_SUITE)  # control: a merge key is no duplicate
    with pytest.raises(ScenarioError, match="field 'a'"):  # an unknown field, not a duplicate
        load_suite("small", root)


@pytest.mark.parametrize("value", ['"off"', '"false"', "off", "no", "yes", "0", "1"])
def test_only_yaml_true_and_false_are_booleans(root: Path, value: str) -> None:
    path = root / "receivers" / "tls12.yaml"
    path.write_text(f"starttls: {value}\n")
    expect_error(lambda: load_receiver(path), path, "starttls", "true or false", "boolean")


@pytest.mark.parametrize(
    ("value", "expected"), [("false", False), ("FALSE", False), ("true", True)]
)
def test_yaml_booleans_are_accepted(root: Path, value: str, expected: bool) -> None:
    path = root / "receivers" / "tls12.yaml"
    path.write_text(f"starttls: {value}\n")
    assert load_receiver(path).starttls is expected


@pytest.mark.parametrize(
    ("folder", "text", "field"),
    [
        ("senders", "verify: 'yes'\n", "verify"),
        ("senders", "driver: relay\nhost: h\nlab_relay: 'no'\n", "lab_relay"),
        (
            "suites",
            BASE_SUITE.replace("study: true", "study: 'true'"),
            "cells.tls10.ses-default.study",
        ),
    ],
)
def test_quoted_booleans_are_refused_in_senders_and_suites(
    root: Path, folder: str, text: str, field: str
) -> None:
    path = root / folder / ("small.yaml" if folder == "suites" else "paubox.yaml")
    path.write_text(text)
    loader = (
        (lambda: load_suite("small", root)) if folder == "suites" else lambda: load_sender(path)
    )
    expect_error(loader, path, field, "true or false", "boolean")


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("idle_timeout_seconds", ".inf", "from 0.01 to 86400"),
        ("command_timeout_seconds", ".nan", "from 0.01 to 86400"),
        ("idle_timeout_seconds", "0", "from 0.01 to 86400"),
        ("max_message_bytes", "1e400", "valid integer"),
        ("max_message_bytes", str(10**30), "from 1 to 268435456"),
        ("max_sessions", "0", "from 1 to 10000"),
        ("max_sessions", '"100"', "valid integer"),
    ],
)
def test_absurd_numbers_are_refused_with_the_allowed_range(
    root: Path, field: str, value: str, allowed: str
) -> None:
    path = root / "receivers" / "tls12.yaml"
    path.write_text(f"{field}: {value}\n")
    expect_error(lambda: load_receiver(path), path, field, "", allowed)


def test_numbers_at_their_bounds_are_accepted(root: Path) -> None:
    path = root / "receivers" / "tls12.yaml"
    path.write_text(
        "idle_timeout_seconds: 86400\ncommand_timeout_seconds: 0.01\n"
        "max_message_bytes: 268435456\nmax_sessions: 1\n"
    )
    spec = load_receiver(path)
    assert (spec.idle_timeout_seconds, spec.max_sessions) == (86400, 1)


@pytest.mark.parametrize(
    ("text", "field", "allowed"),
    [
        ("driver: ses\nregion: eu-west-1\nconfiguration_set: c\nfrom_address: a@b\n"
         "observe_timeout_seconds: .inf\n", "observe_timeout_seconds", "from 0.01 to 86400"),
        ("driver: relay\nhost: h\nport: 70000\n", "port", "from 1 to 65535"),
        ("driver: relay\nhost: h\nport: '25'\n", "port", "valid integer"),
    ],
)  # fmt: skip
def test_sender_numbers_are_refused_with_the_allowed_range(
    root: Path, text: str, field: str, allowed: str
) -> None:
    path = root / "senders" / "paubox.yaml"
    path.write_text(text)
    expect_error(lambda: load_sender(path), path, field, "", allowed)


def test_a_field_name_is_escaped_and_cut_short(root: Path) -> None:
    path = root / "receivers" / "tls12.yaml"
    path.write_text('? "\\e]0;owned\\a\\e[2J' + "k" * 5000 + '"\n: 1\n')
    with pytest.raises(ScenarioError) as excinfo:
        load_receiver(path)
    error, message = excinfo.value, str(excinfo.value)
    assert "\x1b" not in message
    assert "\x07" not in message
    assert error.field.startswith("\\x1b]0;owned\\x07\\x1b[2Jkkk")
    assert len(error.field) <= 63
    assert "remove the field" in error.fix
    assert len(message) < 600


@pytest.mark.parametrize(
    ("folder", "text"),
    [
        ("receivers", "a: *secret-alias-name\n"),
        ("receivers", "a: !!int secret-int-text\n"),
        ("receivers", "a: !secret-tag-name x\n"),
        ("senders", "driver: postfix\nsecurity_level: may\nprotocols: secret-protocol-text\n"),
    ],
    ids=["alias", "int-tag", "unknown-tag", "validator-message"],
)
def test_errors_do_not_echo_values_from_the_file(root: Path, folder: str, text: str) -> None:
    path = root / folder / ("tls12.yaml" if folder == "receivers" else "paubox.yaml")
    path.write_text(text)
    with pytest.raises(ScenarioError) as excinfo:
        (load_receiver if folder == "receivers" else load_sender)(path)
    assert "secret" not in str(excinfo.value)


# --- the same attacks through `tlslab run`: exit 2, one line, no hang ------------------------

CLI_BOUND = 30  # seconds: the command starts Python (~1 s here); a hang never returns
MEMORY_CAP = 2 * 1024**3  # an unbounded read of /dev/zero must not take the machine with it


def _capped_memory() -> None:
    """Limit the child's address space (runs in the child before exec)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def tlslab_run(
    suite: str | Path, root: Path, tmp_path: Path, *more: str
) -> subprocess.CompletedProcess[str]:
    """Run `tlslab run` on a suite, bounded in time and memory."""
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--suite", str(suite), "--scenarios",
         str(root), "--reports", str(tmp_path / "r"), "--certs", str(tmp_path / "c"), *more],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
        timeout=CLI_BOUND, preexec_fn=_capped_memory, check=False,
    )  # fmt: skip


def _fifo(root: Path, tmp_path: Path) -> tuple[str | Path, Path]:
    receiver = root / "receivers" / "tls12.yaml"
    receiver.unlink()
    os.mkfifo(receiver)
    return "small", receiver


def _dev_zero(root: Path, tmp_path: Path) -> tuple[str | Path, Path]:
    link = tmp_path / "zero.yaml"
    link.symlink_to("/dev/zero")
    return link, link


def _deep(root: Path, tmp_path: Path) -> tuple[str | Path, Path]:
    receiver = root / "receivers" / "tls12.yaml"
    receiver.write_text("description: " + "[" * 5000 + "]" * 5000 + "\n")
    return "small", receiver


def _long_description(root: Path, tmp_path: Path) -> tuple[str | Path, Path]:
    receiver = root / "receivers" / "tls12.yaml"
    receiver.write_text("description: " + "x" * 140_000 + "\n")
    return "small", receiver


@pytest.mark.parametrize("attack", [_fifo, _dev_zero, _deep, _long_description])
def test_hostile_scenario_files_end_tlslab_run_with_one_line_and_exit_2(
    root: Path, tmp_path: Path, attack: Callable[[Path, Path], tuple[str | Path, Path]]
) -> None:
    suite, culprit = attack(root, tmp_path)
    ran = tlslab_run(suite, root, tmp_path)
    assert "Traceback" not in ran.stderr
    assert ran.returncode == 2, ran.stderr
    (line,) = ran.stderr.splitlines()
    assert line.startswith(f"tlslab: error: {culprit}: field '")
    assert "fix: " in line


def test_tlslab_run_control_a_sound_suite_gets_past_loading(root: Path, tmp_path: Path) -> None:
    ran = tlslab_run("small", root, tmp_path, "--backend", "no-such-backend")
    assert ran.returncode == 2
    assert "unknown backend" in ran.stderr  # chosen after the suite and its files loaded
