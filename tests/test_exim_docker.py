"""The exim driver: mainlog parsing, and a real Exim in three profiles on Docker receivers."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tools import missing, require_apt_packages

from harness.model import CellResult, Outcome, Verdict
from harness.run_start import open_run
from harness.scenarios import ScenarioError, load_sender, load_suite
from harness.senders import open_driver
from harness.senders.exim import EXIM_CAPS, EximSender
from harness.senders.exim_log import Flag, attempts, cell_log, exim_id, to_report
from harness.senders.exim_profile import EximSenderProfile
from lab.backends import BackendError, RunningLab
from lab.backends.docker import RUN_LABEL, DockerBackend, docker_client
from lab.backends.docker_images import EXIM_DEBS, LOCAL_BASE, choose_base
from lab.pki import LabPki

PROJECT = Path(__file__).resolve().parents[1]
SUBSET = ["tls12", "tls10", "no-starttls", "self-signed", "mismatched"]
PROFILES = ["exim-default", "exim-require-tls", "exim-verify"]
# stock opportunistic TLS with a GnuTLS priority of TLS 1.2 or newer: the one way to make an
# opportunistic handshake fail among these receivers (tls10), so tls_tempfail_tryclear shows
PROBE = "exim-default-tls12"
PROBE_CIPHERS = "NORMAL:-VERS-TLS1.0:-VERS-TLS1.1"
PROBE_CELLS = {"tls10": {"outcome": "delivered", "tls": "plaintext"},
               "tls12": {"outcome": "delivered", "tls": "TLSv1.2"}}  # fmt: skip
PROBE_UNRUN = {"no-starttls": {"outcome": "delivered", "tls": "plaintext"},
               "self-signed": {"outcome": "delivered", "tls": "TLSv1.3"},
               "mismatched": {"outcome": "delivered", "tls": "TLSv1.3"}}  # fmt: skip
CELL_SECONDS = 90.0  # a hang guard: cells take 1-5 s, more on a loaded runner

MID, OTHER = "1xYZJQ-00005W-2l", "1xYZJR-00006G-2O"
LOG = """\
2026-12-02 01:38:30.101 1xYZJQ-00005W-2l <= bounce+c@sender.lab.test U=root P=local S=600 id=c.1@sender.lab.test
2026-12-02 01:38:30.120 1xYZJR-00006G-2O <= bounce+d@sender.lab.test U=root P=local S=600 id=d.2@sender.lab.test
2026-12-02 01:38:30.200 1xYZJQ-00005W-2l == inbox@tls10.lab.test R=dnslookup T=remote_smtp defer (-37) H=mx.tls10.lab.test [10.0.0.4]:25 DT=0.02s: TLS session: (gnutls_handshake): A TLS fatal alert has been received.
2026-12-02 01:38:30.210 1xYZJR-00006G-2O => inbox@x.lab.test R=dnslookup T=remote_smtp H=mx.x.lab.test [10.0.0.9]:25 X=TLS1.3:ECDHE_SECP256R1__RSA_PSS_RSAE_SHA256__AES_256_GCM:256 CV=no DN="CN=mx.x.lab.test" C="250 2.0.0 Ok" DT=0.1s
2026-12-02 01:38:30.211 1xYZJR-00006G-2O Completed
2026-12-02 01:38:31.500 1xYZJQ-00005W-2l H=mx.tls10.lab.test [10.0.0.4]:25: a TLS session could not be set up; trying in clear
2026-12-02 01:38:31.600 1xYZJQ-00005W-2l => inbox@tls10.lab.test R=dnslookup T=remote_smtp H=mx.tls10.lab.test [10.0.0.4]:25 C="250 2.0.0 Ok: queued as 535A0F3BAC1C" DT=0.1s
2026-12-02 01:38:31.601 1xYZJQ-00005W-2l Completed
"""  # noqa: E501


# --- mainlog parsing (no Docker) -----------------------------------------------------------------


def test_attempts_follow_one_exim_id_and_read_tls_facts() -> None:
    lines = LOG.splitlines()
    assert exim_id(lines, "<c.1@sender.lab.test>") == MID
    assert exim_id(lines, "<c.1@sender.lab.tes>") is None  # a prefix of another id is not it
    found = attempts(lines, MID, "inbox@tls10.lab.test")
    assert [a.flag for a in found] == [Flag.DEFERRED, Flag.DELIVERED]
    assert found[1].tls_version is None  # the retry went out in clear
    assert found[1].host == "mx.tls10.lab.test [10.0.0.4]:25"
    (other,) = attempts(lines, OTHER, "inbox@x.lab.test")
    assert (other.tls_version, other.verified) == ("TLSv1.3", "no")
    assert attempts(lines, MID, "inbox@x.lab.test") == []  # another recipient's status
    kept = cell_log(lines, MID).splitlines()
    assert len(kept) == 5
    assert not any(OTHER in line for line in kept)


def test_report_of_a_deferral_retried_into_plaintext() -> None:
    report = to_report(LOG, MID, "inbox@tls10.lab.test", 1.4, "", (("10.0.0.7", 4000),))
    assert report.action.value == "delivered"
    assert report.tls_version is None
    assert "first attempt: == R=dnslookup" in report.reason
    assert "(gnutls_handshake): A TLS fatal alert has been received." in report.reason
    assert "retry 1.4 s after queueing: => " in report.reason
    assert "[H=mx.tls10.lab.test [10.0.0.4]:25: a TLS session could not be set up" in report.reason
    assert report.attempts == (("10.0.0.7", 4000),)
    queued = "exim -bp: still in the queue"
    deferred = to_report(LOG.replace("=> inbox@tls10", "== inbox@tls10"), MID,
                         "inbox@tls10.lab.test", 1.4, queued, ())  # fmt: skip
    assert deferred.action.value == "deferred"
    assert deferred.reason.endswith("; exim -bp: still in the queue")
    failed = to_report(LOG.replace("=> inbox@tls10", "** inbox@tls10"), MID,
                       "inbox@tls10.lab.test", None, "", ())  # fmt: skip
    assert failed.action.value == "refused"


def test_exim_profiles_load_and_priority_strings_are_checked(tmp_path: Path) -> None:
    profile = load_sender(PROJECT / "scenarios" / "senders" / "exim-verify.yaml")
    assert isinstance(profile, EximSenderProfile)
    assert (profile.require_tls, profile.verify, profile.require_ciphers) == (True, True, None)
    bad = tmp_path / "senders" / "exim-bad.yaml"
    bad.parent.mkdir()
    # Exim expands tls_require_ciphers: `${run...}` or a new config line must never get through
    for value in ["NORMAL:${run{/bin/true}}", "NORMAL\\nhosts_require_tls =", "NORMAL -VERS"]:
        bad.write_text(yaml.safe_dump({"driver": "exim", "require_ciphers": value}))
        with pytest.raises(ScenarioError) as excinfo:
            load_sender(bad)
        assert excinfo.value.field == "require_ciphers"
    bad.write_text(yaml.safe_dump({"driver": "exim", "require_ciphers": PROBE_CIPHERS}))
    assert load_sender(bad).require_ciphers == PROBE_CIPHERS  # type: ignore[attr-defined]


def test_the_exim_driver_needs_the_docker_backend(lab_pki: LabPki, tmp_path: Path) -> None:
    profile = load_sender(PROJECT / "scenarios" / "senders" / "exim-default.yaml")
    local = RunningLab("local", {}, lab_pki, tmp_path)
    with pytest.raises(BackendError, match="needs the docker backend"):
        open_driver(profile, local, tmp_path)


# --- a real Exim on the Docker backend ----------------------------------------------------------


def lab_containers(client: Any) -> set[str]:
    """Return the names of every lab-labelled container on the engine."""
    return {c.name for c in client.containers.list(all=True, filters={"label": RUN_LABEL})}


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> Any:
    """Return a docker client whose base can build the Exim image; else skip the module once."""
    try:
        client = docker_client()
    except BackendError as error:
        missing("no Docker engine answers", error.hint, docker=True, node=request.node)
    if choose_base(client) == LOCAL_BASE:  # no package index inside: the host downloads them
        require_apt_packages(EXIM_DEBS, "the Exim image's Debian packages")
    return client


@dataclasses.dataclass(frozen=True)
class EximRun:
    """What one run of the Exim cells left: results, leftovers, an Exim container's setup."""

    results: dict[str, CellResult]
    leftovers: set[str]
    host_config: dict[str, Any]
    user: str


