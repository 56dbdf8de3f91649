"""The postfix driver: log parsing, and a real Postfix in three profiles on Docker receivers."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from tools import missing

from harness.model import CellResult, Outcome, PostfixSenderProfile, PostfixTlsLevel, Verdict
from harness.run_start import open_run
from harness.scenarios import ScenarioError, load_sender, load_suite
from harness.senders import open_driver
from harness.senders.mta import ere
from harness.senders.postfix import (
    POSTFIX_CAPS,
    PostfixSender,
    attempt_notes,
    cell_log,
    delivery_tls,
    statuses,
    to_report,
)
from lab.backends import BackendError, RunningLab
from lab.backends.docker import RUN_LABEL, DockerBackend, docker_client
from lab.pki import LabPki

PROJECT = Path(__file__).resolve().parents[1]
SUBSET = ["tls12", "tls10", "no-starttls", "self-signed", "mismatched"]
PROFILES = ["postfix-may", "postfix-encrypt", "postfix-verify"]
# `may` with smtp_tls_protocols >=TLSv1.2: the one way to make an opportunistic handshake fail
PROBE = "postfix-may-tls12"
PROBE_CELLS = {"tls10": {"outcome": "delivered", "tls": "plaintext"},
               "tls12": {"outcome": "delivered", "tls": "TLSv1.2"}}  # fmt: skip
PROBE_UNRUN = {"no-starttls": {"outcome": "delivered", "tls": "plaintext"},
               "self-signed": {"outcome": "delivered", "tls": "TLSv1.3"},
               "mismatched": {"outcome": "delivered", "tls": "TLSv1.3"}}  # fmt: skip
CELL_SECONDS = 90.0  # a hang guard: cells take 2-10 s, more on a loaded runner

LOG = """\
Nov 28 21:50:32 pf postfix/cleanup[252]: 31F9B1EAA81: message-id=<a.b@sender.lab.test>
Nov 28 21:50:32 pf postfix/smtp[260]: Untrusted TLS connection established to mx.x.lab.test[10.0.0.9]:25: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)
Nov 28 21:50:32 pf postfix/smtp[261]: SSL_connect error to mx.tls10.lab.test[10.0.0.4]:25: lost connection
Nov 28 21:50:32 pf postfix/smtp[260]: 99999999999: to=<inbox@x.lab.test>, relay=mx.x.lab.test[10.0.0.9]:25, delay=0.05, delays=0.03/0/0.02/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)
Nov 28 21:50:32 pf postfix/smtp[261]: 31F9B1EAA81: to=<inbox@tls10.lab.test>, relay=mx.tls10.lab.test[10.0.0.4]:25, delay=0.05, delays=0.03/0/0.02/0, dsn=4.7.5, status=deferred (Cannot start TLS: handshake failure)
Nov 28 21:50:33 pf postfix/smtp[260]: SSL_connect error to mx.tls10.lab.test[10.0.0.4]:25: lost connection
Nov 28 21:50:33 pf postfix/smtp[260]: 31F9B1EAA81: Cannot start TLS: handshake failure
Nov 28 21:50:33 pf postfix/smtp[260]: 31F9B1EAA81: to=<inbox@tls10.lab.test>, relay=mx.tls10.lab.test[10.0.0.4]:25, delay=1.5, delays=1.4/0/0.02/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 535A0F3BAC1C)
"""  # noqa: E501


# --- log parsing (no Docker) ------------------------------------------------------------------


def test_statuses_follow_one_queue_id_and_notes_follow_its_process() -> None:
    lines = LOG.splitlines()
    found = statuses(lines, "31F9B1EAA81")
    assert [(s.status, s.process) for s in found] == [
        ("deferred", "smtp[261]"),
        ("sent", "smtp[260]"),
    ]
    assert found[0].reason == "Cannot start TLS: handshake failure"
    assert found[0].relay == "mx.tls10.lab.test[10.0.0.4]:25"
    # the second attempt's notes stop at smtp[260]'s previous delivery (another message's TLS)
    assert attempt_notes(lines, found[1]) == [
        "SSL_connect error to mx.tls10.lab.test[10.0.0.4]:25: lost connection",
        "31F9B1EAA81: Cannot start TLS: handshake failure",
    ]
    assert delivery_tls(lines, found[1]) is None  # the retry went out in plaintext
    other = statuses(lines, "99999999999")[0]
    assert delivery_tls(lines, other) == "TLSv1.3"
    # the kept log of one cell holds its own lines and none of the other message's
    kept = cell_log(lines, "31F9B1EAA81").splitlines()
    assert len(kept) == 6
    assert not any("99999999999" in line or "Untrusted" in line for line in kept)


def test_report_of_a_deferral_retried_into_plaintext() -> None:
    report = to_report(LOG, "31F9B1EAA81", 1.4, "", (("10.0.0.7", 4000),))
    assert report.action.value == "delivered"
    assert report.tls_version is None
    assert "first attempt: status=deferred (Cannot start TLS: handshake failure)" in report.reason
    assert "retry 1.4 s after queueing: status=sent" in report.reason
    assert report.attempts == (("10.0.0.7", 4000),)


def test_ere_quotes_every_special_character() -> None:
    assert ere("<a.b+c@x.test>") == r"<a\.b\+c@x\.test>"
    assert ere("(x)[y]{z}|^$*?\\") == r"\(x\)\[y\]\{z\}\|\^\$\*\?\\"


def test_postfix_profiles_load_and_protocol_lists_are_checked(tmp_path: Path) -> None:
    profile = load_sender(PROJECT / "scenarios" / "senders" / "postfix-verify.yaml")
    assert isinstance(profile, PostfixSenderProfile)
    assert (profile.security_level, profile.mandatory_protocols) == (
        PostfixTlsLevel.VERIFY, ">=TLSv1.2"
    )  # fmt: skip
    bad = tmp_path / "senders" / "postfix-bad.yaml"
    bad.parent.mkdir()
    bad.write_text("driver: postfix\nsecurity_level: may\nprotocols: '>=TLSv1.2\\nrelayhost = x'\n")
    with pytest.raises(ScenarioError) as excinfo:
        load_sender(bad)
    assert excinfo.value.field == "protocols"


def test_the_postfix_driver_needs_the_docker_backend(lab_pki: LabPki, tmp_path: Path) -> None:
    profile = load_sender(PROJECT / "scenarios" / "senders" / "postfix-may.yaml")
    local = RunningLab("local", {}, lab_pki, tmp_path)
    with pytest.raises(BackendError, match="needs the docker backend"):
        open_driver(profile, local, tmp_path)


# --- a real Postfix on the Docker backend -------------------------------------------------------


def lab_containers(client: Any) -> set[str]:
    """Return the names of every lab-labelled container on the engine."""
    return {c.name for c in client.containers.list(all=True, filters={"label": RUN_LABEL})}


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest) -> Any:
    """Return a docker client; without an engine skip every Docker test in one summary line."""
    try:
        return docker_client()
    except BackendError as error:
        # `node`: one summary line for all the module's tests
        missing("no Docker engine answers", error.hint, docker=True, node=request.node)


@dataclasses.dataclass(frozen=True)
class PostfixRun:
    """What one run of the Postfix cells left: results, leftovers, a Postfix container's setup."""

    results: dict[str, CellResult]
    leftovers: set[str]
    host_config: dict[str, Any]
    user: str


