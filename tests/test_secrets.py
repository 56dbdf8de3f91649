"""Credentials never reach a report, in any form: raw, AUTH LOGIN/PLAIN base64, or escaped.

The relay tests drive `tlslab run` in-process against a loopback submission service (aiosmtpd
with STARTTLS and AUTH on 127.0.0.1) that echoes the client's AUTH responses in its 535 reply,
as a careless server might; the SES test makes moto's MessageId echo the secret key.
"""

from __future__ import annotations

import base64
import json
import shutil
import signal
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from moto import mock_aws
from test_external_observation import free_port

from harness import cli
from harness.model import RelaySenderProfile
from harness.scenarios import DEFAULT_ROOT, ScenarioError, load_sender
from harness.senders.redaction import REDACTED, Redactor
from harness.senders.relay import self_signed

USER, PASSWORD = "relay-tester", "planted-relay-Pw/9xQ+do-not-leak"
KEY_ID, SECRET = "AKIATLSLABPLANTED0002", "planted-secret-Zq8/hunter2+do-not-leak"


def b64(data: bytes) -> str:
    """Return `data` in base64."""
    return base64.b64encode(data).decode()


def forms(user: str, secret: str) -> list[str]:
    """Return the forms of a secret a report must never hold."""
    raw = secret.encode()
    return [
        secret,
        b64(raw),  # AUTH LOGIN
        b64(raw).rstrip("="),
        b64(b"\0" + user.encode() + b"\0" + raw),  # AUTH PLAIN
        urllib.parse.quote(secret, safe=""),
        raw.hex(),
    ]


@pytest.fixture
def keep_sigterm() -> Iterator[None]:
    """Restore the SIGTERM handler `tlslab` installs when run in-process."""
    previous = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- the redaction itself


def test_every_wire_form_of_a_password_is_redacted() -> None:
    redact = Redactor.of([PASSWORD], (USER, PASSWORD))
    raw = PASSWORD.encode()
    for form in forms(USER, PASSWORD):
        assert redact(f"535 echo {form} end") == f"535 echo {REDACTED} end", form
    plain_with_authzid = b64(f"{USER}\0{USER}\0{PASSWORD}".encode())
    assert PASSWORD not in redact(plain_with_authzid)
    assert redact(plain_with_authzid) == REDACTED
    for before in range(6):  # the password anywhere inside a longer base64 text
        for after in (b"", b"x", b"yz"):
            blob = b64(b"p" * before + raw + after)
            assert blob not in redact(blob)
            assert REDACTED in redact(blob), (before, after)
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    assert REDACTED in redact(urlsafe)


def test_escaped_forms_of_a_password_are_redacted() -> None:
    tricky = 'pa"ss\\w\u00f6rd\tx'
    redact = Redactor.of([tricky])
    escaped = [repr(tricky), repr(tricky.encode()), json.dumps(tricky),
               urllib.parse.quote(tricky), tricky.encode().hex()]  # fmt: skip
    for text in escaped:
        assert tricky not in text or text == tricky
        cleaned = redact(f"error: {text} end")
        assert REDACTED in cleaned, text
        assert "ss" not in cleaned.replace("[redacted]", ""), cleaned


def test_text_without_a_secret_is_left_alone() -> None:
    redact = Redactor.of([PASSWORD], (USER, PASSWORD))
    text = f"535 5.7.8 authentication failed for {USER} ({b64(USER.encode())}); try later"
    assert redact(text) == text  # the user name is no secret
    assert Redactor.of([])(text) == text
    assert Redactor.of([""])(text) == text


# ---------------------------------------------------------------- relay profiles at load time


def relay_yaml(folder: Path, name: str, **fields: Any) -> Path:
    """Write a relay sender profile and return its path."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"driver": "relay", "host": "smtp.example", **fields}))
    return path


def test_credentials_over_a_cleartext_relay_are_refused_at_load_time(tmp_path: Path) -> None:
    names = {"username_env": "U", "password_env": "P"}
    with pytest.raises(ScenarioError) as raised:
        load_sender(relay_yaml(tmp_path, "cleartext", security="none", **names))
    text = str(raised.value)
    assert "cleartext.yaml" in text
    assert "field 'security'" in text or "security" in text.split(":")[1]
    assert "starttls" in text
    assert len(text.splitlines()) == 1
    # negative controls: TLS with credentials, or cleartext without any, load fine
    assert isinstance(load_sender(relay_yaml(tmp_path, "tls", **names)), RelaySenderProfile)
    bare = load_sender(relay_yaml(tmp_path, "bare", security="none"))
    assert isinstance(bare, RelaySenderProfile)


@pytest.mark.usefixtures("keep_sigterm")
def test_tlslab_run_with_a_cleartext_credential_profile_exits_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "scenarios"
    shutil.copytree(DEFAULT_ROOT / "receivers", root / "receivers")
    (root / "senders").mkdir()
    relay_yaml(root / "senders", "leaky", security="none", username_env="U", password_env="P")
    (root / "suites").mkdir()
    suite = {"receivers": ["tls12"], "senders": ["leaky"],
             "cells": {"tls12": {"leaky": {"outcome": "refused"}}}}  # fmt: skip
    (root / "suites" / "s.yaml").write_text(yaml.safe_dump(suite))
    status = cli.main(["run", "--suite", str(root / "suites" / "s.yaml"), "--reports",
                       str(tmp_path / "reports"), "--certs", str(tmp_path / "c")])  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert status == 2
    assert len(err) == 1, err
    assert "leaky.yaml" in err[0]
    assert "cleartext" in err[0]


# ---------------------------------------------------------------- end to end through `tlslab run`


class EchoingService:
    """A submission service that refuses every login, echoing what the client sent."""

    def __init__(self) -> None:
        """Start with no echo sent."""
        self.echoed: list[str] = []

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """Refuse, quoting the base64 the client sent for this mechanism (and the raw value)."""
        login, password = auth_data.login, auth_data.password
        if mechanism == "PLAIN":
            echo = b64(b"\0" + login + b"\0" + password)
        else:  # LOGIN: the user and the password, each base64 on its own line
            echo = f"{b64(login)} {b64(password)} {b64(b'session=' + password + b';')}"
        self.echoed.append(echo)
        raw = password.decode()
        return AuthResult(
            success=False, handled=False, message=f"535 5.7.8 bad credentials {echo} ({raw})"
        )

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Accept nothing: every login fails first."""
        return "554 5.7.1 no"


