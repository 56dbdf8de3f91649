"""Sender profiles name the environment variables that hold secrets and never hold a secret."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.scenarios import DEFAULT_ROOT, load_sender

SENDERS = sorted((DEFAULT_ROOT / "senders").glob("*.yaml"))
ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
KEY_SHAPES = {
    "an AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "a 40-character base64 secret": re.compile(
        r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40}(?![A-Za-z0-9+/])"
    ),
    "a PEM block": re.compile(r"-----BEGIN [A-Z0-9 ]{1,64}-----"),
}
PASTED_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # AWS's documented example secret


def env_values(node: Any, key: str = "") -> list[tuple[str, Any]]:
    """Return (key, value) for every value under a key ending in `_env`, nested mappings too."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for name, value in node.items():
            if str(name).endswith("_env") and isinstance(value, dict):
                found += [(f"{name}.{k}", v) for k, v in value.items()]
            elif str(name).endswith("_env"):
                found.append((str(name), value))
            else:
                found += env_values(value, str(name))
    elif isinstance(node, list):
        for item in node:
            found += env_values(item, key)
    return found


def secret_findings(text: str) -> list[str]:
    """Return what in a profile's text is a secret value or not a variable name, empty if none."""
    findings = [
        f"{field} = {value!r} is not an environment variable name"
        for field, value in env_values(yaml.safe_load(text))
        if not (isinstance(value, str) and ENV_NAME.fullmatch(value))
    ]
    findings += [f"holds {shape}" for shape, pattern in KEY_SHAPES.items() if pattern.search(text)]
    return findings


def test_every_shipped_sender_file_is_checked() -> None:
    names = {path.stem for path in SENDERS}
    assert {"relay-lab", "ses-live-default", "ses-live-require", "ses-default"} <= names
    fields = [
        field for path in SENDERS for field, _ in env_values(yaml.safe_load(path.read_text()))
    ]
    # the relay's two names and SES's three credentials: the walk reaches every kind of *_env
    assert fields.count("username_env") == 1
    assert fields.count("password_env") == 1
    assert fields.count("credentials_env.secret_access_key") == 2


@pytest.mark.parametrize("path", SENDERS, ids=[p.stem for p in SENDERS])
def test_a_sender_file_names_variables_and_holds_no_key(path: Path) -> None:
    load_sender(path)  # a valid profile: unknown fields (a `password:`) would be refused here
    assert secret_findings(path.read_text(encoding="utf-8")) == []


SES_LIVE = (DEFAULT_ROOT / "senders" / "ses-live-default.yaml").read_text(encoding="utf-8")
RELAY = (DEFAULT_ROOT / "senders" / "relay-lab.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "finding"),
    [
        pytest.param(
            SES_LIVE.replace("secret_access_key: AWS_SECRET_ACCESS_KEY",
                             f"secret_access_key: {PASTED_SECRET}"),
            "credentials_env.secret_access_key",
            id="pasted-aws-secret",
        ),
        pytest.param(
            SES_LIVE.replace("access_key_id: AWS_ACCESS_KEY_ID",
                             "access_key_id: AKIAIOSFODNN7EXAMPLE"),
            "an AWS access key id",
            id="pasted-access-key-id",
        ),
        pytest.param(
            RELAY.replace("password_env: LAB_RELAY_PASSWORD", "password_env: hunter2"),
            "password_env = 'hunter2'",
            id="password-instead-of-its-name",
        ),
        pytest.param(
            RELAY + "# -----BEGIN PRIVATE KEY-----\n# MIIEvQIBADANBg\n",
            "a PEM block",
            id="pem-in-a-comment",
        ),
        pytest.param(
            SES_LIVE + f"# secret for later: {PASTED_SECRET}\n",
            "a 40-character base64 secret",
            id="secret-in-a-comment",
        ),
    ],
)  # fmt: skip
def test_a_planted_secret_is_found(text: str, finding: str) -> None:
    assert text not in (SES_LIVE, RELAY)  # the plant took
    findings = secret_findings(text)
    assert any(finding in line for line in findings), findings
