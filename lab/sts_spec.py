"""MTA-STS of a receiver state (RFC 8461): the policy it publishes and how its policy host fails."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from lab.bounds import within

if TYPE_CHECKING:
    from lab.spec import ReceiverSpec

POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 section 3.2: max_age is at most one year
MxPattern = Annotated[
    str,
    Field(pattern=r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]+$", max_length=253),
]


class StsMode(enum.StrEnum):
    """The `mode` of an MTA-STS policy."""

    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


class PolicyHostDefect(enum.StrEnum):
    """What the policy host `mta-sts.<domain>` does wrong, if anything."""

    NONE = "none"  # 200, text/plain, lab-CA certificate for mta-sts.<domain>
    NOT_FOUND = "not-found"  # 404 for the policy path
    REDIRECT = "redirect"  # 301 to a policy elsewhere (RFC 8461 3.3: must not be followed)
    BAD_CERT = "bad-cert"  # a self-signed certificate for mta-sts.<domain>


class StsSpec(BaseModel):
    """The MTA-STS records and policy a receiver's domain publishes."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    mode: StsMode
    mx: tuple[MxPattern, ...] = Field(
        default=(), max_length=10, description="the policy's mx patterns; empty: the own MX host"
    )
    max_age: Annotated[StrictInt, within(0, MAX_AGE_LIMIT)] = 86_400
    id: str = Field(default="lab1", pattern=r"^[A-Za-z0-9]{1,32}$")  # the TXT record's id
    policy_host: PolicyHostDefect = PolicyHostDefect.NONE
    tlsrpt: str | None = Field(
        default="mailto:tlsrpt@lab.test", pattern=r"^(mailto:|https://)\S+$", max_length=200
    )  # the _smtp._tls rua; None: no TLS-RPT record


def policy_host(domain: str) -> str:
    """Return the policy host name of a domain: `mta-sts.<domain>`."""
    return f"mta-sts.{domain}"


def txt_record(sts: StsSpec) -> str:
    """Return the `_mta-sts` TXT record text: `v=STSv1; id=<id>`."""
    return f"v=STSv1; id={sts.id}"


def tlsrpt_record(sts: StsSpec) -> str | None:
    """Return the `_smtp._tls` TXT record text (RFC 8460), or None when none is published."""
    return None if sts.tlsrpt is None else f"v=TLSRPTv1; rua={sts.tlsrpt}"


def policy_patterns(sts: StsSpec, own_mx: str) -> tuple[str, ...]:
    """Return the policy's mx patterns: the spec's, or the receiver's own MX host."""
    return sts.mx or (own_mx,)


def policy_text(sts: StsSpec, own_mx: str) -> str:
    """Return the policy file body (RFC 8461 section 3.2), CRLF line endings."""
    lines = ["version: STSv1", f"mode: {sts.mode.value}"]
    lines += [f"mx: {pattern}" for pattern in policy_patterns(sts, own_mx)]
    lines.append(f"max_age: {sts.max_age}")
    return "".join(line + "\r\n" for line in lines)


def published_sts(spec: ReceiverSpec) -> dict[str, Any]:
    """Return what a spec publishes for MTA-STS as report fields (policy, TXT, policy lines)."""
    sts = spec.sts
    if sts is None:
        return {}
    served = sts.policy_host is PolicyHostDefect.NONE
    lines = tuple(policy_text(sts, spec.mx_host).split("\r\n")[:-1])
    return {
        "policy": "sts" if served and sts.mode is not StsMode.NONE else "no-policy-found",
        "policy_txt": txt_record(sts),
        "policy_strings": lines if served else (),
        "policy_host": _HOST_SERVES[sts.policy_host],
    }


_HOST_SERVES = {
    PolicyHostDefect.NONE: "200 text/plain, lab-CA certificate",
    PolicyHostDefect.NOT_FOUND: "404 for the policy path",
    PolicyHostDefect.REDIRECT: "301 to another path (which serves the policy)",
    PolicyHostDefect.BAD_CERT: "the policy, with a self-signed certificate",
}
