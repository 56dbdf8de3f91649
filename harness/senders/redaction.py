"""Keep credentials out of reports: every form a secret takes on the wire or in an error text."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping

from harness.senders.base import SendReport

REDACTED = "[redacted]"
MIN_ENCODED = 4  # shorter encoded forms would redact ordinary text; the raw value always counts


def _base64_cores(secret: bytes) -> set[str]:
    """Return the base64 characters that encode `secret` inside any longer base64 text.

    Whatever precedes the secret shifts it by 0, 1 or 2 bytes within a 3-byte group; for each
    shift, the characters that depend on the secret's bits only are the same in every encoding
    (the one or two characters at each edge mix in neighbouring bits and carry under a byte).
    """
    cores = set()
    for shift in range(3):
        encoded = base64.b64encode(bytes(shift) + secret).decode()
        first = -(-8 * shift // 6)  # the first character made of the secret's bits alone
        last = (8 * (shift + len(secret))) // 6  # one past the last such character
        cores.add(encoded[first:last])
    return cores


def encodings(secret: str) -> set[str]:
    """Return the forms of `secret` to redact: raw, escaped, percent-encoded, hex and base64."""
    raw = secret.encode("utf-8", "surrogateescape")
    forms = {
        repr(secret)[1:-1],
        repr(raw)[2:-1],
        json.dumps(secret)[1:-1],
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret, safe=""),
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode(),  # AUTH LOGIN's answer
        base64.b64encode(raw).decode().rstrip("="),
    }
    for core in _base64_cores(raw):
        forms |= {core, core.replace("+", "-").replace("/", "_")}  # standard and URL-safe
    return {form for form in forms if len(form) >= MIN_ENCODED} | {secret}


def auth_plain(user: str, password: str) -> set[str]:
    """Return the base64 AUTH PLAIN responses for a login (with and without an authzid)."""
    encoded = (user.encode(), password.encode())
    blobs = [b"\0%s\0%s" % encoded, b"%s\0%s\0%s" % (encoded[0], *encoded)]
    return {base64.b64encode(blob).decode() for blob in blobs}


@dataclasses.dataclass(frozen=True)
class Redactor:
    """Replaces every known form of a set of secrets with `[redacted]` (longest form first)."""

    forms: tuple[str, ...]

    @classmethod
    def of(cls, secrets: Iterable[str], login: tuple[str, str] | None = None) -> Redactor:
        """Return a redactor for these secret values and, optionally, a (user, password) login."""
        forms: set[str] = set()
        for secret in secrets:
            if secret:
                forms |= encodings(secret)
        if login is not None:
            forms |= auth_plain(*login)
        return cls(tuple(sorted(forms, key=lambda form: (-len(form), form))))

    def __call__(self, text: str) -> str:
        """Return `text` with every form of every secret replaced."""
        if not self.forms:
            return text
        pattern = "|".join(re.escape(form) for form in self.forms)
        return re.sub(pattern, REDACTED, text)

    def line(self, text: str) -> str:
        """Return `text` redacted and on one line (secrets split by whitespace count too)."""
        return self(" ".join(self(text).split()))

    def report(self, report: SendReport) -> SendReport:
        """Return a driver's report with its text redacted (every path: success too)."""
        return dataclasses.replace(report, reason=self.line(report.reason))


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """Return `text` with every form of every credential value replaced by `[redacted]`."""
    return Redactor.of(secrets.values())(text)