SUITE = {
    "receivers": ["tls12"],
    "senders": ["relay-plain", "relay-login"],
    "cells": {
        "tls12": {"relay-plain": {"outcome": "refused"}, "relay-login": {"outcome": "refused"}}
    },
}


@pytest.mark.integration
@pytest.mark.usefixtures("keep_sigterm")
def test_a_relay_echoing_auth_leaks_no_form_of_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed("localhost", tmp_path / "service")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    service, port = EchoingService(), free_port()
    controller = Controller(
        service, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True,
        authenticator=service.authenticate, auth_require_tls=True,
    )  # fmt: skip
    monkeypatch.setenv("LAB_USER", USER)
    monkeypatch.setenv("LAB_PASSWORD", PASSWORD)
    root = tmp_path / "scenarios"
    shutil.copytree(DEFAULT_ROOT / "receivers", root / "receivers")
    (root / "senders").mkdir()
    for mechanism in ("plain", "login"):
        relay_yaml(root / "senders", f"relay-{mechanism}", host="localhost", port=port,
                   relay_ca_file=str(cert), username_env="LAB_USER", password_env="LAB_PASSWORD",
                   auth_mechanism=mechanism, observe_timeout_seconds=1)  # fmt: skip
    (root / "suites").mkdir()
    (root / "suites" / "echo.yaml").write_text(yaml.safe_dump(SUITE))
    reports = tmp_path / "reports"
    controller.start()
    try:
        suite = str(root / "suites" / "echo.yaml")
        status = cli.main(["run", "--suite", suite, "--jobs", "1", "--reports", str(reports),
                           "--certs", str(tmp_path / "c")])  # fmt: skip
    finally:
        controller.stop()
    out = capsys.readouterr()
    assert status == 0, (reports / "latest" / "results.json").read_text()
    assert len(service.echoed) == 2  # both logins reached the service and were echoed back
    cells = json.loads((reports / "latest" / "results.json").read_text())["results"]
    for cell in cells:
        assert cell["outcome"] == "refused"
        assert "535" in cell["sender_report"]
        assert REDACTED in cell["sender_report"]  # the echo passed through and was redacted
    written = [p.read_text("utf-8", "replace") for p in reports.rglob("*") if p.is_file()]
    assert len(written) >= 4
    for text in [out.out, out.err, *written]:
        for form in forms(USER, PASSWORD):
            assert form not in text


@pytest.mark.integration
@pytest.mark.usefixtures("keep_sigterm")
def test_an_ses_message_id_echoing_the_secret_reaches_no_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("LAB_SES_KEY", KEY_ID)
    monkeypatch.setenv("LAB_SES_SECRET", SECRET)
    echo = f"0102-{SECRET}-{b64(SECRET.encode())}-{KEY_ID}"
    monkeypatch.setattr("moto.ses.models.get_random_message_id", lambda: echo)
    root = tmp_path / "scenarios"
    shutil.copytree(DEFAULT_ROOT / "receivers", root / "receivers")
    (root / "senders").mkdir()
    profile = {"driver": "ses", "region": "eu-west-1", "configuration_set": "tlslab-require",
               "from_address": "tlslab@lab.test", "observe_timeout_seconds": 0.5,
               "credentials_env": {"access_key_id": "LAB_SES_KEY",
                                   "secret_access_key": "LAB_SES_SECRET"}}  # fmt: skip
    (root / "senders" / "ses-test.yaml").write_text(json.dumps(profile))
    (root / "suites").mkdir()
    suite = {"receivers": ["tls12"], "senders": ["ses-test"],
             "cells": {"tls12": {"ses-test": {"outcome": "delivered"}}}}  # fmt: skip
    (root / "suites" / "ses.yaml").write_text(yaml.safe_dump(suite))
    reports = tmp_path / "reports"
    with mock_aws():
        client = boto3.client("sesv2", region_name="eu-west-1",
                              aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)  # fmt: skip
        client.create_email_identity(EmailIdentity="lab.test")
        suite_path = str(root / "suites" / "ses.yaml")
        status = cli.main(["run", "--suite", suite_path, "--jobs", "1", "--reports", str(reports),
                           "--certs", str(tmp_path / "c")])  # fmt: skip
    out = capsys.readouterr()
    assert status == 1, out  # not observed: moto delivers nothing
    (cell,) = json.loads((reports / "latest" / "results.json").read_text())["results"]
    assert cell["sender_report"].startswith("submitted: SES accepted it (MessageId 0102-")
    assert REDACTED in cell["sender_report"]
    written = [p.read_text("utf-8", "replace") for p in reports.rglob("*") if p.is_file()]
    assert len(written) >= 4
    for text in [out.out, out.err, *written]:
        for form in [*forms(KEY_ID, SECRET), KEY_ID]:
            assert form not in text
