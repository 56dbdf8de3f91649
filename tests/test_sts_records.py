"""MTA-STS receiver specs: bad fields name the file and field; TXT records are checked; reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.scenario_files import ScenarioError
from harness.scenarios import load_receiver
from lab.spec import ReceiverSpec
from lab.sts_spec import published_sts


@pytest.mark.parametrize(
    ("sts", "field"),
    [
        ("{mode: strict}", "sts.mode"),
        ("{mode: enforce, max_age: 31557601}", "sts.max_age"),
        ("{mode: enforce, mx: ['bad pattern']}", "sts.mx"),
        ("{mode: enforce, policy_host: teapot}", "sts.policy_host"),
        ("{mode: enforce, colour: red}", "sts.colour"),
    ],
)
def test_a_bad_sts_field_names_the_file_and_the_field(tmp_path: Path, sts: str, field: str) -> None:
    path = tmp_path / "sts-bad.yaml"
    path.write_text(f"sts: {sts}\n")
    with pytest.raises(ScenarioError) as raised:
        load_receiver(path)
    assert str(path) in str(raised.value)
    assert field in str(raised.value)
    path.write_text("sts: {mode: enforce}\n")  # the control loads
    assert load_receiver(path).sts is not None


def test_the_dns_command_exits_2_on_a_bad_txt_record() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lab.dns", "--port", "0", "--txt", "_x.other.test=v=STSv1"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("lab.dns: bad record:")
    assert "Traceback" not in result.stderr


def test_reports_carry_what_the_domain_publishes(receiver_specs: dict[str, ReceiverSpec]) -> None:
    served = published_sts(receiver_specs["sts-enforce"])
    assert served["policy"] == "sts"
    assert served["policy_txt"] == "v=STSv1; id=lab1"
    assert "mode: enforce" in served["policy_strings"]
    broken = published_sts(receiver_specs["sts-fetch-404"])  # nothing a sender can fetch
    assert (broken["policy"], broken["policy_strings"]) == ("no-policy-found", ())
    assert published_sts(receiver_specs["tls13"]) == {}


def test_tlsrpt_names_the_sts_policy_with_its_strings_and_mx_patterns(
    receiver_specs: dict[str, ReceiverSpec],
) -> None:
    from harness.model import CellResult, Outcome, Verdict
    from harness.runner import receiver_info
    from harness.tlsrpt import cell_policy

    def policy(receiver: str) -> dict[str, object]:
        cell = CellResult(receiver=receiver, sender="rfc-sender", outcome=Outcome.DEFERRED,
                          expected=Outcome.DEFERRED, verdict=Verdict.PASS, detail="")  # fmt: skip
        found: dict[str, object] = cell_policy(cell, receiver_info(receiver_specs[receiver]))[
            "policy"
        ]
        return found

    assert policy("sts-enforce-mx-mismatch") == {
        "policy-type": "sts",
        "policy-domain": "sts-enforce-mx-mismatch.lab.test",
        "mx-host": ["mx.elsewhere.lab.test", "*.lab.test"],
        "policy-string": [
            "version: STSv1", "mode: enforce", "mx: mx.elsewhere.lab.test", "mx: *.lab.test",
            "max_age: 86400",
        ],
    }  # fmt: skip
    assert policy("sts-fetch-redirect")["policy-type"] == "no-policy-found"  # nothing fetchable
    assert "policy-string" not in policy("tls13")
