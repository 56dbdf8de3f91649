"""The ses driver and `tlslab ses setup`, offline against moto's SES v2 (`mock_aws`, in-process).

moto stands in for the SES API; nothing here leaves this process. moto 5 lacks
PutConfigurationSetDeliveryOptions, so `moto_ses` adds it as the SES v2 API reference describes
it (PUT .../delivery-options replaces the set's delivery options; unknown set: NotFoundException).
Exact request parameters are checked with botocore's Stubber.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from moto.sesv2.responses import SESV2Response

from harness import cli
from harness.classify import classify
from harness.model import CredentialsEnv, Outcome, SesSenderProfile
from harness.runner import build_message
from harness.scenarios import DEFAULT_ROOT
from harness.senders import DRIVERS
from harness.senders.base import SendAction
from harness.senders.ses import TOKEN_HEADER, SesSender, send_request
from harness.ses_setup import ensure_configuration_set
from lab.backends.base import BackendError

REGION = "eu-west-1"
ZONE = "lab.test"
FROM = f"tlslab@{ZONE}"
KEY_ID, SECRET = "AKIATLSLABPLANTED0001", "planted-secret-Zq8/hunter2+do-not-leak"
CRED_NAMES = {"access_key_id": "LAB_SES_KEY", "secret_access_key": "LAB_SES_SECRET"}
DELIVERY_FIELDS = ("TlsPolicy", "SendingPoolName", "MaxDeliverySeconds", "SharedPoolDeliveryMode")


def _put_delivery_options(self: SESV2Response) -> str:
    """PutConfigurationSetDeliveryOptions, per the SES v2 API reference (absent from moto 5)."""
    config_set = self.sesv2_backend.get_configuration_set(self._get_param("ConfigurationSetName"))
    params = json.loads(self.body or "{}")
    config_set.delivery_options = {k: params[k] for k in DELIVERY_FIELDS if k in params}
    return "{}"


@pytest.fixture
def moto_ses(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """Yield an SES v2 client on moto with planted credentials in the variables the YAML names."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv(CRED_NAMES["access_key_id"], KEY_ID)
    monkeypatch.setenv(CRED_NAMES["secret_access_key"], SECRET)
    monkeypatch.setattr(
        SESV2Response,
        "put_configuration_set_delivery_options",
        _put_delivery_options,
        raising=False,
    )
    with mock_aws():
        yield boto3.client(
            "sesv2", region_name=REGION, aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET
        )


@pytest.fixture
def keep_sigterm() -> Iterator[None]:
    """Restore the SIGTERM handler `tlslab` installs when run in-process."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


def profile(**changes: Any) -> SesSenderProfile:
    """Return an SES profile whose credentials come from the planted variables."""
    data: dict[str, Any] = {
        "id": "ses-test",
        "driver": "ses",
        "region": REGION,
        "configuration_set": "tlslab-require",
        "from_address": FROM,
        "credentials_env": CRED_NAMES,
        "observe_timeout_seconds": 0.5,
    }
    return SesSenderProfile.model_validate({**data, **changes})


def policy_of(client: Any, name: str) -> dict[str, Any]:
    """Return a configuration set's delivery options as SES reports them."""
    options: dict[str, Any] = client.get_configuration_set(ConfigurationSetName=name)[
        "DeliveryOptions"
    ]
    return options


