"""Tests of the run reports: results.json, summary.md, report.html, tlsrpt.json, latest."""

from __future__ import annotations

import html
import json
import os
import re
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from harness.html_report import CSS
from harness.labels import RISK_SCALE, risk_of
from harness.model import (
    CellResult,
    Outcome,
    ReceiverInfo,
    Risk,
    RunReport,
    SenderInfo,
    SessionSummary,
    TlsFacts,
)
from harness.model import Verdict as V
from harness.report import (
    SCHEMA_ID,
    SCHEMA_PATH,
    ReportError,
    load_results,
    render_all,
    results_schema,
    write_report,
)
from harness.report_view import assess
from lab.spec import CertState, TlsVersion

D, R, F, E = Outcome.DELIVERED, Outcome.REFUSED, Outcome.FALLBACK, Outcome.ERROR
EVIL = "from evil (<script>alert('x')</script>) by mx.tls10.lab.test with ESMTPS"
TLS13 = TlsFacts(version=TlsVersion.TLS13, cipher="TLS_AES_256_GCM_SHA384", bits=256)
TLS10 = TlsFacts(version=TlsVersion.TLS10, cipher="ECDHE-RSA-AES256-SHA")
TLS12 = TlsFacts(version=TlsVersion.TLS12, cipher="ECDHE-RSA-AES128-GCM-SHA256")
SENDERS = (
    SenderInfo(
        id="ses-default",
        driver="reference",
        description="opportunistic TLS",
        models="Amazon SES (default, TlsPolicy OPTIONAL)",
    ),
    SenderInfo(
        id="ses-require-tls",
        driver="reference",
        description="TLS required, no verification",
        models="Amazon SES (Require TLS)",
    ),
)


def info(
    receiver: str,
    certificate: CertState = CertState.VALID,
    low: TlsVersion = TlsVersion.TLS12,
    high: TlsVersion = TlsVersion.TLS13,
    starttls: bool = True,
) -> ReceiverInfo:
    return ReceiverInfo(
        id=receiver,
        description=f"the {receiver} receiver",
        certificate=certificate,
        tls_min=low,
        tls_max=high,
        starttls=starttls,
    )


RECEIVER_INFO = (
    info("tls13", low=TlsVersion.TLS13),
    info("tls10", low=TlsVersion.TLS10, high=TlsVersion.TLS10),
    info("no-starttls", starttls=False),
    info("self-signed", CertState.SELF_SIGNED),
)


def session(peer: str = "127.0.0.1:40001", alert: str | None = None) -> SessionSummary:
    return SessionSummary(peer=peer, starttls=True, handshake="ok", version="TLSv1.2", alert=alert)


def cell(
    receiver: str,
    sender: str,
    outcome: Outcome,
    expected: Outcome,
    verdict: V,
    tls: TlsFacts | None = None,
    **extra: Any,
) -> CellResult:
    received = f"from a by mx.{receiver}.lab.test with ESMTP" if outcome is D else None
    extra.setdefault("received", received)
    extra.setdefault("detail", f"{receiver} x {sender}")
    return CellResult(
        receiver=receiver,
        sender=sender,
        outcome=outcome,
        expected=expected,
        verdict=verdict,
        tls=tls,
        **extra,
    )


def make_report(run_id: str = "20250101T000000Z", *, study: bool = True) -> RunReport:
    results = (
        cell("tls13", "ses-default", D, D, V.PASS, TLS13, study=study, sessions=(session(),)),
        cell("tls13", "ses-require-tls", D, D, V.PASS, TLS13, study=study),
        cell("tls10", "ses-default", D, D, V.PASS, TLS10, study=study, received=EVIL),
        cell("tls10", "ses-require-tls", D, D, V.PASS, TLS10, study=study),
        cell("no-starttls", "ses-default", D, D, V.PASS, expected_tls="plaintext", study=study),
        cell("no-starttls", "ses-require-tls", D, R, V.FAIL, study=study),
        cell(
            "self-signed",
            "ses-default",
            R,
            D,
            V.FAIL,
            sessions=(session("[2001:db8::1]:25", "unknown_ca"), session("10.0.0.9:2525")),
        ),
        cell("self-signed", "ses-require-tls", E, D, V.ERROR, detail="receiver did not start"),
    )
    return RunReport(
        suite="ses-2025",
        title="SES vs weak receivers",
        backend="local",
        run_id=run_id,
        started="2025-01-01T00:00:00+00:00",
        finished="2025-01-01T00:01:30+00:00",
        receivers=("tls13", "tls10", "no-starttls", "self-signed"),
        senders=SENDERS,
        receiver_info=RECEIVER_INFO,
        results=results,
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_report(make_report(), tmp_path / "reports")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


# results.json ---------------------------------------------------------------------------------


def test_write_report_creates_the_four_files_and_one_tlsrpt_file_per_sender(run_dir: Path) -> None:
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["report.html", "results.json", "summary.md", "tlsrpt", "tlsrpt.json"]
    tlsrpt = sorted(p.name for p in (run_dir / "tlsrpt").iterdir())
    assert tlsrpt == ["ses-default.json", "ses-require-tls.json"]
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".")], "temp files left"


