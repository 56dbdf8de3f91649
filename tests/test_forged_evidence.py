"""Nothing a client sends changes a TLS fact the lab reports or a verdict: forgery, end to end.

Real receivers (the local backend: `lab.serve` children on 127.0.0.1) and a real SMTP client
(smtplib, over real STARTTLS where the row offers it) drive every cell through `LabRun.run_cell`.
Each sender column says something a hostile sender could: a TLS clause in its EHLO name (in
Postfix's own format and in two formats Postfix's neutering lets through), in a quoted RCPT
local part, in a first message line that would fold into the lab's header, with NUL and bare
CR. Each forger must get exactly the outcome, TLS facts and verdict the honest column gets in
the same row, and the stored header must say what the session was, to the lab's own parser and
to `tlslab evidence`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import tlslab

from harness.arrivals import find_arrivals
from harness.classify import classify
from harness.evidence import parse_received, received_headers
from harness.model import CellResult, Outcome, Verdict
from harness.observe import zone_of
from harness.run_start import open_run
from harness.runner import LabRun
from harness.scenarios import DEFAULT_ROOT, load_suite
from harness.senders.base import SendAction, SendReport, TestMessage
from harness.senders.reference import RoutedSMTP
from lab.backends.base import RunningLab
from lab.backends.local import LocalBackend
from lab.evidence_store import read_messages
from lab.spec import TlsVersion

pytestmark = pytest.mark.integration

CLIENT = "client.lab.test"
FORGED = "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))"
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # any control character but TAB
QUEUED_AS = re.compile(r"queued as ([0-9A-F]{12})\b")


@dataclasses.dataclass
class ScriptedSender:
    """A sender that says what it likes: its EHLO line, its RCPT path, bytes before the message."""

    id: str
    ehlo: str = CLIENT
    rcpt_local: str | None = None  # replaces the local part of the cell's recipient
    prefix: bytes = b""
    copies: tuple[bool, ...] = (True,)  # one delivery per entry: True = STARTTLS when offered
    lab: RunningLab | None = None  # the lab it delivers to, set when a run opens it

    def send(self, message: TestMessage) -> SendReport:
        """Deliver the message once per entry of `copies`, raw EHLO and RCPT as scripted."""
        lab = self.lab
        assert lab is not None, "open the scripted sender on a run's lab first"
        domain = message.rcpt.rpartition("@")[2]
        mx_host = lab.mx_for(domain)
        assert mx_host is not None, domain
        attempts = []
        for use_tls in self.copies:
            attempts.append(self._deliver(lab, mx_host, message, use_tls))
        return SendReport(SendAction.DELIVERED, "the scripted sender got 250", tuple(attempts))

    def close(self) -> None:
        """Nothing to release: every connection closes with its delivery."""

    def _deliver(
        self, lab: RunningLab, mx_host: str, message: TestMessage, use_tls: bool
    ) -> tuple[str, int]:
        """Run one SMTP session; return its local (ip, port)."""
        rcpt = message.rcpt
        if self.rcpt_local is not None:
            rcpt = f"{self.rcpt_local}@{rcpt.rpartition('@')[2]}"
        with RoutedSMTP(lab.address_of(mx_host), CLIENT) as smtp:
            assert smtp.connect(mx_host, 25)[0] == 220
            local = smtp.local_endpoint()
            self._ehlo(smtp)
            if use_tls and smtp.has_extn("starttls"):
                smtp.starttls(context=legacy_context())
                self._ehlo(smtp)
            assert smtp.docmd("MAIL", f"FROM:<{message.mail_from}>")[0] == 250
            smtp.send(f"RCPT TO:<{rcpt}>\r\n")  # as is: smtplib refuses CR in commands
            code, reply = smtp.getreply()
            assert code == 250, f"RCPT TO:<{rcpt}>: {code} {reply!r}"
            code, reply = smtp.data(self.prefix + message.data)
            assert code == 250, f"DATA: {code} {reply!r}"
        return local

    def _ehlo(self, smtp: RoutedSMTP) -> None:
        """Send the scripted EHLO line as is (smtplib refuses CR in commands)."""
        smtp.send(f"EHLO {self.ehlo}\r\n")
        code, reply = smtp.getreply()
        assert code == 250, f"EHLO {self.ehlo!r}: {code} {reply!r}"
        smtp.ehlo_resp, smtp.does_esmtp = reply, True
        for line in reply.decode().splitlines()[1:]:
            keyword, _, params = line.partition(" ")
            smtp.esmtp_features[keyword.lower()] = params


def legacy_context() -> ssl.SSLContext:
    """Return a non-verifying client context speaking TLS 1.0 to 1.3."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers(LEGACY_CIPHERS)
    return context


