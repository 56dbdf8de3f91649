"""The ses driver: Amazon SES API v2 `SendEmail` through one configuration set (boto3, lazily).

SES is a sender the lab cannot look inside: a successful call only means SES accepted the message
(`submitted`); the runner then watches the receiver and the lab's bounce mailbox. Credentials come
only from the environment variables the profile names; their values never enter a report.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from harness.model import CredentialsEnv, SesSenderProfile
from harness.senders.base import SendAction, SendReport, TestMessage
from harness.senders.redaction import Redactor, redact
from lab.backends.base import BackendError

# API errors that mean SES itself declined the message (the sender refused it). Anything else
# (unknown configuration set, bad credentials, throttling, no network) is the lab's problem.
REFUSING_CODES = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "AccountSuspendedException",
        "SendingPausedException",
    }
)
TOKEN_HEADER = b"X-TLSLab-Message-ID"
INSTALL_HINT = "install the SES extra: .venv/bin/pip install -e '.[ses]'"


def _boto3() -> Any:
    """Import boto3, or raise BackendError saying how to install it."""
    try:
        import boto3
    except ImportError:
        raise BackendError(
            "the ses driver needs boto3, which is not installed", INSTALL_HINT
        ) from None
    return boto3


def credentials_from_env(
    names: CredentialsEnv, where: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Return boto3's credential arguments read from the named variables; name a missing one."""
    env = os.environ if environ is None else environ
    wanted = {
        "aws_access_key_id": ("access_key_id", names.access_key_id),
        "aws_secret_access_key": ("secret_access_key", names.secret_access_key),
    }
    found: dict[str, str] = {}
    for argument, (field, variable) in wanted.items():
        value = env.get(variable, "")
        if not value:
            raise BackendError(
                f"{where}: field 'credentials_env.{field}': environment variable {variable} "
                "is not set",
                f"export {variable}=... (an IAM key allowed ses:SendEmail), or name another "
                f"variable in credentials_env.{field}",
            )
        found[argument] = value
    if names.session_token and env.get(names.session_token):
        found["aws_session_token"] = env[names.session_token]
    return found


def sesv2_client(region: str, credentials: Mapping[str, str]) -> Any:
    """Return a boto3 SES v2 client built only from these credentials (no profile, no IMDS)."""
    boto3 = _boto3()
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.session.Session(region_name=region, **credentials)
        return session.client("sesv2")
    except BotoCoreError as error:
        reason = redact(str(error), credentials)
        raise BackendError(f"cannot create an SES client for {region}: {reason}") from None


def with_headers(data: bytes, from_address: str, message_id: str) -> bytes:
    """Return the message with From set to the verified identity and the lab's token header."""
    # SES sends only from verified identities and may replace Message-ID: the token header carries
    # the lab's Message-ID to the receiver (and into bounces that quote the headers).
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = [line for line in head.split(b"\r\n") if not re.match(rb"(?i)from:", line)]
    lines.insert(0, b"From: Sender TLS Lab <" + from_address.encode() + b">")
    lines.append(TOKEN_HEADER + b": " + message_id.encode())
    return b"\r\n".join(lines) + (sep or b"\r\n\r\n") + body


def send_request(profile: SesSenderProfile, message: TestMessage) -> dict[str, Any]:
    """Return the keyword arguments of `sesv2.send_email` for one test message."""
    request: dict[str, Any] = {
        "FromEmailAddress": profile.from_address,
        "Destination": {"ToAddresses": [message.rcpt]},
        "Content": {
            "Raw": {"Data": with_headers(message.data, profile.from_address, message.message_id)}
        },
        "ConfigurationSetName": profile.configuration_set,
    }
    if profile.feedback_to_lab:
        request["FeedbackForwardingEmailAddress"] = message.mail_from
    return request


class SesSender:
    """Submits each test message to Amazon SES with the profile's configuration set."""

    def __init__(
        self,
        profile: SesSenderProfile,
        environ: Mapping[str, str] | None = None,
        client: Any = None,
    ) -> None:
        """Read the credentials now (fail early, naming the variable) and make the client."""
        self.profile, self.id = profile, profile.id
        self.observe_seconds = profile.observe_timeout_seconds
        where = f"sender profile '{profile.id}'"
        self._secrets = credentials_from_env(profile.credentials_env, where, environ)
        self._redact = Redactor.of(self._secrets.values())
        self.client = client if client is not None else sesv2_client(profile.region, self._secrets)

    def send(self, message: TestMessage) -> SendReport:
        """Call SendEmail and return what happened, every credential form redacted."""
        return self._redact.report(self._submit(message))

    def close(self) -> None:
        """Nothing to release: the client holds no open connection between calls."""

    def _submit(self, message: TestMessage) -> SendReport:
        """Call SendEmail; accepted is `submitted`, an SES rejection `refused`, the rest a fault."""
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"configuration set {self.profile.configuration_set} in {self.profile.region}"
        try:
            response = self.client.send_email(**send_request(self.profile, message))
        except ClientError as error:
            info = error.response.get("Error", {})
            code, text = str(info.get("Code", "?")), str(info.get("Message", error))
            reason = self._clean(f"SES API answered {code}: {text} ({where})")
            if code in REFUSING_CODES:
                return SendReport(SendAction.REFUSED, f"submission rejected: {reason}")
            return SendReport(SendAction.FAILED, reason, lab_fault=True)
        except BotoCoreError as error:
            reason = self._clean(f"cannot reach SES: {error}")
            return SendReport(SendAction.FAILED, reason, lab_fault=True)
        return SendReport(
            SendAction.SUBMITTED,
            f"SES accepted it (MessageId {response.get('MessageId', '?')}, {where}); "
            f"the lab watches for up to {self.observe_seconds:g} s",
        )

    def _clean(self, text: str) -> str:
        """Return one line of text with credential values redacted."""
        return self._redact.line(text)