def setup(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    """Run `tlslab ses setup` in-process with the planted credentials; return status, lines."""
    env = ",".join(CRED_NAMES.values())
    status = cli.main(["ses", "setup", "--region", REGION, "--credentials-env", env, *extra])
    out = capsys.readouterr()
    return status, (out.out + out.err).splitlines()


# ---------------------------------------------------------------- tlslab ses setup


@pytest.mark.usefixtures("keep_sigterm")
def test_setup_creates_both_sets_then_finds_them_correct(
    moto_ses: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines = setup(capsys)
    assert status == 0, lines
    assert "  tlslab-optional: created (TlsPolicy OPTIONAL)" in lines
    assert "  tlslab-require: created (TlsPolicy REQUIRE)" in lines
    assert policy_of(moto_ses, "tlslab-optional")["TlsPolicy"] == "OPTIONAL"
    assert policy_of(moto_ses, "tlslab-require")["TlsPolicy"] == "REQUIRE"
    status, lines = setup(capsys)
    assert status == 0
    assert "  tlslab-optional: already correct (TlsPolicy OPTIONAL)" in lines
    assert "  tlslab-require: already correct (TlsPolicy REQUIRE)" in lines


@pytest.mark.usefixtures("keep_sigterm")
def test_setup_fixes_a_wrong_policy_and_keeps_other_delivery_options(
    moto_ses: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    moto_ses.create_configuration_set(
        ConfigurationSetName="lab-require",
        DeliveryOptions={"TlsPolicy": "OPTIONAL", "MaxDeliverySeconds": 600},
    )
    moto_ses.create_configuration_set(ConfigurationSetName="lab-optional")  # no policy: OPTIONAL
    status, lines = setup(capsys, "--prefix", "lab")
    assert status == 0, lines
    assert "  lab-require: fixed (TlsPolicy OPTIONAL -> TlsPolicy REQUIRE)" in lines
    assert "  lab-optional: already correct (TlsPolicy OPTIONAL)" in lines
    assert policy_of(moto_ses, "lab-require") == {"TlsPolicy": "REQUIRE", "MaxDeliverySeconds": 600}


def test_setup_sets_max_delivery_seconds_when_asked(moto_ses: Any) -> None:
    line = ensure_configuration_set(moto_ses, "s", "REQUIRE", 300)
    assert line == "s: created (TlsPolicy REQUIRE, MaxDeliverySeconds 300)"
    assert ensure_configuration_set(moto_ses, "s", "REQUIRE", 300).startswith("s: already correct")
    assert ensure_configuration_set(moto_ses, "s", "REQUIRE", 900) == (
        "s: fixed (TlsPolicy REQUIRE, MaxDeliverySeconds 300 -> "
        "TlsPolicy REQUIRE, MaxDeliverySeconds 900)"
    )


@pytest.mark.usefixtures("keep_sigterm", "moto_ses")
@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--region", "moon-1"], ["--region", "'moon-1'", "eu-west-1"]),
        (["--region", REGION, "--prefix", "bad prefix"], ["--prefix"]),
        (["--region", REGION, "--max-delivery-seconds", "5"], ["--max-delivery-seconds", "300"]),
        (["--region", REGION, "--credentials-env", "ONLY_ONE"], ["--credentials-env"]),
        (
            ["--region", REGION, "--credentials-env", "NO_SUCH_KEY,NO_SUCH_SECRET"],
            ["NO_SUCH_KEY", "credentials_env.access_key_id", "export"],
        ),
    ],
)
def test_setup_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], names: list[str]
) -> None:
    assert cli.main(["ses", "setup", *args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("tlslab: error: ")
    for name in names:
        assert name in err[0]


# ---------------------------------------------------------------- the driver


def test_driver_submits_raw_data_with_the_configuration_set(moto_ses: Any) -> None:
    moto_ses.create_email_identity(EmailIdentity=ZONE)  # the lab zone, verified
    message = build_message("tls12", "ses-test", f"tls12.{ZONE}", ZONE)
    sender = SesSender(profile())
    assert DRIVERS["ses"].watch_seconds(profile()) == profile().observe_timeout_seconds
    report = sender.send(message)
    assert report.action is SendAction.SUBMITTED, report
    assert "configuration set tlslab-require" in report.reason
    (sent,) = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    assert set(sent.destinations) == {message.rcpt}  # moto also adds the To: header's copy
    assert sent.source == FROM
    raw = sent.raw_data.encode()
    assert f"From: Sender TLS Lab <{FROM}>".encode() in raw
    assert TOKEN_HEADER + b": " + message.message_id.encode() in raw
    assert raw.endswith(message.data.partition(b"\r\n\r\n")[2])


def test_driver_sends_exactly_these_parameters() -> None:
    message = build_message("no-starttls", "ses-test", f"no-starttls.{ZONE}", ZONE)
    client = boto3.client(
        "sesv2", region_name=REGION, aws_access_key_id="k", aws_secret_access_key="s"
    )
    expected = {
        "FromEmailAddress": FROM,
        "Destination": {"ToAddresses": [f"inbox@no-starttls.{ZONE}"]},
        "Content": {"Raw": {"Data": send_request(profile(), message)["Content"]["Raw"]["Data"]}},
        "ConfigurationSetName": "tlslab-require",
        "FeedbackForwardingEmailAddress": f"bounce+no-starttls-ses-test@{ZONE}",
    }
    with Stubber(client) as stub, mock_aws():
        stub.add_response("send_email", {"MessageId": "0102-abc"}, expected)
        sender = SesSender(profile(), {"LAB_SES_KEY": KEY_ID, "LAB_SES_SECRET": SECRET}, client)
        report = sender.send(message)
        stub.assert_no_pending_responses()
    assert report.action is SendAction.SUBMITTED
    assert "MessageId 0102-abc" in report.reason
    without = send_request(profile(feedback_to_lab=False), message)
    assert "FeedbackForwardingEmailAddress" not in without


def test_an_api_rejection_is_refused(moto_ses: Any) -> None:
    message = build_message("tls12", "ses-test", f"tls12.{ZONE}", ZONE)  # From is not verified
    report = SesSender(profile()).send(message)
    assert report.action is SendAction.REFUSED
    assert "MessageRejected" in report.reason
    seen = classify(report, [], False)
    assert seen.outcome is Outcome.REFUSED


@pytest.mark.parametrize(
    ("code", "action", "outcome"),
    [
        ("MessageRejected", SendAction.REFUSED, Outcome.REFUSED),
        ("SendingPausedException", SendAction.REFUSED, Outcome.REFUSED),
        ("NotFoundException", SendAction.FAILED, Outcome.ERROR),  # no such configuration set
        ("TooManyRequestsException", SendAction.FAILED, Outcome.ERROR),
    ],
)
def test_api_errors_split_into_refusals_and_lab_faults_and_never_leak_secrets(
    code: str, action: SendAction, outcome: Outcome
) -> None:
    client = boto3.client(
        "sesv2", region_name=REGION, aws_access_key_id="k", aws_secret_access_key="s"
    )
    env = {"LAB_SES_KEY": KEY_ID, "LAB_SES_SECRET": SECRET}
    message = build_message("tls12", "ses-test", f"tls12.{ZONE}", ZONE)
    with Stubber(client) as stub:
        stub.add_client_error("send_email", code, f"echoing {SECRET} and {KEY_ID}")
        report = SesSender(profile(), env, client).send(message)
    assert report.action is action
    assert code in report.reason
    assert SECRET not in report.reason
    assert KEY_ID not in report.reason
    assert "[redacted]" in report.reason
    assert classify(report, [], False).outcome is outcome


def test_credentials_come_only_from_the_named_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "standard-variable-must-not-count")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "standard-variable-must-not-count")
    with pytest.raises(BackendError) as info:
        SesSender(profile(), environ={"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"})
    text = str(info.value)
    assert "'ses-test'" in text
    assert "credentials_env.access_key_id" in text
    assert "LAB_SES_KEY" in text
    assert "standard-variable" not in text
    names = CredentialsEnv.model_validate(CRED_NAMES)
    assert names.session_token == "AWS_SESSION_TOKEN"  # read only when set