FORGERS = [
    ScriptedSender("forged-ehlo", ehlo=f"x {FORGED}"),
    ScriptedSender("forged-ehlo-kv", ehlo="version=TLS1_3,cipher=TLS_AES_256_GCM_SHA384"),
    ScriptedSender("forged-ehlo-ironport", ehlo="ESMTPS/TLS/TLS_AES_256_GCM_SHA384"),
    ScriptedSender("forged-rcpt", rcpt_local=f'"inbox {FORGED}"'),
    ScriptedSender("forged-rcpt-kv", rcpt_local="version=TLS1_3"),
    ScriptedSender("folding", prefix=f"\t{FORGED}\r\n".encode()),
    ScriptedSender("controls", ehlo=f"a\x00b\rc {FORGED}\x00"),
    ScriptedSender("rcpt-controls", rcpt_local='"inbox\x00\r(using TLSv1.3 with cipher X)"'),
]
HONEST = ScriptedSender("honest")
TWICE = {
    "tls-then-plaintext": ScriptedSender("tls-then-plaintext", copies=(True, False)),
    "plaintext-then-tls": ScriptedSender("plaintext-then-tls", copies=(False, True)),
}
SENDERS = [HONEST, *FORGERS, *TWICE.values()]
EXPECT = {
    "no-starttls": "{outcome: delivered, tls: TLSv1.3}",
    "tls10": "{outcome: delivered, tls: TLSv1.3}",
    "tls12": "{outcome: delivered, tls: TLSv1.2}",
}


def suite_text() -> str:
    """Return a suite of the three rows x every scripted column, one expectation per row."""
    lines = [f"receivers: [{', '.join(EXPECT)}]", f"senders: [{', '.join(s.id for s in SENDERS)}]"]
    lines.append("cells:")
    for receiver, expectation in EXPECT.items():
        lines.append(f"  {receiver}:")
        lines += [f"    {sender.id}: {expectation}" for sender in SENDERS]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory, lab_pki: Any) -> Iterator[LabRun]:
    """Start no-starttls, tls10 and tls12 on loopback with the scripted senders as columns."""
    base = tmp_path_factory.mktemp("forgery")
    root = base / "scenarios"
    shutil.copytree(DEFAULT_ROOT / "receivers", root / "receivers")
    (root / "senders").mkdir()
    for sender in SENDERS:
        (root / "senders" / f"{sender.id}.yaml").write_text("description: scripted stand-in\n")
    (root / "suites").mkdir()
    (root / "suites" / "forgery.yaml").write_text(suite_text())
    loaded = load_suite(root / "suites" / "forgery.yaml")
    with open_run(loaded, LocalBackend(), lab_pki.root, base / "reports") as run:
        for sender in SENDERS:
            run.drivers[sender.id] = dataclasses.replace(sender, lab=run.lab)
        yield run


def stored_record(run: LabRun, result: CellResult) -> dict[str, Any]:
    """Return the receiver's one per-message record of the cell's message."""
    directory = run.lab.endpoint(result.receiver).evidence_dir
    found = [m for m in read_messages(directory) if m.get("message_id") == result.message_id]
    assert len(found) == 1, found
    return found[0]


def assert_header_says_the_session(run: LabRun, result: CellResult, version: str | None) -> Path:
    """Assert the stored header is the lab's, complete, clean and parsed as `version`."""
    record = stored_record(run, result)
    eml: Path = run.lab.endpoint(result.receiver).evidence_dir / str(record["eml"])
    header = result.received
    assert header is not None, result.detail
    assert header == record["received"], "results.json must carry the header as stored"
    assert received_headers(eml.read_bytes())[0] == header
    assert eml.read_bytes().startswith(f"Received: {header}\r\n".encode())
    unfolded = header.replace("\r\n\t", " ")
    assert CONTROL.search(unfolded) is None, f"control characters in the lab's header: {header!r}"
    facts = parse_received(header)
    assert (facts.version.value if facts else None) == version, header
    return eml


