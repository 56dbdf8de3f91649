"""The scoreboard's plan, cells, column scores, files and diff (no lab started here)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import assert_usage_error, tlslab

from harness.model import CellExpectation, CellResult, Outcome, TlsFacts, Verdict
from harness.report_model import ReceiverInfo, Risk, SessionSummary
from harness.scenario_files import ScenarioError
from harness.scenarios import DEFAULT_ROOT, load_receiver
from harness.scoreboard.build import broken_by_the_proxy
from harness.scoreboard.diff import diff_boards, version_changes
from harness.scoreboard.files import (
    SCHEMA_PATH,
    board_schema,
    is_board,
    load_board,
    write_board,
)
from harness.scoreboard.model import (
    BoardCell,
    BoardReceiver,
    BoardSender,
    Family,
    Scoreboard,
    SoftwareVersion,
)
from harness.scoreboard.page import render_page
from harness.scoreboard.plan import OBSERVE_ONLY, Stated, build_plan, family_of
from harness.scoreboard.score import board_cell, column_score
from lab.proxy_record import ProxyRecord
from lab.spec import CertState, ProxyVector, TlsVersion

TLS13 = TlsFacts(version=TlsVersion.TLS13, cipher="TLS_AES_256_GCM_SHA384", bits=256)


@pytest.fixture
def scenarios(tmp_path: Path) -> Path:
    """Return a copy of the project's scenarios folder to add files to."""
    root = tmp_path / "scenarios"
    shutil.copytree(DEFAULT_ROOT, root)
    return root


def test_every_receiver_state_and_every_real_sender_and_policy_model_is_on_the_board() -> None:
    plan = build_plan(DEFAULT_ROOT)
    rows = {r.id for r in plan.receivers}
    assert rows == {p.stem for p in (DEFAULT_ROOT / "receivers").glob("*.yaml")}
    drivers = {s.id: s.driver for s in plan.senders}
    assert set(drivers.values()) <= {"postfix", "exim", "reference", "rfc"}
    assert {"postfix-may", "postfix-encrypt", "postfix-verify", "ses-default"} <= set(drivers)
    assert "relay-lab" not in drivers
    assert "ses-live-default" not in drivers
    groups = [s.software for s in plan.senders]
    assert groups == sorted(groups, key=groups.index), "a software group is split"
    families = [r.family for r in plan.receivers]
    assert families == sorted(families, key=list(Family).index), "families are out of order"
    assert [s.id for s in plan.senders][:3] == ["postfix-may", "postfix-encrypt", "postfix-verify"]


def test_families_come_from_the_receivers_facts_and_id_prefixes() -> None:
    def family(name: str) -> Family:
        return family_of(load_receiver(DEFAULT_ROOT / "receivers" / f"{name}.yaml"))

    assert family("tls10") is Family.TLS_VERSION
    assert family("no-starttls") is Family.TLS_VERSION
    assert family("expired") is Family.CERTIFICATE
    assert family("wildcard") is Family.CERTIFICATE
    assert family("no-pfs") is Family.CIPHER
    assert family("strip-starttls") is Family.DOWNGRADE
    assert family("greylist") is Family.MX_RETRY
    assert family("mx-fallback") is Family.MX_RETRY
    spec = load_receiver(DEFAULT_ROOT / "receivers" / "tls13.yaml")
    assert family_of(spec.model_copy(update={"id": "dane-valid"})) is Family.DANE
    assert family_of(spec.model_copy(update={"id": "sts-enforce"})) is Family.MTA_STS
    assert family_of(spec.model_copy(update={"certificate": CertState.EXPIRED})) is (
        Family.CERTIFICATE
    )


def test_a_new_receiver_and_sender_join_and_unstated_pairs_are_observed_only(
    scenarios: Path,
) -> None:
    (scenarios / "receivers" / "dane-probe.yaml").write_text("description: a DANE probe\n")
    (scenarios / "senders" / "postfix-new.yaml").write_text(
        "driver: postfix\nsecurity_level: encrypt\n"
    )
    plan = build_plan(scenarios)
    assert plan.receivers[-1].id == "dane-probe"
    assert plan.receivers[-1].family is Family.DANE
    assert "postfix-new" in [s.id for s in plan.senders if s.software == "Postfix"]
    assert plan.loaded.expectation("tls13", "postfix-new") is OBSERVE_ONLY
    assert plan.loaded.expectation("dane-probe", "postfix-may") is OBSERVE_ONLY
    stated = plan.loaded.stated[("tls13", "postfix-may")]  # negative control: stated stays
    assert stated.suite == "postfix"
    assert stated.expectation.outcome == Outcome.DELIVERED


def test_suites_that_disagree_leave_the_pair_observed_only(scenarios: Path) -> None:
    (scenarios / "suites" / "zz-other.yaml").write_text(
        "receivers: [tls13]\nsenders: [postfix-may]\n"
        "cells: {tls13: {postfix-may: {outcome: deferred}}}\n"
    )
    plan = build_plan(scenarios)
    assert ("tls13", "postfix-may") not in plan.loaded.stated
    assert "postfix and zz-other" in plan.disputed[("tls13", "postfix-may")]
    assert ("tls12", "postfix-may") in plan.loaded.stated  # the suites agree there


