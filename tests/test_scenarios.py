"""Tests of harness.scenarios: the shipped YAML loads, and every bad file names file, field, fix."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.model import (
    Outcome,
    PolicyAction,
    PostfixSenderProfile,
    ReferenceSenderProfile,
    RelaySenderProfile,
    RfcSenderProfile,
    SesSenderProfile,
    Suite,
    TlsMode,
)
from harness.scenarios import (
    DEFAULT_ROOT,
    ScenarioError,
    load_receiver,
    load_sender,
    load_suite,
    read_yaml,
    resolve_suite_path,
    scenarios_root,
)
from harness.senders.exim_profile import EximSenderProfile
from lab.spec import CertState, ReceiverSpec, TlsVersion

SHIPPED_RECEIVERS = sorted(p.stem for p in (DEFAULT_ROOT / "receivers").glob("*.yaml"))
SHIPPED_SENDERS = sorted(p.stem for p in (DEFAULT_ROOT / "senders").glob("*.yaml"))
SENDER_MODELS: dict[str, type] = {
    "reference": ReferenceSenderProfile,
    "ses": SesSenderProfile,
    "postfix": PostfixSenderProfile,
    "relay": RelaySenderProfile,
    "exim": EximSenderProfile,
    "rfc": RfcSenderProfile,
}

BASE_SUITE = """\
title: a small suite
receivers: [tls10, tls12]
senders: [ses-default, paubox]
cells:
  tls10:
    ses-default: {outcome: delivered, tls: TLSv1.0, study: true}
    paubox:      {outcome: fallback}
  tls12:
    ses-default: {outcome: delivered, tls: TLSv1.2}
    paubox:      {outcome: delivered, tls: TLSv1.2}