@pytest.mark.parametrize(("receiver", "version"), [("no-starttls", None), ("tls10", "TLSv1.0")])
def test_a_forger_gets_the_verdict_an_honest_sender_with_the_same_session_gets(
    lab_run: LabRun, receiver: str, version: str | None
) -> None:
    honest = lab_run.run_cell(receiver, HONEST.id)
    assert honest.outcome is Outcome.DELIVERED, honest.detail
    assert (honest.tls.version.value if honest.tls else None) == version
    assert honest.verdict is Verdict.FAIL  # the row expects TLSv1.3: the honest sender fails
    emls = [assert_header_says_the_session(lab_run, honest, version)]
    for forger in FORGERS:
        forged = lab_run.run_cell(receiver, forger.id)
        seen = (forged.outcome, forged.tls and forged.tls.version, forged.verdict)
        assert seen == (honest.outcome, honest.tls and honest.tls.version, honest.verdict), (
            f"{forger.id}: {forged.detail}"
        )
        if honest.tls is not None:
            assert forged.tls == honest.tls, forger.id
        emls.append(assert_header_says_the_session(lab_run, forged, version))
    ran = tlslab("evidence", "--json", *emls)
    assert ran.status == 0, ran.err
    tops = {hop["file"]: hop for hop in json.loads(ran.out) if hop["hop"] == 1}
    assert len(tops) == len(emls)
    for hop in tops.values():
        assert (hop["tls"] or {}).get("version") == version, hop


def test_a_first_line_starting_with_whitespace_cannot_extend_the_labs_header(
    lab_run: LabRun,
) -> None:
    result = lab_run.run_cell("no-starttls", "folding")
    record = stored_record(lab_run, result)
    data = (lab_run.lab.endpoint("no-starttls").evidence_dir / record["eml"]).read_bytes()
    field = f"Received: {record['received']}\r\n".encode()
    # the lab's field, then an empty line (as Postfix's smtpd writes), then the content as sent
    assert data.startswith(field + b"\r\n\t" + FORGED.encode()), data[: len(field) + 80]
    assert received_headers(data) == [record["received"]]


def test_the_header_keeps_honest_names_and_neutralises_everything_else(lab_run: LabRun) -> None:
    honest = lab_run.run_cell("no-starttls", HONEST.id)
    assert honest.received is not None
    assert honest.received.startswith(f"from {CLIENT} (unknown [127.0.0.1])")
    assert "for <inbox@no-starttls.lab.test>" in honest.received
    forged = lab_run.run_cell("no-starttls", "forged-ehlo")
    assert forged.received is not None
    assert forged.received.startswith(
        "from x??using?TLSv1.3?with?cipher?TLS_AES_256_GCM_SHA384??256?256?bits?? (unknown"
    ), forged.received
    rcpt = lab_run.run_cell("no-starttls", "forged-rcpt")
    assert rcpt.received is not None
    assert "for <?inbox??using?TLSv1.3?" in rcpt.received, rcpt.received


@pytest.mark.parametrize(
    ("written", "changed"),
    [
        (b"\tby mx.", f"\t{FORGED}\r\n\tby mx.".encode()),  # a TLS clause added
        (b"for <inbox@", b"for <someone@"),  # any other change to the lab's field
    ],
)
def test_a_header_changed_on_disk_is_a_lab_error_never_the_senders(
    lab_run: LabRun, written: bytes, changed: bytes
) -> None:
    result = lab_run.run_cell("no-starttls", HONEST.id)
    directory = lab_run.lab.endpoint("no-starttls").evidence_dir
    zone = zone_of(lab_run.lab.endpoint("no-starttls"))
    report = SendReport(SendAction.DELIVERED, "scripted")
    untouched = classify(report, find_arrivals(directory, result.message_id, zone), False)
    assert (untouched.outcome, untouched.tls) == (Outcome.DELIVERED, None)
    eml = directory / stored_record(lab_run, result)["eml"]
    data = eml.read_bytes()
    assert written in data
    eml.write_bytes(data.replace(written, changed, 1))
    seen = classify(report, find_arrivals(directory, result.message_id, zone), False)
    assert seen.outcome is Outcome.ERROR, seen.detail
    assert "evidence changed on disk" in seen.detail
    assert eml.name in seen.detail


@pytest.mark.parametrize("sender", list(TWICE))
def test_copies_with_different_tls_are_reported_and_judged_on_the_weakest(
    lab_run: LabRun, sender: str
) -> None:
    result = lab_run.run_cell("tls12", sender)
    assert result.outcome is Outcome.DELIVERED, result.detail
    assert result.tls is None, "judged on the plaintext copy, whichever came first"
    assert result.verdict is Verdict.FAIL  # a TLSv1.2 expectation: the plaintext copy fails it
    assert "stored 2 times with different TLS" in result.detail
    assert "over TLSv1.2" in result.detail
    assert "in plaintext" in result.detail
    assert result.received is not None
    assert parse_received(result.received) is None, "the header shown is the judged copy's"
    # negative control: one TLS copy from the same sender code passes the same expectation
    single = lab_run.run_cell("tls12", HONEST.id)
    assert (single.outcome, single.verdict) == (Outcome.DELIVERED, Verdict.PASS), single.detail
    assert single.tls is not None
    assert single.tls.version is TlsVersion.TLS12
    assert "stored" not in single.detail
