"""The relay driver: profiles, credentials, and the lab's authenticated Postfix relay on Docker."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.model import CellResult, Outcome, RelaySenderProfile, Verdict
from harness.run_start import open_run
from harness.scenarios import load_sender, load_suite
from harness.senders.base import SendAction, SendReport
from harness.senders.relay import RelaySender, credentials
from lab.backends import BackendError
from lab.backends.docker import DockerBackend
from lab.pki import LabPki

PROJECT = Path(__file__).resolve().parents[1]
SENDER = "relay-lab"
SUBSET = ["tls12", "no-starttls", "tls10"]
USER, PASSWORD = "relay-tester", "planted-relay-Pw/9xQ+do-not-leak"
NAMES = {"LAB_RELAY_USER": USER, "LAB_RELAY_PASSWORD": PASSWORD}
CELL_SECONDS = 90.0  # a hang guard: cells take 2-12 s, more on a loaded runner


# --- profiles and credentials (no Docker) -----------------------------------------------------


def test_the_shipped_profile_names_variables_only() -> None:
    path = PROJECT / "scenarios" / "senders" / f"{SENDER}.yaml"
    profile = load_sender(path)
    assert isinstance(profile, RelaySenderProfile)
    assert (profile.username_env, profile.password_env) == ("LAB_RELAY_USER", "LAB_RELAY_PASSWORD")
    assert (profile.port, profile.security.value, profile.lab_relay) == (587, "starttls", True)
    assert "password:" not in path.read_text().replace("password_env:", "")


def test_a_profile_needs_a_host_and_both_credential_names_or_neither() -> None:
    with pytest.raises(ValueError, match="host"):
        RelaySenderProfile(id="r", driver="relay")
    with pytest.raises(ValueError, match="both"):
        RelaySenderProfile(id="r", driver="relay", host="smtp.example", username_env="U")
    bare = RelaySenderProfile(id="r", driver="relay", host="smtp.example")
    assert credentials(bare, {}) is None  # no AUTH at all


def test_a_missing_variable_is_named_and_its_value_never_shown() -> None:
    profile = RelaySenderProfile(
        id="r", driver="relay", host="smtp.example", username_env="U", password_env="P"
    )
    with pytest.raises(BackendError) as raised:
        credentials(profile, {"U": "someone"})
    assert "field 'password_env': environment variable P is not set" in str(raised.value)
    assert "someone" not in str(raised.value)
    assert credentials(profile, {"U": "u", "P": "p"}) == ("u", "p")


# --- the lab relay on Docker ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RelayRun:
    """What the relay run produced, read before the lab went away."""

    results: dict[str, CellResult]
    login: SendReport
    wrong: SendReport
    run_dir: Path
    container_text: str
    output: str
    key_dir: Path  # the lab relay's throwaway key folder on the host
    key_dir_was_there: bool  # while the lab ran


@pytest.fixture(scope="module")
def relay_run(
    docker_engine: Any,
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> RelayRun:
    """Run relay-lab on a subset of receivers, plus two profiles naming the relay by address."""
    patch = pytest.MonkeyPatch()
    for name, value in NAMES.items():
        patch.setenv(name, value)
    patch.setenv("LAB_RELAY_WRONG", "wrong-" + PASSWORD[::-1])
    try:
        return _run(docker_engine, lab_pki, tmp_path_factory)
    finally:
        patch.undo()


def _run(engine: Any, lab_pki: LabPki, factory: pytest.TempPathFactory) -> RelayRun:
    """Do the run (credentials are in the environment)."""
    root = factory.mktemp("relay-scenarios")
    shutil.copytree(PROJECT / "scenarios" / "receivers", root / "receivers")
    (root / "senders").mkdir()
    shutil.copy(PROJECT / "scenarios" / "senders" / f"{SENDER}.yaml", root / "senders")
    suite = yaml.safe_load((PROJECT / "scenarios" / "suites" / "relay.yaml").read_text())
    suite["receivers"] = SUBSET
    suite["cells"] = {r: suite["cells"][r] for r in SUBSET}
    (root / "suites").mkdir()
    (root / "suites" / "mini.yaml").write_text(yaml.safe_dump(suite))
    loaded = load_suite(root / "suites" / "mini.yaml")
    reports = factory.mktemp("relay-reports")
    with open_run(loaded, DockerBackend(say=lambda _: None), lab_pki.root, reports) as run:
        results = {r: run.run_cell(r, SENDER) for r in SUBSET}
        lab_relay = run.drivers[SENDER]
        assert isinstance(lab_relay, RelaySender)
        assert lab_relay.host is not None
        # the same relay as "any submission service": by address, AUTH LOGIN, and a wrong password
        by_address = {"id": "r", "driver": "relay", "host": lab_relay.address,
                      "verify_relay_certificate": False, "observe_timeout_seconds": 5}  # fmt: skip
        login = RelaySenderProfile(
            **by_address,
            username_env="LAB_RELAY_USER",
            password_env="LAB_RELAY_PASSWORD",
            auth_mechanism="login",
        )
        wrong = RelaySenderProfile(
            **by_address, username_env="LAB_RELAY_USER", password_env="LAB_RELAY_WRONG"
        )
        message = run_message(loaded.receivers["tls12"].domain)
        login_report = RelaySender(login, run.lab, run.run_dir).send(message)
        wrong_report = RelaySender(wrong, run.lab, run.run_dir).send(message)
        _, maillog = lab_relay.host.exec(["cat", "/var/log/postfix.log"])
        logs = engine.containers.get(lab_relay.host.name).logs().decode("utf-8", "replace")
        output = "\n".join(r.detail + r.sender_report for r in results.values())
        key_dir = Path(str(lab_relay.ca_file)).parent
        key_dir_was_there = (key_dir / "relay.key").is_file()
    return RelayRun(results, login_report, wrong_report, run.run_dir, maillog + logs, output,
                    key_dir, key_dir_was_there)  # fmt: skip


def run_message(domain: str) -> Any:
    """Return a test message to the inbox of a lab domain."""
    from harness.runner import build_message

    return build_message("tls12", "r", domain)


@pytest.mark.integration
class TestLabRelay:
    """Submission over STARTTLS with AUTH, delivery by the relay, and secrets kept out."""

    def test_every_cell_matches_the_suite_and_is_bounded(self, relay_run: RelayRun) -> None:
        failed = {k: (r.outcome.value, r.detail) for k, r in relay_run.results.items()
                  if r.verdict is not Verdict.PASS}  # fmt: skip
        assert failed == {}
        assert max(r.seconds for r in relay_run.results.values()) < CELL_SECONDS

    def test_the_relay_delivers_what_its_tls_level_allows(self, relay_run: RelayRun) -> None:
        tls12, plain, tls10 = (relay_run.results[r] for r in SUBSET)
        assert tls12.tls is not None
        assert tls12.tls.version.value == "TLSv1.2"
        assert (plain.outcome, plain.tls) == (Outcome.DELIVERED, None)
        assert tls10.tls is not None
        assert tls10.tls.version.value == "TLSv1.0"
        for result in relay_run.results.values():
            assert result.sender_report.startswith("submitted: ")
            assert "after AUTH PLAIN" in result.sender_report
            assert result.received is not None
            assert "relay-relay-lab.sender.lab.test" in (result.received)

    def test_auth_login_works_and_a_wrong_password_is_refused_with_535(
        self, relay_run: RelayRun
    ) -> None:
        assert relay_run.login.action is SendAction.SUBMITTED, relay_run.login.reason
        assert "after AUTH LOGIN" in relay_run.login.reason
        assert relay_run.wrong.action is SendAction.REFUSED, relay_run.wrong.reason
        assert "535" in relay_run.wrong.reason
        assert "authentication failed" in relay_run.wrong.reason.lower()

    def test_the_relay_key_folder_is_removed_with_the_run(self, relay_run: RelayRun) -> None:
        assert relay_run.key_dir_was_there, relay_run.key_dir
        assert relay_run.key_dir.name.startswith("tlslab-relay-")
        assert not relay_run.key_dir.exists()

    def test_the_password_appears_nowhere(self, relay_run: RelayRun) -> None:
        texts = [relay_run.container_text, relay_run.output, relay_run.wrong.reason,
                 relay_run.login.reason]  # fmt: skip
        texts += [p.read_bytes().decode("utf-8", "replace")
                  for p in relay_run.run_dir.rglob("*") if p.is_file()]  # fmt: skip
        assert len(texts) > 6
        for text in texts:
            assert PASSWORD not in text
            assert PASSWORD[::-1] not in text
        assert "sasl_method=PLAIN" in relay_run.container_text  # the log was readable