@pytest.fixture(scope="module")
def postfix_run(
    engine: Any, lab_pki: LabPki, tmp_path_factory: pytest.TempPathFactory
) -> PostfixRun:
    """Run the three profiles (and the `may` probe) against a subset of receivers, once."""
    root = tmp_path_factory.mktemp("postfix-scenarios")
    shutil.copytree(PROJECT / "scenarios" / "receivers", root / "receivers")
    (root / "senders").mkdir()
    for name in PROFILES:
        shutil.copy(PROJECT / "scenarios" / "senders" / f"{name}.yaml", root / "senders")
    probe = {"driver": "postfix", "security_level": "may", "protocols": ">=TLSv1.2"}
    (root / "senders" / f"{PROBE}.yaml").write_text(yaml.safe_dump(probe))
    suite = yaml.safe_load((PROJECT / "scenarios" / "suites" / "postfix.yaml").read_text())
    suite["receivers"], suite["senders"] = SUBSET, [*PROFILES, PROBE]
    probe_cells = {**PROBE_CELLS, **PROBE_UNRUN}
    suite["cells"] = {r: {**suite["cells"][r], PROBE: probe_cells[r]} for r in SUBSET}
    (root / "suites").mkdir()
    (root / "suites" / "mini.yaml").write_text(yaml.safe_dump(suite))
    loaded = load_suite(root / "suites" / "mini.yaml")
    cells = [(r, s) for r in SUBSET for s in PROFILES] + [(r, PROBE) for r in PROBE_CELLS]
    reports = tmp_path_factory.mktemp("postfix-reports")
    with open_run(loaded, DockerBackend(say=lambda _: None), lab_pki.root, reports) as run:
        results = {f"{r}-{s}": run.run_cell(r, s) for r, s in cells}
        driver = run.drivers[PROFILES[0]]
        assert isinstance(driver, PostfixSender)
        prefix = driver.host.name.removesuffix(f"postfix-{PROFILES[0]}")  # tlslab-<run>-
        assert len({n for n in lab_containers(engine) if n.startswith(prefix)}) > len(SUBSET)
        attrs = engine.containers.get(driver.host.name).attrs
    left = {n for n in lab_containers(engine) if n.startswith(prefix)}
    return PostfixRun(results, left, attrs["HostConfig"], attrs["Config"]["User"])


