"""`tlslab ses setup`: create or check the two SES configuration sets of the study (TLS policy)."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from pydantic import ValidationError

from harness.model import CredentialsEnv
from harness.senders.redaction import redact
from harness.senders.ses import credentials_from_env, sesv2_client
from lab.backends.base import BackendError

POLICIES = (("optional", "OPTIONAL"), ("require", "REQUIRE"))
DEFAULT_POLICY = "OPTIONAL"  # what SES applies when a configuration set names no TlsPolicy
KEPT_OPTIONS = ("SendingPoolName", "MaxDeliverySeconds", "SharedPoolDeliveryMode")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+")
PREFIX = re.compile(r"[A-Za-z0-9_-]{1,55}")
DEFAULT_ENV = "AWS_ACCESS_KEY_ID,AWS_SECRET_ACCESS_KEY,AWS_SESSION_TOKEN"


def register(sub: Any) -> None:
    """Add `tlslab ses setup` to the command's sub-parsers."""
    ses = sub.add_parser("ses", help="Amazon SES helpers (needs the `ses` extra)")
    verbs = ses.add_subparsers(required=True, metavar="VERB")
    setup = verbs.add_parser(
        "setup", help="create or check configuration sets <prefix>-optional and <prefix>-require"
    )
    setup.add_argument("--region", required=True, help="AWS region, e.g. eu-west-1")
    setup.add_argument("--prefix", default="tlslab", help="configuration set prefix (tlslab)")
    setup.add_argument(
        "--max-delivery-seconds",
        type=int,
        help="also set how long SES retries (300-50400 s), so a drop bounces sooner",
    )
    setup.add_argument(
        "--credentials-env",
        default=DEFAULT_ENV,
        help=f"names of the key id, secret and optional token variables ({DEFAULT_ENV})",
    )
    setup.set_defaults(handler=cmd_ses_setup)


def _usage(option: str, value: object, problem: str, fix: str) -> BackendError:
    """Return a one-line usage error naming the option, its value and the fix."""
    return BackendError(f"option {option} {value!r}: {problem}", fix)


def _credentials_env(text: str) -> CredentialsEnv:
    """Parse `KEY_VAR,SECRET_VAR[,TOKEN_VAR]` into CredentialsEnv."""
    names = [n.strip() for n in text.split(",")]
    if len(names) not in (2, 3):
        raise _usage("--credentials-env", text, "expected 2 or 3 names", f"e.g. {DEFAULT_ENV}")
    try:
        return CredentialsEnv(
            access_key_id=names[0],
            secret_access_key=names[1],
            session_token=names[2] if len(names) == 3 else None,
        )
    except ValidationError:
        raise _usage(
            "--credentials-env", text, "not environment variable names", f"e.g. {DEFAULT_ENV}"
        ) from None


def ensure_configuration_set(
    client: Any, name: str, policy: str, max_delivery_seconds: int | None = None
) -> str:
    """Create, check or fix one configuration set; return what was done, as one line."""
    from botocore.exceptions import ClientError

    want: dict[str, Any] = {"TlsPolicy": policy}
    if max_delivery_seconds is not None:
        want["MaxDeliverySeconds"] = max_delivery_seconds
    try:
        current = client.get_configuration_set(ConfigurationSetName=name)
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NotFoundException":
            raise
        client.create_configuration_set(ConfigurationSetName=name, DeliveryOptions=want)
        return f"{name}: created ({_describe(want)})"
    options = dict(current.get("DeliveryOptions") or {})
    have = {key: options.get(key, DEFAULT_POLICY if key == "TlsPolicy" else None) for key in want}
    if have == want:
        return f"{name}: already correct ({_describe(want)})"
    kept = {key: options[key] for key in KEPT_OPTIONS if key in options}
    client.put_configuration_set_delivery_options(ConfigurationSetName=name, **{**kept, **want})
    return f"{name}: fixed ({_describe(have)} -> {_describe(want)})"


def _describe(options: dict[str, Any]) -> str:
    """Return delivery options as `TlsPolicy REQUIRE, MaxDeliverySeconds 300`."""
    return ", ".join(f"{key} {value}" for key, value in options.items())


def cmd_ses_setup(args: argparse.Namespace) -> int:
    """Create or check `<prefix>-optional` and `<prefix>-require`, one line per set."""
    if not REGION.fullmatch(args.region):
        raise _usage("--region", args.region, "not an AWS region", "e.g. --region eu-west-1")
    if not PREFIX.fullmatch(args.prefix):
        raise _usage("--prefix", args.prefix, "not a configuration set prefix",
                     "use letters, digits, '-' and '_' (at most 55)")  # fmt: skip
    seconds = args.max_delivery_seconds
    if seconds is not None and not 300 <= seconds <= 50400:
        raise _usage("--max-delivery-seconds", seconds, "out of range", "use 300 to 50400")
    names = _credentials_env(args.credentials_env)
    secrets = credentials_from_env(names, "tlslab ses setup (--credentials-env)")
    client = sesv2_client(args.region, secrets)
    from botocore.exceptions import BotoCoreError, ClientError  # present once boto3 is

    print(f"Amazon SES configuration sets in {args.region}:")
    for suffix, policy in POLICIES:
        name = f"{args.prefix}-{suffix}"
        try:
            print(f"  {ensure_configuration_set(client, name, policy, seconds)}", flush=True)
        except (ClientError, BotoCoreError) as error:
            print(f"tlslab: ses setup: {name}: {redact(str(error), secrets)}", file=sys.stderr)
            return 1
    print(
        f"Done. Name them in a ses sender profile: `configuration_set: {args.prefix}-optional` "
        f"or `{args.prefix}-require` (see scenarios/senders/ses-live-*.yaml)."
    )
    return 0
