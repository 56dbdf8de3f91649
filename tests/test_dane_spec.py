"""DANE receiver specs and the generic records of LabZone: what is accepted, what is refused."""

from __future__ import annotations

from pathlib import Path

import dns.exception
import dns.message
import dns.rdatatype
import pytest
from pydantic import ValidationError

from harness.scenarios import ScenarioError, load_receiver
from lab.dns import LabZone
from lab.spec import ReceiverSpec

LEAF_311 = {"usage": 3, "selector": 1, "matching": 1, "of": "leaf"}


def test_a_dane_state_needs_a_tlsa_record_or_a_failing_lookup() -> None:
    with pytest.raises(ValidationError, match="at least one tlsa record"):
        ReceiverSpec.model_validate({"id": "d", "dane": {"signing": "signed"}})
    ok = ReceiverSpec.model_validate({"id": "d", "dane": {"tlsa_servfail": True}})
    assert ok.dane is not None
    assert ok.dane.tlsa == ()


@pytest.mark.parametrize(
    "bad", [{"usage": 4}, {"selector": 2}, {"matching": 3}, {"of": "intermediate"}]
)
def test_tlsa_fields_outside_rfc_6698_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ReceiverSpec.model_validate({"id": "d", "dane": {"tlsa": [{**LEAF_311, **bad}]}})


def test_a_bad_dane_field_in_yaml_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "dane-x.yaml"
    path.write_text("dane:\n  signing: half-signed\n  tlsa: []\n", encoding="utf-8")
    with pytest.raises(ScenarioError) as raised:
        load_receiver(path)
    text = str(raised.value)
    assert "dane-x.yaml" in text
    assert "signing" in text
    assert "\n" not in text


def test_txt_longer_than_255_bytes_is_split_into_strings_and_answered_whole() -> None:
    zone = LabZone("lab.test")
    text = "v=STSv1; id=" + "x" * 300
    zone.add_txt("_mta-sts.sts.lab.test", text)
    reply = dns.message.from_wire(
        zone.answer(dns.message.make_query("_mta-sts.sts.lab.test", "TXT").to_wire()) or b""
    )
    strings = reply.answer[0][0].strings
    assert [len(s) for s in strings] == [255, len(text) - 255]
    assert b"".join(strings).decode() == text


def test_generic_records_are_served_and_bad_data_is_refused_when_added() -> None:
    zone = LabZone("lab.test")
    zone.add_record("_25._tcp.mx.a.lab.test", "TLSA", "3 1 1 " + "ab" * 32)
    zone.add_record("alias.lab.test", "CNAME", "mx.a.lab.test.")
    query = dns.message.make_query("alias.lab.test", "CNAME").to_wire()
    reply = dns.message.from_wire(zone.answer(query) or b"")
    assert reply.answer[0].rdtype == dns.rdatatype.CNAME
    with pytest.raises(dns.exception.SyntaxError):
        zone.add_record("_25._tcp.mx.a.lab.test", "TLSA", "3 1 1 not-hex")
    with pytest.raises(ValueError, match="not inside the zone"):
        zone.add_txt("example.com", "v=spf1")


def test_the_lab_dns_refuses_a_broken_zones_folder_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "lab.test.zone").write_text("this is not a master file\n", encoding="utf-8")
    (tmp_path / "servfail.json").write_text("[]\n", encoding="utf-8")
    (tmp_path / "trust-anchor.json").write_text("{}\n", encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "lab.dns", "--zones-dir", str(tmp_path), "--port", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "lab.test.zone" in done.stderr
    assert "Traceback" not in done.stderr