def test_selection_flags_and_their_errors() -> None:
    plan = build_plan(DEFAULT_ROOT, "tls13,expired", "postfix-may", None)
    assert plan.cells == [("tls13", "postfix-may"), ("expired", "postfix-may")]
    only = build_plan(DEFAULT_ROOT, None, "paubox", "downgrade")
    assert {r.family for r in only.receivers} == {Family.DOWNGRADE}
    with pytest.raises(ScenarioError, match="'nope' is not on the scoreboard"):
        build_plan(DEFAULT_ROOT, "nope")
    with pytest.raises(ScenarioError, match="'relay-lab' is not on the scoreboard"):
        build_plan(DEFAULT_ROOT, None, "relay-lab")
    with pytest.raises(ScenarioError, match="unknown family 'colour'"):
        build_plan(DEFAULT_ROOT, None, None, "colour")


def test_cli_rejects_an_unknown_receiver_with_one_line() -> None:
    ran = tlslab("scoreboard", "--receivers", "tls13,bogus-state", "--backend", "docker")
    assert_usage_error(ran, "--receivers", "bogus-state")


def test_cli_refuses_real_senders_off_docker_before_starting_anything() -> None:
    ran = tlslab("scoreboard", "--backend", "local", "--senders", "postfix-may,paubox")
    assert_usage_error(ran, "postfix-may", "--backend docker")
    assert "Scoreboard:" not in ran.out


def info(receiver: str, starttls: bool = True, cert: CertState = CertState.VALID) -> ReceiverInfo:
    return ReceiverInfo(
        id=receiver, certificate=cert, tls_min=TlsVersion.TLS12, tls_max=TlsVersion.TLS13,
        starttls=starttls,
    )  # fmt: skip


def result(receiver: str, outcome: Outcome, **extra: object) -> CellResult:
    return CellResult.model_validate(
        {
            "receiver": receiver,
            "sender": "s",
            "outcome": outcome,
            "expected": outcome,
            "verdict": Verdict.PASS,
            "detail": "d",
            **extra,
        }
    )


def test_a_cell_keeps_the_judgement_only_when_a_suite_states_one() -> None:
    observed = board_cell(result("tls13", Outcome.DELIVERED, tls=TLS13), None, info("tls13"), None)
    assert observed.verdict is None
    assert observed.expected is None
    assert observed.note == ""
    assert observed.risk is Risk.VERIFIED
    stated = Stated(CellExpectation(outcome=Outcome.DELIVERED, tls="TLSv1.3", note="n"), "suite")
    judged = board_cell(result("tls13", Outcome.DELIVERED, tls=TLS13), stated, info("tls13"), None)
    assert judged.verdict is Verdict.PASS
    assert judged.expected == "delivered TLSv1.3"
    assert judged.expected_from == "suite"
    assert judged.note == "n"


def row(receiver: str, unsafe: str | None) -> BoardReceiver:
    return BoardReceiver(id=receiver, family=Family.TLS_VERSION, unsafe=unsafe, info=info(receiver))


def bcell(
    receiver: str, outcome: Outcome, *, downgraded: bool = False, sender: str = "s"
) -> BoardCell:
    return BoardCell(
        receiver=receiver, sender=sender, outcome=outcome, risk=Risk.NOT_DELIVERED,
        downgraded=downgraded, expected=None, expected_from=None, verdict=None,
    )  # fmt: skip


ROWS = [row("a", "bad"), row("b", "bad"), row("c", "bad"), row("ok", None)]


def test_score_counts_unsafe_deliveries_and_says_never_plaintext() -> None:
    cells = [bcell("a", Outcome.DELIVERED), bcell("b", Outcome.DEFERRED),
             bcell("c", Outcome.REFUSED), bcell("ok", Outcome.DELIVERED)]  # fmt: skip
    assert column_score("s", cells, ROWS) == (
        "delivered to 1 of 3 unsafe receivers; never plaintext after a failed handshake"
    )


def test_score_names_downgrades_missed_safe_receivers_and_lab_errors() -> None:
    cells = [bcell("a", Outcome.DELIVERED, downgraded=True), bcell("b", Outcome.ERROR),
             bcell("c", Outcome.DELIVERED), bcell("ok", Outcome.DEFERRED),
             bcell("a", Outcome.DELIVERED, sender="other")]  # fmt: skip
    assert column_score("s", cells, ROWS) == (
        "delivered to 2 of 2 unsafe receivers; plaintext after a failed handshake at 1 receiver "
        "(a); did not deliver to 1 of 1 safe (ok); 1 lab error, not counted against the sender"
    )


def test_a_refused_dane_receiver_is_not_a_missed_safe_one() -> None:
    dane = BoardReceiver(id="dane-mismatch", family=Family.DANE, unsafe=None, info=info("d"))
    cells = [bcell("dane-mismatch", Outcome.DEFERRED), bcell("ok", Outcome.DEFERRED)]
    assert column_score("s", cells, [*ROWS, dane]).endswith("did not deliver to 1 of 1 safe (ok)")


