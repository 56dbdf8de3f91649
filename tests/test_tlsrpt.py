"""TLS-RPT output: one RFC 8460 report per file, counted per the RFC, typed from receiver facts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from harness.model import CellResult, Outcome, ReceiverInfo, RunReport, SenderInfo, SessionSummary
from harness.model import Verdict as V
from harness.report import ReportError, render_all, write_report
from harness.tlsrpt import RESULT_TYPES, build_tlsrpt, peer_ip, rfc3339
from lab.spec import CertState, TlsVersion

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[1] / "harness" / "tlsrpt.schema.json").read_text("utf-8")
)
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)
D, F, E = Outcome.DELIVERED, Outcome.FALLBACK, Outcome.ERROR
TLS13 = {"version": TlsVersion.TLS13, "cipher": "TLS_AES_256_GCM_SHA384"}
TLS10 = {"version": TlsVersion.TLS10, "cipher": "ECDHE-RSA-AES256-SHA"}


def info(
    receiver: str,
    certificate: CertState = CertState.VALID,
    top: TlsVersion = TlsVersion.TLS13,
    starttls: bool = True,
) -> ReceiverInfo:
    low = top if top.rank < TlsVersion.TLS12.rank else TlsVersion.TLS12
    return ReceiverInfo(
        id=receiver, certificate=certificate, tls_min=low, tls_max=top, starttls=starttls,
        domain=f"{receiver}.lab.test",
    )  # fmt: skip


def ok(peer: str = "127.0.0.1:40001") -> SessionSummary:
    return SessionSummary(peer=peer, starttls=True, handshake="ok", version="TLSv1.3")


def failed(alert: str | None, peer: str = "127.0.0.1:40002") -> SessionSummary:
    return SessionSummary(peer=peer, starttls=True, handshake="failed", alert=alert)


def plain(peer: str = "127.0.0.1:40003") -> SessionSummary:
    return SessionSummary(peer=peer, starttls=False, handshake="none")


def cell(
    receiver: str, sender: str, outcome: Outcome, tls: dict[str, Any] | None, *s: SessionSummary
) -> CellResult:
    return CellResult.model_validate(
        {
            "receiver": receiver, "sender": sender, "outcome": outcome, "expected": outcome,
            "verdict": V.ERROR if outcome is E else V.PASS, "tls": tls, "detail": "",
            "sessions": s,
        }
    )  # fmt: skip


def run() -> RunReport:
    return RunReport(
        suite="tlsrpt",
        backend="local",
        run_id="run-1",
        started="2025-01-01T00:00:00+00:00",
        finished="2025-01-01T01:00:00+00:00",
        receivers=("tls13", "tls10", "no-starttls", "self-signed", "my-expired", "mismatched"),
        senders=(
            SenderInfo(id="ses-default", driver="reference"),
            SenderInfo(id="paubox", driver="reference"),
            SenderInfo(id="idle", driver="reference"),
        ),
        receiver_info=(
            info("tls13"),
            info("tls10", top=TlsVersion.TLS10),
            info("no-starttls", starttls=False),
            info("self-signed", CertState.SELF_SIGNED),
            info("my-expired", CertState.EXPIRED),
            info("mismatched", CertState.MISMATCHED),
        ),
        results=(
            cell("tls13", "ses-default", D, TLS13, ok()),
            cell("tls10", "ses-default", D, TLS10, ok()),
            cell("no-starttls", "ses-default", D, None, plain()),
            cell("self-signed", "ses-default", D, TLS13, ok()),
            cell("my-expired", "ses-default", E, None),
            cell("mismatched", "ses-default", Outcome.NOT_OBSERVED, None),
            cell("tls13", "paubox", D, TLS13, ok("[2001:db8::1]:25")),
            cell("tls10", "paubox", F, None, failed("unsupported_protocol")),  # as OpenSSL logs it
            cell("no-starttls", "paubox", F, None, plain()),
            cell("self-signed", "paubox", F, None, failed("unknown_ca")),
            cell("my-expired", "paubox", F, None, failed("certificate_expired"), failed(
                "certificate_expired")),
            cell("mismatched", "paubox", F, None),
        ),
    )  # fmt: skip


def policy(domain: str, good: int, bad: int, *failures: dict[str, Any]) -> dict[str, Any]:
    return {
        "policy": {
            "policy-type": "no-policy-found",
            "policy-domain": f"{domain}.lab.test",
            "mx-host": [f"mx.{domain}.lab.test"],
        },
        "summary": {"total-successful-session-count": good, "total-failure-session-count": bad},
        "failure-details": list(failures),
    }


def failure(domain: str, kind: str, count: int = 1, **extra: str) -> dict[str, Any]:
    detail: dict[str, Any] = {"result-type": kind}
    if "ip" in extra:
        detail["sending-mta-ip"] = extra["ip"]
    detail["receiving-mx-hostname"] = f"mx.{domain}.lab.test"
    detail["failed-session-count"] = count
    if "reason" in extra:
        detail["failure-reason-code"] = extra["reason"]
    return detail


HEAD = {
    "organization-name": "Sender TLS Lab",
    "date-range": {
        "start-datetime": "2025-01-01T00:00:00Z",
        "end-datetime": "2025-01-01T01:00:00Z",
    },
    "contact-info": "mailto:tlsrpt@lab.test",
}
EXPECTED = {
    "ses-default": {
        **HEAD,
        "report-id": "run-1.ses-default",
        "policies": [
            policy("tls13", 1, 0),
            policy("tls10", 1, 0),  # TLS 1.0 was negotiated: a successful session per the RFC
            policy("no-starttls", 0, 1, failure(
                "no-starttls", "starttls-not-supported", ip="127.0.0.1")),
            policy("self-signed", 1, 0),  # not verified, so not a failure the sender saw
            policy("my-expired", 0, 0),  # a lab error says nothing
            policy("mismatched", 0, 0),  # nothing observed
        ],
    },
    "paubox": {
        **HEAD,
        "report-id": "run-1.paubox",
        "policies": [
            policy("tls13", 1, 0),
            policy("tls10", 0, 1, failure(
                "tls10", "validation-failure", ip="127.0.0.1", reason="protocol_version")),
            policy("no-starttls", 0, 1, failure(
                "no-starttls", "starttls-not-supported", ip="127.0.0.1")),
            policy("self-signed", 0, 1, failure(
                "self-signed", "certificate-not-trusted", ip="127.0.0.1", reason="unknown_ca")),
            policy("my-expired", 0, 2, failure(
                "my-expired", "certificate-expired", 2, ip="127.0.0.1",
                reason="certificate_expired")),
            policy("mismatched", 0, 1, failure("mismatched", "certificate-host-mismatch")),
        ],
    },
}  # fmt: skip


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    return write_report(run(), tmp_path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def test_each_sender_file_is_the_expected_rfc8460_report(run_dir: Path) -> None:
    files = sorted(p.name for p in (run_dir / "tlsrpt").iterdir())
    assert files == ["paubox.json", "ses-default.json"], "a sender without cells has no report"
    for sender, expected in EXPECTED.items():
        assert read_json(run_dir / "tlsrpt" / f"{sender}.json") == expected, sender


def test_each_file_validates_against_the_rfc8460_schema(run_dir: Path) -> None:
    for file in (run_dir / "tlsrpt").iterdir():
        errors = [e.message for e in VALIDATOR.iter_errors(read_json(file))]
        assert errors == [], f"{file.name}: {errors}"


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.pop("report-id"), "report-id"),
        (lambda d: d["policies"][0]["policy"].update({"policy-type": "none"}), "policy-type"),
        (lambda d: d["policies"][1]["failure-details"][0].update({"result-type": "tls10"}),
         "result-type"),
        (lambda d: d["policies"][1]["failure-details"][0].update({"sending-mta-ip": "x"}),
         "sending-mta-ip"),
        (lambda d: d["date-range"].update({"end-datetime": "yesterday"}), "end-datetime"),
        (lambda d: d["policies"][0]["summary"].update({"total-failure-session-count": -1}),
         "total-failure-session-count"),
    ],
)  # fmt: skip
def test_the_schema_rejects_a_broken_report(change: Any, where: str) -> None:
    document = json.loads(json.dumps(EXPECTED["paubox"]))
    assert list(VALIDATOR.iter_errors(document)) == []
    change(document)
    errors = list(VALIDATOR.iter_errors(document))
    assert errors, f"a report with a bad {where} passed the schema"


def test_index_names_each_file_with_its_totals(run_dir: Path) -> None:
    index = read_json(run_dir / "tlsrpt.json")
    assert index == {
        "media-type": "application/tlsrpt+json",
        "complete": True,
        "reports": [
            {"sender": "ses-default", "file": "tlsrpt/ses-default.json",
             "report-id": "run-1.ses-default", "total-successful-session-count": 3,
             "total-failure-session-count": 1},
            {"sender": "paubox", "file": "tlsrpt/paubox.json", "report-id": "run-1.paubox",
             "total-successful-session-count": 1, "total-failure-session-count": 6},
        ],
    }  # fmt: skip
    for entry in index["reports"]:
        assert (run_dir / entry["file"]).is_file()


def test_result_type_comes_from_the_receivers_facts_not_its_id() -> None:
    report = run()
    renamed = tuple(
        i.model_copy(update={"certificate": CertState.VALID}) if i.id == "my-expired" else i
        for i in report.receiver_info
    )
    reports = build_tlsrpt(report.model_copy(update={"receiver_info": renamed}))
    (detail,) = reports["paubox"]["policies"][4]["failure-details"]
    assert detail["result-type"] == "validation-failure", "a valid certificate is not 'expired'"
    assert {
        d["result-type"]
        for p in build_tlsrpt(run())["paubox"]["policies"]
        for d in p["failure-details"]
    } <= RESULT_TYPES


def test_policy_type_follows_the_receivers_policy() -> None:
    report = run()
    sts = tuple(
        i.model_copy(update={"policy": "sts"}) if i.id == "tls13" else i
        for i in report.receiver_info
    )
    reports = build_tlsrpt(report.model_copy(update={"receiver_info": sts}))
    assert reports["paubox"]["policies"][0]["policy"]["policy-type"] == "sts"
    assert reports["paubox"]["policies"][1]["policy"]["policy-type"] == "no-policy-found"


def test_a_sender_id_that_is_not_a_file_name_is_refused(tmp_path: Path) -> None:
    report = run()
    evil = report.results[0].model_copy(update={"sender": "../../escape"})
    bad = report.model_copy(update={"results": (evil,)})
    with pytest.raises(ReportError) as caught:
        render_all(bad, tmp_path / "run")
    assert caught.value.field == "results[].sender"
    assert not (tmp_path / "escape.json").exists()
    assert not (tmp_path / "run").exists(), "nothing written"


@pytest.mark.parametrize(
    ("peer", "ip"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1:40001", "127.0.0.1"),
        ("[::1]:25", "::1"),
        ("('10.1.2.3', 5555)", "10.1.2.3"),
        ("unknown", None),
    ],
)
def test_peer_ip(peer: str, ip: str | None) -> None:
    assert peer_ip(peer) == ip


def test_rfc3339() -> None:
    assert rfc3339("2025-01-01T02:00:00+02:00") == "2025-01-01T00:00:00Z"


def test_a_tlsa_policy_carries_the_tlsa_records_as_policy_string() -> None:
    from harness.model import DaneEvidence
    from harness.tlsrpt import cell_policy

    evidence = DaneEvidence(
        lookups=("_25._tcp.mx.dane-ee.lab.test TLSA: secure",),
        tlsa=("3 1 1 " + "ab" * 32,),
        tlsa_security="secure",
    )
    delivered = cell("dane-ee", "rfc-sender", Outcome.DELIVERED, TLS13, ok())
    delivered = delivered.model_copy(update={"dane": evidence})
    tlsa = info("dane-ee").model_copy(update={"policy": "tlsa"})
    policy = cell_policy(delivered, tlsa)["policy"]
    assert policy["policy-type"] == "tlsa"
    assert policy["policy-string"] == ["3 1 1 " + "ab" * 32]
    insecure = cell_policy(delivered, info("dane-ee"))["policy"]  # no DS: no DANE policy
    assert insecure["policy-type"] == "no-policy-found"
    assert "policy-string" not in insecure