def test_results_json_follows_contract_2(run_dir: Path) -> None:
    data = read_json(run_dir / "results.json")
    assert data["schema"] == SCHEMA_ID
    assert isinstance(data["suite"], str)
    assert isinstance(data["backend"], str)
    datetime.fromisoformat(data["started"])
    assert isinstance(data["results"], list)
    assert len(data["results"]) == 8
    for row in data["results"]:
        assert {"receiver", "sender", "outcome", "expected", "verdict", "tls", "received"} <= set(
            row
        )
        assert all(isinstance(row[k], str) for k in ("receiver", "sender", "detail"))
        assert row["outcome"] in {o.value for o in Outcome}
        assert row["expected"] in {o.value for o in Outcome}
        assert row["verdict"] in {"pass", "fail", "error"}
        assert row["received"] is None or isinstance(row["received"], str)
        if row["tls"] is not None:
            assert row["tls"]["version"] in {"TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
            assert isinstance(row["tls"]["cipher"], str)
    by_id = {f"{r['receiver']}-{r['sender']}": r for r in data["results"]}
    assert by_id["tls13-ses-default"]["tls"]["version"] == "TLSv1.3"
    assert by_id["no-starttls-ses-default"]["tls"] is None, "plaintext delivery has tls null"
    assert by_id["self-signed-ses-default"]["tls"] is None, "non-delivery has tls null"
    assert by_id["self-signed-ses-default"]["received"] is None
    assert by_id["tls10-ses-default"]["received"] == EVIL, "received is stored exactly"


def test_results_json_has_every_key_the_committed_schema_requires(run_dir: Path) -> None:
    schema = read_json(SCHEMA_PATH)
    assert schema == results_schema(), (
        "harness/results.schema.json is stale; regenerate it with "
        "`python -c 'from harness.report import write_schema; write_schema()'`"
    )
    assert {"suite", "backend", "started", "results"} <= set(schema["required"])
    contract = {"receiver", "sender", "outcome", "expected", "verdict", "tls", "received", "detail"}
    assert contract <= set(schema["$defs"]["CellResult"]["required"])
    assert {"note", "risk"} <= set(schema["$defs"]["CellResult"]["required"])
    assert "receiver_info" in schema["required"]
    facts = {"id", "description", "certificate", "tls_min", "tls_max", "starttls", "policy"}
    assert facts <= set(schema["$defs"]["ReceiverInfo"]["required"])
    data = read_json(run_dir / "results.json")
    assert set(schema["required"]) <= set(data)
    for row in data["results"]:
        assert set(schema["$defs"]["CellResult"]["required"]) <= set(row)


# latest ---------------------------------------------------------------------------------------


def test_latest_is_a_relative_symlink_to_the_newest_run(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    first = write_report(make_report("run-1"), reports)
    second = write_report(make_report("run-2"), reports)
    latest = reports / "latest"
    assert latest.is_symlink()
    assert os.readlink(latest) == "run-2"
    assert latest.resolve() == second.resolve()
    assert first.is_dir(), "older runs are kept"
    assert sorted(p.name for p in reports.iterdir()) == ["latest", "run-1", "run-2"]


def test_latest_that_is_a_real_folder_is_reported(tmp_path: Path) -> None:
    (tmp_path / "latest" / "x").mkdir(parents=True)
    with pytest.raises(ReportError) as info:
        write_report(make_report("run-1"), tmp_path)
    assert info.value.field == "latest"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("run_id", ["../escape", "latest", "a/b", ".."])
def test_run_id_that_is_not_a_folder_name_is_rejected(tmp_path: Path, run_id: str) -> None:
    with pytest.raises(ReportError) as info:
        write_report(make_report(run_id), tmp_path)
    assert info.value.field == "run_id"


# summary.md -----------------------------------------------------------------------------------


def test_summary_has_a_matrix_row_per_receiver(run_dir: Path) -> None:
    text = (run_dir / "summary.md").read_text(encoding="utf-8")
    assert "ses-2025" in text
    assert "local" in text
    assert "20250101T000000Z" in text
    assert "| receiver \\ sender | `ses-default` | `ses-require-tls` |" in text
    ok, tls13 = "✅ as expected (expected delivered)", "🟩 TLSv1.3 to an authenticated receiver"
    legacy = "🟨 legacy TLSv1.0, retired in 2021 (RFC 8996)"
    rows = {
        "tls13": f"| `tls13` | {tls13} · {ok} ★ | {tls13} · {ok} ★ |",
        "tls10": f"| `tls10` | {legacy} · {ok} ★ | {legacy} · {ok} ★ |",
        "no-starttls": (
            "| `no-starttls` | 🟥 plaintext: the receiver offers no TLS · ✅ as expected "
            "(expected delivered plaintext) ★ | 🟥 plaintext: the receiver offers no TLS · "
            "❌ differs from expectation (expected refused) ★ |"
        ),
        "self-signed": (
            "| `self-signed` | 🟦 not delivered (refused) · ❌ differs from expectation "
            "(expected delivered) | ⬛ lab error · ⚠️ not judged (lab error) (expected delivered) |"
        ),
    }
    lines = text.splitlines()
    for receiver, row in rows.items():
        assert row in lines, f"row of {receiver} missing or wrong"
    assert "Study cells reproduced: 5/6" in lines
    assert "Totals: 5 as expected, 2 differ, 1 lab error (8 cells)." in lines


def test_summary_notes_policy_models_and_lists_evidence(run_dir: Path) -> None:
    text = (run_dir / "summary.md").read_text(encoding="utf-8")
    assert "policy models of the named services" in text
    assert "not the services themselves" in text
    assert "Amazon SES (default, TlsPolicy OPTIONAL)" in text
    assert "### `tls10-ses-default` 🟨 legacy TLS 1.0/1.1 · ✅" in text
    assert f"```text\nReceived: {EVIL}\n```" in text, "the header with its field name, as stored"
    assert "no message arrived" in text
    assert "receiver did not start" in text
    assert "alert unknown_ca" in text


def test_summary_lists_receivers_with_facts_and_one_sentence_per_row_and_column(
    run_dir: Path,
) -> None:
    text = (run_dir / "summary.md").read_text(encoding="utf-8")
    assert "## Receivers" in text
    assert "- `tls10` (STARTTLS, TLSv1.0 only, certificate valid): the tls10 receiver" in text
    assert (
        "  tls10 is unsafe (offers at most TLSv1.0): 2 of 2 senders delivered "
        "(legacy TLS 1.0/1.1: 2)."
    ) in text
    assert "  tls13 is safe: 2 of 2 senders delivered" in text
    assert (
        "  ses-require-tls delivered to 2 of 3 unsafe receivers (TLS ≥ 1.2, authenticated "
        "receiver: 1, legacy TLS 1.0/1.1: 1, plaintext: 1, lab error: 1)."
    ) in text


def test_summary_says_sender_report_only_when_the_detail_does_not(tmp_path: Path) -> None:
    report = make_report()
    same = report.results[0].model_copy(
        update={"sender_report": "refused: 550 no", "detail": "550 no"}
    )
    other = report.results[1].model_copy(
        update={"sender_report": "delivered: 250 ok", "detail": "arrived over TLS"}
    )
    report = report.model_copy(update={"results": (same, other, *report.results[2:])})
    text = (write_report(report, tmp_path) / "summary.md").read_text(encoding="utf-8")
    assert "Sender report: refused: 550 no" not in text, "duplicates the detail"
    assert "Sender report: delivered: 250 ok" in text


def test_summary_without_study_cells_has_no_study_line(tmp_path: Path) -> None:
    run = write_report(make_report(study=False), tmp_path)
    text = (run / "summary.md").read_text(encoding="utf-8")
    assert "Study cells reproduced" not in text
    assert "Totals: 5 as expected, 2 differ, 1 lab error" in text


def test_summary_fence_outgrows_backticks_in_a_header(tmp_path: Path) -> None:
    report = make_report()
    header = "from x (```) by mx"
    odd = report.results[0].model_copy(update={"received": header})
    report = report.model_copy(update={"results": (odd, *report.results[1:])})
    text = (write_report(report, tmp_path) / "summary.md").read_text(encoding="utf-8")
    assert f"````text\nReceived: {header}\n````" in text


# report.html ----------------------------------------------------------------------------------


def test_html_is_self_contained(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for needle in ("http://", "https://", "src=", "<link", "@import", "url("):
        assert needle not in page, f"external reference: {needle}"
    assert page.count("<script") == 1, "one inline script: the expand-all button"
    assert "<script>document.getElementById('expand-all')" in page
    assert "<style>" in page
    assert page.count("<details>") == 8


def test_cells_link_their_stored_message_sessions_and_portal_copy(tmp_path: Path) -> None:
    report = make_report()
    run = tmp_path / report.run_id
    store = run / "evidence" / "tls10"
    store.mkdir(parents=True)
    (store / "A1.eml").write_text("Received: x\r\n\r\nbody")
    (store / "sessions.jsonl").write_text("")
    ids = {"tls10-ses-default": "<tls10-ses-default.1@sender.lab.test>"}
    records = [
        {"message_id": ids["tls10-ses-default"], "eml": "A1.eml"},
        {"message_id": "<other@x>", "eml": "B2.eml"},
        {"message_id": ids["tls10-ses-default"], "eml": "../../escape.eml"},
    ]
    (store / "messages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    portal = run / "portal" / "ses-require-tls"
    portal.mkdir(parents=True)
    (portal / "tls10-ses-require-tls.2_sender.lab.test.eml").write_text("x")
    cells = list(report.results)
    cells[2] = cells[2].model_copy(
        update={"message_id": ids["tls10-ses-default"], "sessions": (session(),)}
    )
    cells[3] = cells[3].model_copy(
        update={"message_id": "<tls10-ses-require-tls.2@sender.lab.test>"}
    )
    run = write_report(report.model_copy(update={"results": tuple(cells)}), tmp_path)
    rows = {f"{r['receiver']}-{r['sender']}": r for r in read_json(run / "results.json")["results"]}
    assert rows["tls10-ses-default"]["evidence"] == [
        {"kind": "message", "path": "evidence/tls10/A1.eml"},
        {"kind": "sessions", "path": "evidence/tls10/sessions.jsonl"},
    ], "only a stored copy of this message, never a path out of the folder"
    assert rows["tls10-ses-require-tls"]["evidence"] == [
        {
            "kind": "portal",
            "path": "portal/ses-require-tls/tls10-ses-require-tls.2_sender.lab.test.eml",
        }
    ]
    assert rows["tls13-ses-default"]["evidence"] == [], "no message id: nothing to link"
    page = (run / "report.html").read_text(encoding="utf-8")
    assert '<a href="evidence/tls10/A1.eml">stored message (.eml)</a>' in page
    assert '<a href="evidence/tls10/sessions.jsonl">session records</a>' in page
    text = (run / "summary.md").read_text(encoding="utf-8")
    assert (
        "Evidence files: [message](<evidence/tls10/A1.eml>), "
        "[sessions](<evidence/tls10/sessions.jsonl>)"
    ) in text


def test_html_escapes_received_headers(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page


class Cells(HTMLParser):
    """Collect every matrix cell's attributes and its visible text, keyed by `data-cell`."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[str, dict[str, str]] = {}
        self.text: dict[str, str] = {}
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "td":
            self._open = found.get("data-cell", "")
            self.cells[self._open] = found
            self.text[self._open] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.text[self._open] += data


def html_cells(page: str) -> Cells:
    parser = Cells()
    parser.feed(page)
    return parser


def test_html_cells_carry_hooks_risk_and_match(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    parsed = html_cells(page)
    hooks = {
        cell: (a["data-outcome"], a["data-risk"], a["data-verdict"])
        for cell, a in parsed.cells.items()
    }
    assert hooks == {
        "tls13-ses-default": ("delivered", "verified", "pass"),
        "tls13-ses-require-tls": ("delivered", "verified", "pass"),
        "tls10-ses-default": ("delivered", "legacy", "pass"),
        "tls10-ses-require-tls": ("delivered", "legacy", "pass"),
        "no-starttls-ses-default": ("delivered", "plaintext", "pass"),
        "no-starttls-ses-require-tls": ("delivered", "plaintext", "fail"),
        "self-signed-ses-default": ("refused", "not-delivered", "fail"),
        "self-signed-ses-require-tls": ("error", "error", "error"),
    }
    for cell, attrs in parsed.cells.items():
        assert f"r-{attrs['data-risk']}" in attrs["class"].split(), cell
        assert "expected: " in parsed.text[cell], f"{cell}: the expectation is on every cell"
    assert "✓ as expected" in parsed.text["no-starttls-ses-default"], "red cell, matched"
    assert "plaintext: the receiver offers no TLS" in parsed.text["no-starttls-ses-default"]
    assert "✗ differs from expectation" in parsed.text["no-starttls-ses-require-tls"]
    assert "expected: refused" in parsed.text["no-starttls-ses-require-tls"]
    assert "Study cells reproduced: 5/6" in page
    assert "not the services themselves" in page
    assert "Amazon SES (Require TLS)" in page
    assert 'class="legend"' in page


def test_html_legend_and_markdown_share_one_risk_scale(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    text = (run_dir / "summary.md").read_text(encoding="utf-8")
    start = page.index('id="legend"')
    legend = page[start : page.index("</section>", start)]
    for risk, (name, swatch, meaning) in RISK_SCALE.items():
        assert f'class="sw r-{risk.value}"' in legend
        assert html.escape(name) in legend
        assert html.escape(meaning, quote=True) in legend
        assert f"- {swatch} **{name}**: {meaning}" in text
    for mark in ("as expected", "differs from expectation"):
        assert mark in legend
        assert f"**{mark}**" in text
    assert page.index('id="legend"') < page.index('class="matrix"'), "legend above the matrix"


def test_html_colours_differ_per_risk_class() -> None:
    colours = [re.search(rf"\.r-{r.value}\{{background:(#[0-9a-f]{{6}})", CSS) for r in Risk]
    assert all(colours), "every risk class has a colour"
    assert len({m.group(1) for m in colours if m}) == len(Risk)


def test_html_risk_comes_from_receiver_facts_not_its_id(tmp_path: Path) -> None:
    report = make_report()
    mine = cell("my-expired", "ses-default", D, D, V.PASS, TLS13)
    named = cell("self-signed", "ses-require-tls", D, D, V.PASS, TLS13)
    report = report.model_copy(
        update={
            "receivers": ("my-expired", "self-signed"),
            "receiver_info": (info("my-expired", CertState.EXPIRED), info("self-signed")),
            "results": (mine, named),
        }
    )
    parsed = html_cells((write_report(report, tmp_path) / "report.html").read_text("utf-8"))
    assert parsed.cells["my-expired-ses-default"]["data-risk"] == "unverified"
    assert "accepted an expired certificate over TLSv1.3" in parsed.text["my-expired-ses-default"]
    assert parsed.cells["self-signed-ses-require-tls"]["data-risk"] == "verified", "by facts"
    assert parsed.cells["self-signed-ses-default"]["data-risk"] == "not-run"
    assert parsed.text["self-signed-ses-default"] == "not run"


@pytest.mark.parametrize(
    ("receiver", "tls", "sessions", "risk"),
    [
        (info("r", CertState.SELF_SIGNED), TLS13, (), Risk.UNVERIFIED),
        (info("r", CertState.MISMATCHED, TlsVersion.TLS10), TLS10, (), Risk.UNVERIFIED),
        (info("r", low=TlsVersion.TLS10), TLS10, (), Risk.LEGACY),
        (info("r"), TLS12, (), Risk.VERIFIED),
        (None, TLS13, (), Risk.UNVERIFIED),
        (info("r"), None, (), Risk.DOWNGRADED),
        (info("r", starttls=False), None, (session(),), Risk.DOWNGRADED),
        (info("r", starttls=False), None, (), Risk.PLAINTEXT),
        (None, None, (), Risk.PLAINTEXT),
    ],
)
def test_risk_of_a_delivery(
    receiver: ReceiverInfo | None,
    tls: TlsFacts | None,
    sessions: tuple[SessionSummary, ...],
    risk: Risk,
) -> None:
    delivered = cell("r", "s", D, D, V.PASS, tls, sessions=sessions)
    assert risk_of(delivered, receiver) is risk


@pytest.mark.parametrize(
    ("outcome", "risk"),
    [(R, Risk.NOT_DELIVERED), (F, Risk.NOT_DELIVERED), (Outcome.DEFERRED, Risk.NOT_DELIVERED),
     (Outcome.NOT_OBSERVED, Risk.NOT_OBSERVED), (E, Risk.ERROR)],
)  # fmt: skip
def test_risk_of_a_non_delivery(outcome: Outcome, risk: Risk) -> None:
    assert risk_of(cell("r", "s", outcome, D, V.FAIL, TLS13), info("r")) is risk


def test_note_is_on_the_cell_and_in_results_json(tmp_path: Path) -> None:
    report = make_report()
    noted = report.results[2].model_copy(update={"note": "TLS 1.0 is retired (RFC 8996)"})
    report = report.model_copy(update={"results": (report.results[0], noted)})
    run = write_report(report, tmp_path)
    row = read_json(run / "results.json")["results"][1]
    assert row["note"] == "TLS 1.0 is retired (RFC 8996)"
    assert row["risk"] == "legacy"
    parsed = html_cells((run / "report.html").read_text("utf-8"))
    assert "TLS 1.0 is retired (RFC 8996)" in parsed.text["tls10-ses-default"], "on a passing cell"
    assert "_TLS 1.0 is retired (RFC 8996)_" in (run / "summary.md").read_text("utf-8")


def test_html_without_study_cells_has_no_study_score(tmp_path: Path) -> None:
    page = (write_report(make_report(study=False), tmp_path) / "report.html").read_text("utf-8")
    assert "Study cells reproduced" not in page


# load_results / render_all --------------------------------------------------------------------


def test_load_results_round_trips(run_dir: Path) -> None:
    report = assess(make_report())
    assert load_results(run_dir) == report
    assert load_results(run_dir / "results.json") == report
    assert load_results(run_dir.parent / "latest") == report


def test_render_all_rewrites_the_files_identically(run_dir: Path) -> None:
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    before = {p.relative_to(run_dir): p.read_bytes() for p in files}
    report = load_results(run_dir)
    for p in files:
        p.unlink()
    written = render_all(report, run_dir)
    assert sorted(p.relative_to(run_dir) for p in written) == sorted(before)
    assert {p: (run_dir / p).read_bytes() for p in before} == before


def broken(run_dir: Path, change: Any) -> Path:
    data = read_json(run_dir / "results.json")
    change(data)
    (run_dir / "results.json").write_text(json.dumps(data), encoding="utf-8")
    return run_dir


def test_missing_suite_names_the_field(run_dir: Path) -> None:
    with pytest.raises(ReportError) as info:
        load_results(broken(run_dir, lambda d: d.pop("suite")))
    error = info.value
    assert error.field == "suite"
    assert error.path == run_dir / "results.json"
    assert "suite" in error.fix
    assert "\n" not in str(error)
    assert str(error.path) in str(error)
    assert "suite" in str(error)


def test_bad_outcome_names_the_field_and_the_allowed_values(run_dir: Path) -> None:
    def spoil(data: dict[str, Any]) -> None:
        data["results"][2]["outcome"] = "bounced"

    with pytest.raises(ReportError) as info:
        load_results(broken(run_dir, spoil))
    assert info.value.field == "results[2].outcome"
    assert "'delivered'" in info.value.fix
    assert "bounced" in info.value.fix
    assert "results[2].outcome" in str(info.value)


def test_invalid_json_is_a_report_error(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text('{"suite": "ses-2025",', encoding="utf-8")
    with pytest.raises(ReportError) as info:
        load_results(path)
    assert info.value.field == "(json)"
    assert "line 1" in info.value.fix


@pytest.mark.parametrize(
    ("content", "field"),
    [("[1, 2]", "(top level)"), ('{"schema": "other/v9"}', "schema")],
)
def test_wrong_document_is_a_report_error(tmp_path: Path, content: str, field: str) -> None:
    path = tmp_path / "results.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ReportError) as info:
        load_results(path)
    assert info.value.field == field


def test_missing_file_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError) as info:
        load_results(tmp_path)
    assert info.value.path == tmp_path / "results.json"
    assert "no such file" in info.value.fix