@pytest.fixture
def cell(postfix_run: PostfixRun) -> Callable[[str], CellResult]:
    """Return a function that looks up one cell's result by id."""
    return postfix_run.results.__getitem__


def version(result: CellResult) -> str | None:
    """Return the TLS version a cell's message arrived over, or None (plaintext or nothing)."""
    return result.tls.version.value if result.tls else None


def stored(result: CellResult) -> list[str]:
    """Return the message ids the receiver stored during this cell's sessions."""
    return [m for s in result.sessions for m in s.message_ids if m]


@pytest.mark.integration
class TestRealPostfix:
    """Outcomes, evidence and negative controls, each driven the same way through the runner."""

    def test_every_cell_matches_the_suite_and_is_bounded(self, postfix_run: PostfixRun) -> None:
        results = postfix_run.results
        failed = {k: (r.outcome.value, r.detail) for k, r in results.items()
                  if r.verdict is not Verdict.PASS}  # fmt: skip
        assert failed == {}
        assert max(r.seconds for r in results.values()) < CELL_SECONDS

    def test_may_sends_plaintext_when_no_starttls_is_offered(
        self, cell: Callable[[str], CellResult]
    ) -> None:
        result = cell("no-starttls-postfix-may")
        assert (result.outcome, result.tls) == (Outcome.DELIVERED, None)
        assert result.received is not None
        assert " with ESMTP id " in result.received
        assert "using TLS" not in result.received
        assert "postfix-postfix-may.sender.lab.test" in result.received
        # negative control, driven the same way: encrypt keeps it queued, even after the retry
        refused = cell("no-starttls-postfix-encrypt")
        assert (refused.outcome, refused.received, stored(refused)) == (Outcome.DEFERRED, None, [])
        assert "TLS is required, but was not offered" in refused.sender_report
        assert "still in the deferred queue" in refused.sender_report
        assert len(refused.sessions) >= 2  # the first attempt and the forced retry
        assert not any(s.starttls for s in refused.sessions)

    def test_verify_defers_a_self_signed_receiver_and_stores_nothing(
        self, cell: Callable[[str], CellResult]
    ) -> None:
        result = cell("self-signed-postfix-verify")
        assert (result.outcome, result.received, stored(result)) == (Outcome.DEFERRED, None, [])
        assert "Server certificate not verified" in result.sender_report
        assert "self-signed certificate" in result.sender_report
        # Postfix finishes the handshake, then leaves: the receiver sees no TLS alert
        assert result.sessions
        assert all(s.handshake == "ok" for s in result.sessions)
        assert all(s.alert is None for s in result.sessions)
        # negative controls: verify delivers to a valid receiver; may delivers to this one
        good = cell("tls12-postfix-verify")
        assert good.outcome is Outcome.DELIVERED
        assert version(good) in ("TLSv1.2", "TLSv1.3")
        assert "Verified TLS connection established" in good.sender_report
        lax = cell("self-signed-postfix-may")
        assert version(lax) == "TLSv1.3"
        assert "Untrusted TLS connection established" in lax.sender_report

    def test_verify_checks_the_mx_host_name(self, cell: Callable[[str], CellResult]) -> None:
        result = cell("mismatched-postfix-verify")
        assert (result.outcome, stored(result)) == (Outcome.DEFERRED, [])
        assert "hostname mismatch" in result.sender_report
        assert cell("mismatched-postfix-encrypt").outcome is Outcome.DELIVERED

    def test_stock_protocols_still_speak_tls10_and_verify_refuses_it(
        self, cell: Callable[[str], CellResult]
    ) -> None:
        for sender in ("postfix-may", "postfix-encrypt"):
            result = cell(f"tls10-{sender}")
            assert version(result) == "TLSv1.0", result.detail
        refused = cell("tls10-postfix-verify")
        assert (refused.outcome, stored(refused)) == (Outcome.DEFERRED, [])
        assert len(refused.sessions) >= 2, refused.sessions  # the first attempt and the retry
        assert all(s.starttls and s.handshake == "failed" for s in refused.sessions)
        # Postfix's own reason, and the receiver's: no protocol version in common
        assert "Cannot start TLS: handshake failure" in refused.sender_report
        assert "still in the deferred queue" in refused.sender_report
        assert {s.alert for s in refused.sessions} == {"unsupported_protocol"}

    def test_may_falls_back_to_plaintext_only_after_a_failed_handshake(
        self, cell: Callable[[str], CellResult]
    ) -> None:
        result = cell(f"tls10-{PROBE}")
        assert (result.outcome, result.tls) == (Outcome.DELIVERED, None)
        report = result.sender_report
        assert "Cannot start TLS: handshake failure" in report
        handshakes = [s.handshake for s in result.sessions]
        assert handshakes[-1] == "none", handshakes
        # Postfix's rule (smtp_proto.c): `may` reconnects in plaintext on the same attempt only
        # when the message waited minimal_backoff_time (whole seconds of the queue clock) between
        # arrival and delivery; otherwise it defers and the plaintext goes out on the retry
        if "Postfix first attempt: status=deferred" in report:
            assert "(Cannot start TLS: handshake failure)" in report.split("retry", 1)[0]
            assert "status=sent" in report.split("retry", 1)[1]
            assert handshakes.count("failed") >= 2, handshakes
        else:
            assert "Postfix first attempt: status=sent" in report, report
            assert "retry" not in report, report
            assert handshakes == ["failed", "none"], handshakes
        assert stored(result) == [result.message_id]
        control = cell(f"tls12-{PROBE}")
        assert version(control) == "TLSv1.2"

    def test_postfix_runs_with_four_capabilities_and_leaves_nothing(
        self, postfix_run: PostfixRun
    ) -> None:
        config = postfix_run.host_config
        assert (config["CapDrop"], sorted(config["CapAdd"])) == (["ALL"], sorted(POSTFIX_CAPS))
        assert "no-new-privileges" in config["SecurityOpt"]
        assert postfix_run.user == "0:0"  # Postfix's master starts as root and drops to postfix
        assert postfix_run.leftovers == set()