"""


def make_root(base: Path, suite: str | None = BASE_SUITE, name: str = "small") -> Path:
    """Return a scenarios root under `base` with the shipped receivers and senders."""
    root = base / "scenarios"
    for folder in ("receivers", "senders"):
        shutil.copytree(DEFAULT_ROOT / folder, root / folder)
    (root / "suites").mkdir()
    if suite is not None:
        (root / "suites" / f"{name}.yaml").write_text(suite, encoding="utf-8")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path)


def expect_error(
    load: Callable[[], object], path: Path, field: str, fix: str, problem: str = ""
) -> ScenarioError:
    """Assert `load()` raises a ScenarioError naming `path`, `field` and a fix containing `fix`."""
    with pytest.raises(ScenarioError) as excinfo:
        load()
    error = excinfo.value
    assert error.path == path
    assert error.field == field
    assert fix in error.fix
    assert problem in error.problem
    message = str(error)
    assert str(path) in message
    assert f"'{field}'" in message
    assert error.fix in message
    assert "\n" not in message
    return error


# --- the shipped scenarios -------------------------------------------------------------------


def test_shipped_suite_loads_with_its_27_cells() -> None:
    loaded = load_suite("ses-2025")
    suite = loaded.suite
    assert suite.id == "ses-2025"
    assert loaded.path == DEFAULT_ROOT / "suites" / "ses-2025.yaml"
    assert len(suite.receivers) == 9
    assert suite.senders == ("ses-default", "ses-require-tls", "paubox")
    assert len(suite.cell_ids) == 27
    assert suite.cell_ids[0] == ("tls13", "ses-default")
    assert suite.cell_ids[-1] == ("untrusted-ca", "paubox")
    assert sum(suite.expectation(r, s).study for r, s in suite.cell_ids) == 14
    assert set(loaded.receivers) == set(suite.receivers)
    assert set(loaded.senders) == set(suite.senders)


def test_shipped_suite_study_cells_are_ses_columns_of_the_study_rows() -> None:
    suite = load_suite("ses-2025").suite
    study = {(r, s) for r, s in suite.cell_ids if suite.expectation(r, s).study}
    assert all(s != "paubox" for _, s in study)
    assert ("mismatched", "ses-default") not in study
    assert ("tls10", "ses-require-tls") in study
    assert suite.expectation("no-starttls", "ses-require-tls").outcome is Outcome.REFUSED
    assert suite.expectation("tls10", "ses-default").tls is TlsVersion.TLS10
    assert suite.expectation("no-starttls", "ses-default").tls == "plaintext"


def test_shipped_suite_loads_by_path_too() -> None:
    by_path = load_suite(DEFAULT_ROOT / "suites" / "ses-2025.yaml")
    assert by_path.suite == load_suite("ses-2025").suite


@pytest.mark.parametrize("name", SHIPPED_RECEIVERS)
def test_each_shipped_receiver_loads(name: str) -> None:
    spec = load_receiver(DEFAULT_ROOT / "receivers" / f"{name}.yaml")
    assert isinstance(spec, ReceiverSpec)
    assert spec.id == name
    assert spec.mx_host == f"mx.{name}.lab.test"


def test_shipped_receivers_cover_the_vocabulary() -> None:
    assert set(SHIPPED_RECEIVERS) >= {
        "tls10", "tls11", "tls12", "tls13", "no-starttls",
        "self-signed", "expired", "mismatched", "untrusted-ca",
    }  # fmt: skip
    specs = {n: load_receiver(DEFAULT_ROOT / "receivers" / f"{n}.yaml") for n in SHIPPED_RECEIVERS}
    assert specs["tls10"].offered_versions == [TlsVersion.TLS10]
    assert specs["no-starttls"].offered_versions == []
    assert specs["expired"].certificate is CertState.EXPIRED
    assert specs["tls13"].certificate is CertState.VALID


@pytest.mark.parametrize("name", SHIPPED_SENDERS)
def test_each_shipped_sender_loads(name: str) -> None:
    path = DEFAULT_ROOT / "senders" / f"{name}.yaml"
    profile = load_sender(path)
    assert profile.id == name
    assert profile.driver == yaml.safe_load(path.read_text(encoding="utf-8"))["driver"]
    assert type(profile) is SENDER_MODELS[profile.driver]


def test_shipped_sender_policies() -> None:
    def sender(name: str) -> ReferenceSenderProfile:
        profile = load_sender(DEFAULT_ROOT / "senders" / f"{name}.yaml")
        assert isinstance(profile, ReferenceSenderProfile)
        return profile

    assert sender("ses-default").tls is TlsMode.OPPORTUNISTIC
    assert sender("ses-require-tls").on_policy_unmet is PolicyAction.REFUSE
    assert sender("paubox").verify is True
    assert sender("paubox").min_version is TlsVersion.TLS12


def test_scenarios_root_prefers_explicit_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TLSLAB_SCENARIOS", raising=False)
    assert scenarios_root() == DEFAULT_ROOT
    monkeypatch.setenv("TLSLAB_SCENARIOS", str(tmp_path))
    assert scenarios_root() == tmp_path
    assert scenarios_root(tmp_path / "x") == tmp_path / "x"


# --- a tmp scenarios root: the positive control ----------------------------------------------


def test_tmp_root_suite_loads(root: Path) -> None:
    loaded = load_suite("small", root)
    assert loaded.suite.id == "small"
    assert loaded.suite.cell_ids == [
        ("tls10", "ses-default"), ("tls10", "paubox"),
        ("tls12", "ses-default"), ("tls12", "paubox"),
    ]  # fmt: skip
    assert loaded.receivers["tls10"].tls_max is TlsVersion.TLS10
    # by path, the root is the suite file's grandparent
    assert load_suite(root / "suites" / "small.yaml").suite == loaded.suite


def test_matching_id_field_is_accepted(root: Path) -> None:
    (root / "receivers" / "tls10.yaml").write_text("id: tls10\nstarttls: true\n")
    assert load_receiver(root / "receivers" / "tls10.yaml").id == "tls10"


# --- one test per error class ----------------------------------------------------------------


def test_yaml_syntax_error_names_line_and_column(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.write_text("receivers: [tls10\nsenders: [ses-default]\n")
    error = expect_error(
        lambda: load_suite("small", root), path, "line 2, column 8", "fix the YAML syntax"
    )
    assert error.problem.startswith("invalid YAML")


def test_top_level_not_a_mapping(root: Path) -> None:
    path = root / "receivers" / "tls10.yaml"
    path.write_text("- starttls\n- tls_min\n")
    expect_error(lambda: load_receiver(path), path, "(document)", "`key: value`", "got list")


def test_empty_file_is_not_a_mapping(root: Path) -> None:
    path = root / "senders" / "paubox.yaml"
    path.write_text("")
    expect_error(lambda: load_sender(path), path, "(document)", "`key: value`", "NoneType")


def test_unknown_field(root: Path) -> None:
    path = root / "receivers" / "tls10.yaml"
    path.write_text("tls_min: TLSv1.0\ntls_maximum: TLSv1.0\n")
    expect_error(lambda: load_receiver(path), path, "tls_maximum", "remove the field")


def test_wrong_type(root: Path) -> None:
    path = root / "receivers" / "tls10.yaml"
    path.write_text("starttls: maybe\n")
    expect_error(
        lambda: load_receiver(path), path, "starttls", "correct the value's type", "boolean"
    )


def test_bad_enum_value_lists_allowed_values(root: Path) -> None:
    path = root / "receivers" / "expired.yaml"
    path.write_text("certificate: revoked\n")
    error = expect_error(lambda: load_receiver(path), path, "certificate", "allowed values")
    for allowed in CertState:
        assert f"'{allowed.value}'" in error.problem


def test_bad_sender_enum_and_driver(root: Path) -> None:
    path = root / "senders" / "paubox.yaml"
    path.write_text("on_policy_unmet: bounce\n")
    error = expect_error(lambda: load_sender(path), path, "on_policy_unmet", "allowed values")
    assert "'fallback'" in error.problem
    path.write_text("driver: smoke-signals\n")
    error = expect_error(lambda: load_sender(path), path, "driver", "allowed values", "'reference'")
    assert "'postfix'" in error.problem


def test_id_disagreeing_with_file_name(root: Path) -> None:
    path = root / "receivers" / "tls10.yaml"
    path.write_text("id: tls11-secret-value\n")
    error = expect_error(lambda: load_receiver(path), path, "id", "rename the file")
    assert "differs from the file name" in error.problem
    assert "secret-value" not in str(error)  # the loader never echoes a value it read


def test_file_name_that_is_not_a_valid_id(root: Path) -> None:
    path = root / "receivers" / "TLS_10.yaml"
    path.write_text("starttls: true\n")
    expect_error(lambda: load_receiver(path), path, "id", "format", "pattern")


def test_unknown_receiver_id_in_suite(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.write_text(BASE_SUITE.replace("[tls10, tls12]", "[tls10, tls99]"))
    error = expect_error(lambda: load_suite("small", root), path, "receivers[1]", "use one of")
    assert "'tls99'" in error.problem
    assert "'tls12'" in error.fix
    assert str(root / "receivers" / "tls99.yaml") in error.fix


def test_unknown_sender_id_in_suite(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.write_text(BASE_SUITE.replace("[ses-default, paubox]", "[ses-default, sendgrid]"))
    error = expect_error(lambda: load_suite("small", root), path, "senders[1]", "'paubox'")
    assert "'sendgrid'" in error.problem


def test_receiver_listed_twice(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.write_text(BASE_SUITE.replace("[tls10, tls12]", "[tls10, tls12, tls10]"))
    expect_error(
        lambda: load_suite("small", root), path, "receivers[2]", "list each id once", "twice"
    )


def test_cell_missing(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.write_text(BASE_SUITE.replace("    paubox:      {outcome: delivered, tls: TLSv1.2}\n", ""))
    expect_error(
        lambda: load_suite("small", root), path, "cells.tls12.paubox", "outcome", "missing"
    )


def test_row_missing(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    text = BASE_SUITE.split("  tls12:\n")[0]
    path.write_text(text)
    expect_error(lambda: load_suite("small", root), path, "cells.tls12.ses-default", "outcome")


def test_cell_for_a_sender_not_in_the_suite(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.write_text(BASE_SUITE + "    ses-require-tls: {outcome: refused}\n")
    error = expect_error(
        lambda: load_suite("small", root), path, "cells.tls12.ses-require-tls", "'paubox'"
    )
    assert "not a sender" in error.problem


def test_cell_row_for_a_receiver_not_in_the_suite(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.write_text(BASE_SUITE + "  tls13:\n    paubox: {outcome: refused}\n")
    expect_error(lambda: load_suite("small", root), path, "cells.tls13", "'tls12'")


def test_bad_cell_expectation_names_the_nested_field(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.write_text(BASE_SUITE.replace("paubox:      {outcome: fallback}", "paubox: {outcome: x}"))
    error = expect_error(
        lambda: load_suite("small", root), path, "cells.tls10.paubox.outcome", "allowed values"
    )
    assert "'delivered'" in error.problem


def test_suite_missing_a_required_field(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.write_text("receivers: [tls10]\ncells: {}\n")
    expect_error(lambda: load_suite("small", root), path, "senders", "add the field")


def test_broken_receiver_file_is_named_not_the_suite(root: Path) -> None:
    receiver = root / "receivers" / "tls12.yaml"
    receiver.write_text("tls_min: TLSv1.9\n")
    expect_error(lambda: load_suite("small", root), receiver, "tls_min", "allowed values")


def test_unknown_suite_id_lists_known_suites(root: Path) -> None:
    (root / "suites" / "other.yaml").write_text(BASE_SUITE)
    error = expect_error(
        lambda: load_suite("nope", root), root / "suites" / "nope.yaml", "suite", "use one of"
    )
    assert "['other', 'small']" in error.fix
    assert "'nope'" in error.problem
    with pytest.raises(ScenarioError):
        resolve_suite_path("nope", root)
    assert resolve_suite_path("small", root) == root / "suites" / "small.yaml"


def test_file_not_found(root: Path) -> None:
    missing = root / "suites" / "missing.yaml"
    expect_error(lambda: load_suite(missing), missing, "(file)", "check the path", "not found")
    expect_error(lambda: read_yaml(missing), missing, "(file)", "check the path")


def test_non_utf8_file(root: Path) -> None:
    path = root / "receivers" / "tls10.yaml"
    path.write_bytes(b"description: \xff\xfe\n")
    expect_error(lambda: load_receiver(path), path, "(file)", "UTF-8", "cannot read")


# --- gaps in the error contract (see the report) --------------------------------------------


def test_impossible_date_is_a_scenario_error(root: Path) -> None:
    path = root / "receivers" / "tls10.yaml"
    path.write_text("description: 2020-13-45\n")
    with pytest.raises(ScenarioError) as excinfo:
        load_receiver(path)
    assert excinfo.value.path == path
    assert excinfo.value.fix


def test_overlong_receiver_id_is_a_scenario_error(root: Path) -> None:
    path = root / "suites" / "small.yaml"
    path.write_text(BASE_SUITE.replace("[tls10, tls12]", f"[tls10, {'x' * 300}]"))
    with pytest.raises(ScenarioError) as excinfo:
        load_suite("small", root)
    assert (excinfo.value.path, excinfo.value.field) == (path, "receivers[1]")


def test_tls_range_error_names_tls_min(root: Path) -> None:
    path = root / "receivers" / "tls12.yaml"
    path.write_text("tls_min: TLSv1.3\ntls_max: TLSv1.0\n")
    with pytest.raises(ScenarioError) as excinfo:
        load_receiver(path)
    assert excinfo.value.field in ("tls_min", "tls_max")
    assert "tls_min" in excinfo.value.fix


def test_error_message_stays_on_one_line(root: Path) -> None:
    path = root / "receivers" / "tls10.yaml"
    path.write_text('id: "tls\\n11"\n')
    with pytest.raises(ScenarioError) as excinfo:
        load_receiver(path)
    assert excinfo.value.field == "id"
    assert "\n" not in str(excinfo.value)


# --- fuzz: loading raises ScenarioError or succeeds, nothing else ----------------------------

FIELDS = sorted(
    {*ReceiverSpec.model_fields, *ReferenceSenderProfile.model_fields, *Suite.model_fields}
    | {"outcome", "tls", "study", "note", "tls10", "tls12", "ses-default", "paubox"}
)
WORDS = [
    *FIELDS, *SHIPPED_RECEIVERS, *SHIPPED_SENDERS,
    *(v.value for v in TlsVersion), *(c.value for c in CertState),
    *(o.value for o in Outcome), "plaintext", "any", "reference",
]  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(max_size=12)
    | st.sampled_from(WORDS)
)
KEYS = st.sampled_from(FIELDS) | st.text(max_size=8) | st.integers() | st.none() | st.booleans()
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=5),
    max_leaves=20,
)
TOP_LEVEL = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), DOCUMENTS, max_size=6)
YAML_TEXT = (
    TOP_LEVEL.map(yaml.safe_dump)
    | DOCUMENTS.map(yaml.safe_dump)
    | st.text(max_size=80)
    | st.text(alphabet=st.sampled_from(list(":-[]{},#&*!|>'\"? \n\tab")), max_size=40)
)


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("fuzz"), suite=None)


def _load_or_scenario_error(load: Callable[[], Any]) -> None:
    """Call `load`; it may succeed or raise a ScenarioError that names file, field and fix."""
    error: ScenarioError | None = None
    try:
        load()
    except ScenarioError as raised:
        error = raised
    if error is not None:
        assert error.path.name.endswith(".yaml")
        assert error.field
        assert error.fix


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=YAML_TEXT)
def test_fuzz_loading_raises_only_scenario_error(fuzz_root: Path, text: str) -> None:
    receiver = fuzz_root / "receivers" / "fuzzed.yaml"
    sender = fuzz_root / "senders" / "fuzzed.yaml"
    suite = fuzz_root / "suites" / "fuzzed.yaml"
    for path in (receiver, sender, suite):
        path.write_text(text, encoding="utf-8")
    _load_or_scenario_error(lambda: load_receiver(receiver))
    _load_or_scenario_error(lambda: load_sender(sender))
    _load_or_scenario_error(lambda: load_suite("fuzzed", fuzz_root))
    _load_or_scenario_error(lambda: load_suite(suite))


@pytest.mark.parametrize(
    "text",
    [
        "x: &a {y: *a}\n",
        "receivers: &a [*a]\nsenders: []\ncells: {}\n",
        "description: !!binary notbase64!\n",
        "description: !!python/object:os.system {}\n",
        "? [a, b]\n: c\n",
        "{1: 2}\n",
        "receivers: [tls10]\nsenders: [ses-default]\ncells: {tls10: {ses-default: 3}}\n",
        "receivers: ['\\0']\nsenders: []\ncells: {}\n",
        "receivers: ['../senders/paubox']\nsenders: []\ncells: {}\n",
        "---\na: 1\n---\nb: 2\n",
        "\t- x\n",
        "%YAML 9.9\n---\na: 1\n",
    ],
)
def test_odd_documents_raise_only_scenario_error(fuzz_root: Path, text: str) -> None:
    receiver = fuzz_root / "receivers" / "odd.yaml"
    suite = fuzz_root / "suites" / "odd.yaml"
    receiver.write_text(text, encoding="utf-8")
    suite.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError):
        load_receiver(receiver)
    with pytest.raises(ScenarioError):
        load_suite("odd", fuzz_root)


def test_bad_cipher_string_names_the_file_field_and_fix(root: Path) -> None:
    path = root / "receivers" / "tls12.yaml"
    path.write_text("tls_max: TLSv1.2\nciphers: NO-SUCH-SUITE\n")
    expect_error(lambda: load_receiver(path), path, "ciphers", "openssl ciphers")


def test_a_suite_keeps_one_object_per_distinct_cell_expectation() -> None:
    from harness.model import Suite

    row = {"s1": {"outcome": "delivered"}, "s2": {"outcome": "delivered"}}
    suite = Suite.model_validate(
        {
            "id": "t",
            "receivers": ["r1", "r2"],
            "senders": ["s1", "s2", "s3"],
            "cells": {"r1": row, "r2": row | {"s3": {"outcome": "refused"}}},
        }
    )
    same = suite.expectation("r1", "s1")
    assert suite.expectation("r1", "s2") is same
    assert suite.expectation("r2", "s1") is same
    assert suite.expectation("r2", "s3") is not same, "control: a different one is its own"
    assert suite.expectation("r2", "s3").outcome == "refused"