@pytest.fixture(scope="module")
def exim_run(engine: Any, lab_pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> EximRun:
    """Run the three profiles (and the TLS 1.2 probe) against a subset of receivers, once."""
    root = tmp_path_factory.mktemp("exim-scenarios")
    shutil.copytree(PROJECT / "scenarios" / "receivers", root / "receivers")
    (root / "senders").mkdir()
    for name in PROFILES:
        shutil.copy(PROJECT / "scenarios" / "senders" / f"{name}.yaml", root / "senders")
    probe = {"driver": "exim", "require_ciphers": PROBE_CIPHERS}
    (root / "senders" / f"{PROBE}.yaml").write_text(yaml.safe_dump(probe))
    suite = yaml.safe_load((PROJECT / "scenarios" / "suites" / "exim.yaml").read_text())
    suite["receivers"], suite["senders"] = SUBSET, [*PROFILES, PROBE]
    probe_cells = {**PROBE_CELLS, **PROBE_UNRUN}
    suite["cells"] = {r: {**suite["cells"][r], PROBE: probe_cells[r]} for r in SUBSET}
    (root / "suites").mkdir()
    (root / "suites" / "mini.yaml").write_text(yaml.safe_dump(suite))
    loaded = load_suite(root / "suites" / "mini.yaml")
    cells = [(r, s) for r in SUBSET for s in PROFILES] + [(r, PROBE) for r in PROBE_CELLS]
    reports = tmp_path_factory.mktemp("exim-reports")
    with open_run(loaded, DockerBackend(say=lambda _: None), lab_pki.root, reports) as run:
        results = {f"{r}-{s}": run.run_cell(r, s) for r, s in cells}
        driver = run.drivers.get(PROFILES[0])
        assert isinstance(driver, EximSender), results[f"tls12-{PROFILES[0]}"].detail
        prefix = driver.host.name.removesuffix(f"exim-{PROFILES[0]}")  # tlslab-<run>-
        assert len({n for n in lab_containers(engine) if n.startswith(prefix)}) > len(SUBSET)
        attrs = engine.containers.get(driver.host.name).attrs
    left = {n for n in lab_containers(engine) if n.startswith(prefix)}
    return EximRun(results, left, attrs["HostConfig"], attrs["Config"]["User"])


@pytest.fixture
def cell(exim_run: EximRun) -> Callable[[str], CellResult]:
    """Return a function that looks up one cell's result by id."""
    return exim_run.results.__getitem__


def version(result: CellResult) -> str | None:
    """Return the TLS version a cell's message arrived over, or None (plaintext or nothing)."""
    return result.tls.version.value if result.tls else None


def stored(result: CellResult) -> list[str]:
    """Return the message ids the receiver stored during this cell's sessions."""
    return [m for s in result.sessions for m in s.message_ids if m]


@pytest.mark.integration
class TestRealExim:
    """Outcomes, evidence and negative controls, each driven the same way through the runner."""

    def test_every_cell_matches_the_suite_and_is_bounded(self, exim_run: EximRun) -> None:
        results = exim_run.results
        failed = {k: (r.outcome.value, r.detail) for k, r in results.items()
                  if r.verdict is not Verdict.PASS}  # fmt: skip
        assert failed == {}
        assert max(r.seconds for r in results.values()) < CELL_SECONDS

    def test_default_sends_in_clear_when_no_starttls_is_offered(
        self, cell: Callable[[str], CellResult]
    ) -> None:
        result = cell("no-starttls-exim-default")
        assert (result.outcome, result.tls) == (Outcome.DELIVERED, None)
        assert result.received is not None
        assert "using TLS" not in result.received
        assert "exim-exim-default.sender.lab.test" in result.received
        assert " X=" not in result.sender_report
        # negative control, driven the same way: require-tls keeps it queued, even after the retry
        refused = cell("no-starttls-exim-require-tls")
        assert (refused.outcome, refused.received, stored(refused)) == (Outcome.DEFERRED, None, [])
        assert (
            "a TLS session is required, but the server did not offer TLS" in refused.sender_report
        )
        assert "exim -bp: still in the queue" in refused.sender_report
        assert len(refused.sessions) >= 2  # the first attempt and the forced retry
        assert not any(s.starttls for s in refused.sessions)

    def test_verify_defers_a_self_signed_receiver_and_stores_nothing(
        self, cell: Callable[[str], CellResult]
    ) -> None:
        result = cell("self-signed-exim-verify")
        assert (result.outcome, result.received, stored(result)) == (Outcome.DEFERRED, None, [])
        assert "(certificate verification failed)" in result.sender_report
        # GnuTLS finishes the handshake, then Exim leaves: the receiver sees no TLS alert
        assert len(result.sessions) >= 2
        assert all(s.handshake == "ok" and s.alert is None for s in result.sessions)
        assert {s.ended_by for s in result.sessions} == {"closed-after-handshake"}
        # negative controls: verify delivers to a valid receiver; default delivers to this one
        good = cell("tls12-exim-verify")
        assert version(good) == "TLSv1.2"
        assert " CV=yes " in good.sender_report
        lax = cell("self-signed-exim-default")
        assert version(lax) == "TLSv1.3"
        assert " CV=no " in lax.sender_report

    def test_verify_checks_the_mx_host_name(self, cell: Callable[[str], CellResult]) -> None:
        result = cell("mismatched-exim-verify")
        assert (result.outcome, stored(result)) == (Outcome.DEFERRED, [])
        assert "(certificate verification failed)" in result.sender_report
        assert cell("mismatched-exim-require-tls").outcome is Outcome.DELIVERED

    def test_gnutls_defaults_still_speak_tls10_even_when_verifying(
        self, cell: Callable[[str], CellResult]
    ) -> None:
        for sender in PROFILES:
            result = cell(f"tls10-{sender}")
            assert version(result) == "TLSv1.0", result.detail
            assert "X=TLS1.0:" in result.sender_report
        assert " CV=yes " in cell("tls10-exim-verify").sender_report  # verified, yet TLS 1.0
        # negative control, driven the same way: a TLS 1.2 priority refuses the TLS 1.0 receiver
        probe = cell(f"tls10-{PROBE}")
        assert (probe.sessions[0].handshake, probe.sessions[0].alert) == (
            "failed", "unsupported_protocol"
        )  # fmt: skip

    def test_opportunistic_tls_retries_in_clear_after_a_failed_handshake(
        self, cell: Callable[[str], CellResult]
    ) -> None:
        result = cell(f"tls10-{PROBE}")
        assert (result.outcome, result.tls) == (Outcome.DELIVERED, None)
        # tls_tempfail_tryclear (stock true): a new connection to the same host, in clear, on the
        # same delivery attempt: no deferral, no retry
        handshakes = [s.handshake for s in result.sessions]
        assert handshakes == ["failed", "none"], handshakes
        assert result.downgraded, result.detail
        assert "first attempt: => " in result.sender_report
        assert "retry" not in result.sender_report
        assert stored(result) == [result.message_id]
        control = cell(f"tls12-{PROBE}")
        assert version(control) == "TLSv1.2"
        assert not control.downgraded

    def test_exim_runs_with_five_capabilities_and_leaves_nothing(self, exim_run: EximRun) -> None:
        config = exim_run.host_config
        assert (config["CapDrop"], sorted(config["CapAdd"])) == (["ALL"], sorted(EXIM_CAPS))
        assert "no-new-privileges" in config["SecurityOpt"]
        assert exim_run.user == "0:0"  # Exim starts as root and drops to Debian-exim
        assert exim_run.leftovers == set()


DANE_SUBSET = ["dane-ee", "dane-mismatch", "dane-tlsa-servfail"]
DANE_PROFILES = ["exim-default", "exim-dane"]


@pytest.fixture(scope="module")
def dane_results(
    engine: Any, lab_pki: LabPki, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CellResult]:
    """Run exim-dane and exim-default against three DANE receivers (signed zone, resolver)."""
    root = tmp_path_factory.mktemp("exim-dane-scenarios")
    shutil.copytree(PROJECT / "scenarios" / "receivers", root / "receivers")
    (root / "senders").mkdir()
    for name in DANE_PROFILES:
        shutil.copy(PROJECT / "scenarios" / "senders" / f"{name}.yaml", root / "senders")
    suite = yaml.safe_load((PROJECT / "scenarios" / "suites" / "exim-dane.yaml").read_text())
    suite["receivers"] = DANE_SUBSET
    suite["cells"] = {r: suite["cells"][r] for r in DANE_SUBSET}
    (root / "suites").mkdir()
    (root / "suites" / "mini-dane.yaml").write_text(yaml.safe_dump(suite))
    loaded = load_suite(root / "suites" / "mini-dane.yaml")
    reports = tmp_path_factory.mktemp("exim-dane-reports")
    with open_run(loaded, DockerBackend(say=lambda _: None), lab_pki.root, reports) as run:
        return {f"{r}-{s}": run.run_cell(r, s) for r in DANE_SUBSET for s in DANE_PROFILES}


@pytest.mark.integration
class TestRealEximDane:
    """DANE through the lab's validating resolver, each cell against exim-default's."""

    def test_every_cell_matches_the_suite(self, dane_results: dict[str, CellResult]) -> None:
        failed = {k: (r.outcome.value, r.detail) for k, r in dane_results.items()
                  if r.verdict is not Verdict.PASS}  # fmt: skip
        assert failed == {}

    def test_a_matching_tlsa_record_authenticates_the_receiver(
        self, dane_results: dict[str, CellResult]
    ) -> None:
        good = dane_results["dane-ee-exim-dane"]
        assert version(good) == "TLSv1.3"
        assert " CV=dane " in good.sender_report
        # negative control, driven the same way: without DANE the same receiver is CV=no
        assert " CV=no " in dane_results["dane-ee-exim-default"].sender_report

    def test_a_mismatching_tlsa_record_defers_after_the_handshake(
        self, dane_results: dict[str, CellResult]
    ) -> None:
        result = dane_results["dane-mismatch-exim-dane"]
        assert (result.outcome, stored(result)) == (Outcome.DEFERRED, [])
        assert "DANE attempt failed" in result.sender_report
        assert "The certificate differs." in result.sender_report
        assert {s.ended_by for s in result.sessions} == {"closed-after-handshake"}
        lax = dane_results["dane-mismatch-exim-default"]
        assert version(lax) == "TLSv1.3"

    def test_a_failed_tlsa_lookup_defers_before_any_connection(
        self, dane_results: dict[str, CellResult]
    ) -> None:
        result = dane_results["dane-tlsa-servfail-exim-dane"]
        assert result.outcome is Outcome.DEFERRED
        assert "DANE error: tlsa lookup DEFER" in result.sender_report
        assert result.sessions == ()
        assert dane_results["dane-tlsa-servfail-exim-default"].outcome is Outcome.DELIVERED