# ---------------------------------------------------------------- end to end, through `tlslab run`


SUITE = """\
title: ses offline
receivers: [tls12]
senders: [ses-test]
cells:
  tls12:
    ses-test: {outcome: delivered, tls: TLSv1.2}
"""


@pytest.mark.integration
@pytest.mark.usefixtures("keep_sigterm")
def test_a_run_through_ses_is_not_observed_and_leaks_no_secret(
    moto_ses: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    moto_ses.create_email_identity(EmailIdentity=ZONE)
    root = tmp_path / "scenarios"
    shutil.copytree(DEFAULT_ROOT / "receivers", root / "receivers")
    (root / "senders").mkdir()
    yaml_profile = profile().model_dump(mode="json", exclude={"id"})
    (root / "senders" / "ses-test.yaml").write_text(json.dumps(yaml_profile), encoding="utf-8")
    (root / "suites").mkdir()
    (root / "suites" / "offline.yaml").write_text(SUITE, encoding="utf-8")
    reports = tmp_path / "reports"
    status = cli.main(
        ["run", "--suite", str(root / "suites" / "offline.yaml"), "--reports", str(reports),
         "--certs", str(tmp_path / "certs"), "--jobs", "1"]
    )  # fmt: skip
    out = capsys.readouterr()
    assert status == 1, out  # expected delivered; SES on moto delivers nothing
    (cell,) = json.loads((reports / "latest" / "results.json").read_text())["results"]
    assert cell["outcome"] == "not-observed"
    assert cell["received"] is None
    assert cell["tls"] is None
    assert cell["sender_report"].startswith("submitted: SES accepted it")
    assert "within 0.5 s" in cell["detail"]
    written = [p.read_bytes() for p in reports.rglob("*") if p.is_file()]
    for blob in [out.out.encode(), out.err.encode(), *written]:
        assert SECRET.encode() not in blob
        assert KEY_ID.encode() not in blob
