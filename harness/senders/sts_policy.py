"""RFC 8461 (MTA-STS) rules as pure functions: TXT record, policy parsing, MX matching, decision.

The typed API a sender driver calls (discovery and fetching are in `harness.senders.sts_fetch`):

- `StsClient(...).lookup(domain) -> StsLookup`: what the sender knows of the domain's policy:
  the `_mta-sts` TXT record seen, the policy fetched (or cached), or why there is none.
- `decide(lookup, mx_host) -> MxDecision`: per MX host, one of
  `Requirement.AUTHENTICATED` (enforce, MX matched: deliver only over TLS with a certificate valid
  for the MX host and chaining to a trusted CA, else not to this MX and the message waits),
  `Requirement.SKIP` (enforce, MX not matched by any `mx:` pattern: never deliver to this MX),
  `Requirement.OPPORTUNISTIC` (testing, none, or no policy: deliver as without MTA-STS; in
  testing mode `report` says what an enforce policy would have refused).
- `StsLookup.policy_strings` are the policy's lines as RFC 8460 `policy-string` wants them.
"""

from __future__ import annotations

import dataclasses
import enum
import re

from lab.sts_spec import StsMode

MAX_AGE_LIMIT = 31_557_600  # RFC 8461 section 3.2
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_PATTERN = re.compile(rf"^(\*\.)?({_LABEL}\.)*{_LABEL}$")


class StsPolicyError(ValueError):
    """A policy file that RFC 8461 section 3.2 does not accept (the reason is the message)."""


@dataclasses.dataclass(frozen=True)
class StsPolicy:
    """A parsed policy: mode, mx patterns (lower case), max_age and its lines as served."""

    mode: StsMode
    mx: tuple[str, ...]
    max_age: int
    lines: tuple[str, ...]


class Requirement(enum.StrEnum):
    """What MTA-STS requires of delivery to one MX host."""

    AUTHENTICATED = "authenticated"
    SKIP = "skip"
    OPPORTUNISTIC = "opportunistic"


@dataclasses.dataclass(frozen=True)
class StsLookup:
    """What a sender knows of a domain's MTA-STS: TXT seen, policy applied or why none."""

    domain: str
    txt: str | None  # the v=STSv1 record as seen, None when there was none
    txt_id: str | None
    policy: StsPolicy | None
    reason: str  # how the policy was obtained, or why there is none
    cached: bool = False

    @property
    def policy_strings(self) -> tuple[str, ...]:
        """Return the policy's lines (RFC 8460 policy-string), () without a policy."""
        return self.policy.lines if self.policy is not None else ()


@dataclasses.dataclass(frozen=True)
class MxDecision:
    """The requirement for one MX host and the reason, as the sender's account says it."""

    mx_host: str
    requirement: Requirement
    reason: str
    report: bool = False  # testing mode: a failure is reported, not enforced


def parse_txt(records: list[str]) -> tuple[str | None, str | None]:
    """Return (record, id) of the one `v=STSv1` TXT record; (None, None) for none or several.

    RFC 8461 3.1: records not starting with `v=STSv1;` are ignored; more than one STS record,
    or one without a valid `id`, means no policy is discovered.
    """
    candidates = [r for r in records if re.match(r"^v=STSv1\s*;", r)]
    if len(candidates) != 1:
        return None, None
    fields = [f.strip() for f in candidates[0].split(";")[1:] if f.strip()]
    ids = [f.partition("=")[2].strip() for f in fields if f.partition("=")[0].strip() == "id"]
    if len(ids) != 1 or not _ID.match(ids[0]):
        return candidates[0], None
    return candidates[0], ids[0]


def parse_policy(text: str) -> StsPolicy:
    """Parse a policy file body; raise StsPolicyError naming the first problem.

    Lines end in LF or CRLF; `version: STSv1`, `mode`, `max_age` once each and at least one `mx`
    unless mode is none; unknown keys are ignored (RFC 8461 3.2).
    """
    lines = [line.rstrip("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    seen: dict[str, list[str]] = {}
    for number, line in enumerate(lines, 1):
        key, colon, value = line.partition(":")
        if not colon or not re.fullmatch(r"[A-Za-z0-9_]+", key.strip()):
            raise StsPolicyError(f"line {number} is not 'key: value': {line[:60]!r}")
        seen.setdefault(key.strip(), []).append(value.strip())
    for key in ("version", "mode", "max_age"):
        if len(seen.get(key, [])) != 1:
            raise StsPolicyError(f"'{key}' must appear exactly once")
    if seen["version"][0] != "STSv1":
        raise StsPolicyError(f"version is {seen['version'][0]!r}, not STSv1")
    try:
        mode = StsMode(seen["mode"][0])
    except ValueError:
        raise StsPolicyError(f"mode {seen['mode'][0]!r} is not enforce, testing or none") from None
    age = seen["max_age"][0]
    if not age.isdigit() or len(age) > 10 or int(age) > MAX_AGE_LIMIT:
        raise StsPolicyError(f"max_age {age!r} is not a whole number up to {MAX_AGE_LIMIT}")
    patterns = tuple(p.lower().rstrip(".") for p in seen.get("mx", []))
    bad = [p for p in patterns if not _PATTERN.match(p)]
    if bad:
        raise StsPolicyError(f"mx pattern {bad[0]!r} is not a host name or *.wildcard")
    if not patterns and mode is not StsMode.NONE:
        raise StsPolicyError(f"mode {mode.value} needs at least one mx pattern")
    return StsPolicy(mode, patterns, int(age), tuple(lines))


def mx_matches(pattern: str, mx_host: str) -> bool:
    """Return True when `mx_host` matches one policy `mx` pattern (RFC 8461 4.1).

    A wildcard `*.example.com` matches exactly one extra left-most label; comparison ignores
    case and a trailing dot.
    """
    host = mx_host.lower().rstrip(".")
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return host == pattern


def decide(lookup: StsLookup, mx_host: str) -> MxDecision:
    """Return what MTA-STS requires for delivering to `mx_host` under `lookup`."""
    policy = lookup.policy
    if policy is None or policy.mode is StsMode.NONE:
        why = lookup.reason if policy is None else "policy mode none"
        return MxDecision(mx_host, Requirement.OPPORTUNISTIC, f"no MTA-STS policy applies ({why})")
    matched = next((p for p in policy.mx if mx_matches(p, mx_host)), None)
    listed = ", ".join(policy.mx)
    if policy.mode is StsMode.TESTING:
        state = f"matched by {matched}" if matched else f"not matched by {listed}"
        return MxDecision(
            mx_host, Requirement.OPPORTUNISTIC,
            f"MTA-STS testing: {mx_host} {state}; failures are reported, not enforced",
            report=True,
        )  # fmt: skip
    if matched is None:
        return MxDecision(
            mx_host, Requirement.SKIP, f"MTA-STS enforce: {mx_host} not matched by mx {listed}"
        )
    return MxDecision(
        mx_host, Requirement.AUTHENTICATED,
        f"MTA-STS enforce: {mx_host} matched by {matched}; TLS with a valid certificate required",
    )  # fmt: skip