def test_score_without_unsafe_receivers() -> None:
    assert column_score("s", [bcell("ok", Outcome.DELIVERED)], ROWS).startswith(
        "no unsafe receiver observed; never plaintext"
    )


def board(*cells: BoardCell, version: str = "3.7.11") -> Scoreboard:
    return Scoreboard(
        run_id="r", backend="docker", started="t0", finished="t1", complete=True,
        receivers=tuple(ROWS), senders=(BoardSender(id="s", driver="postfix", software="Postfix"),),
        cells=cells,
        versions=(SoftwareVersion(software="Postfix", version=version, sender="s", command="c"),),
    )  # fmt: skip


def test_the_committed_schema_is_current() -> None:
    assert json.loads(SCHEMA_PATH.read_text()) == board_schema(), (
        "harness/scoreboard/scoreboard.schema.json is stale; regenerate it with `python -c "
        "'from harness.scoreboard.files import write_schema; write_schema()'`"
    )


def test_written_board_reads_back_and_diffs(tmp_path: Path) -> None:
    old = board(bcell("a", Outcome.DEFERRED), bcell("b", Outcome.DEFERRED))
    new = board(
        bcell("a", Outcome.DELIVERED).model_copy(update={"risk": Risk.UNVERIFIED}),
        bcell("c", Outcome.DEFERRED),
        version="3.8.6",
    )
    write_board(old, tmp_path / "old")
    write_board(new, tmp_path / "new")
    assert load_board(tmp_path / "old") == old
    assert is_board(tmp_path / "old" / "scoreboard.json")
    changes = {c.id: [f.kind for f in c.facts] for c in diff_boards(old, new)}
    assert changes == {"a-s": ["outcome", "risk"], "c-s": ["added"], "b-s": ["removed"]}
    assert diff_boards(old, old) == []  # negative control
    assert version_changes(old, new) == ["Postfix 3.7.11 -> 3.8.6"]
    same = tlslab("diff", tmp_path / "old", tmp_path / "old" / "scoreboard.json")
    assert same.status == 0, same.err
    assert "no cell changed (2 cells compared)" in same.out
    moved = tlslab("diff", tmp_path / "old", tmp_path / "new")
    assert moved.status == 1, moved.err
    assert "version: Postfix 3.7.11 -> 3.8.6" in moved.out
    assert "3 of 3 cells changed" in moved.out
    assert "outcome deferred -> delivered" in moved.out
    as_json = json.loads(tlslab("diff", "--json", tmp_path / "old", tmp_path / "new").out)
    assert as_json["changed"] == 3
    assert as_json["versions"] == ["Postfix 3.7.11 -> 3.8.6"]


def test_diff_of_a_scoreboard_and_a_broken_file_is_a_usage_error(tmp_path: Path) -> None:
    write_board(board(bcell("a", Outcome.DEFERRED)), tmp_path / "old")
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "sender-tls-lab/results/v1", "suite": 1}')
    assert_usage_error(tlslab("diff", tmp_path / "old", broken), "broken.json", "schema")


def test_the_page_escapes_what_it_shows() -> None:
    hostile = bcell("a", Outcome.DELIVERED).model_copy(
        update={"detail": "<script>alert(1)</script>", "received": "from <b>x</b>"}
    )
    page = render_page(board(hostile))
    assert "<script>alert" not in page
    assert "&lt;script&gt;" in page
    assert 'data-verdict="observed-only"' in page
    assert "observed only" in page


def proxy_line(port: int, ended_by: str, plaintext: bool, started: float) -> str:
    record = ProxyRecord(
        receiver="starttls-broken", vector=ProxyVector.STARTTLS_BROKEN, peer_ip="172.19.0.9",
        peer_port=40000 + port, upstream_ip="127.0.0.1", upstream_port=port, started=started,
        ended=started + 0.1, ended_by=ended_by, data_in_plaintext=plaintext,
    )  # fmt: skip
    return record.model_dump_json() + "\n"


def session(port: int) -> SessionSummary:
    return SessionSummary(peer=f"127.0.0.1:{port}", starttls=False, handshake="none")


def test_plaintext_after_a_handshake_the_proxy_broke_is_a_downgrade(tmp_path: Path) -> None:
    folder = tmp_path / "evidence" / "starttls-broken"
    folder.mkdir(parents=True)
    (folder / "proxy.jsonl").write_text(
        proxy_line(1, "garbage-sent", False, 1.0) + proxy_line(2, "quit", True, 2.0)
        + proxy_line(3, "garbage-sent", False, 3.0)  # another cell's connection
    )  # fmt: skip
    both = result("starttls-broken", Outcome.DELIVERED, sessions=(session(1), session(2)))
    assert broken_by_the_proxy(tmp_path, both)
    plain_only = result("starttls-broken", Outcome.DELIVERED, sessions=(session(2),))
    assert not broken_by_the_proxy(tmp_path, plain_only)  # negative control: no broken handshake
    over_tls = result("starttls-broken", Outcome.DELIVERED, tls=TLS13, sessions=(session(1),))
    assert not broken_by_the_proxy(tmp_path, over_tls)
