"""Expectations a suite derives from a policy, and every expectation written as one label."""

from __future__ import annotations

import ssl

from harness.model import (
    NOT_DELIVERED,
    CellExpectation,
    ExpectedOutcome,
    Outcome,
    SuitePolicy,
    Verdict,
)
from lab.spec import CertState, ProxyVector, ReceiverSpec, TlsVersion

STRICT_MIN_TLS = TlsVersion.TLS12
# valid for the MX host: wildcard matches it, sni-only serves it to a sender naming the MX host
STRICT_CERTIFICATES = frozenset({CertState.VALID, CertState.WILDCARD, CertState.SNI_ONLY})
NOT_DELIVERED_OUTCOMES = frozenset({Outcome.REFUSED, Outcome.DEFERRED, Outcome.FALLBACK})


# what a man in the middle does that no sender can get TLS with the receiver's own certificate past
MITM_BLOCKS_TLS = {
    ProxyVector.STRIP_STARTTLS: "removes STARTTLS from the EHLO reply",
    ProxyVector.STARTTLS_454: "answers STARTTLS with 454",
    ProxyVector.STARTTLS_501: "answers STARTTLS with 501",
    ProxyVector.STARTTLS_BROKEN: "breaks the TLS handshake",
    ProxyVector.TLS_INTERCEPT: "presents its own self-signed certificate",
}


def unsafe_reason(spec: ReceiverSpec) -> str | None:
    """Return why a receiver is unsafe for `strict` (no TLS >= 1.2, bad certificate), or None."""
    if not spec.starttls:
        return "offers no STARTTLS"
    if spec.tls_max.rank < STRICT_MIN_TLS.rank:
        return f"offers at most {spec.tls_max.value}"
    if spec.certificate not in STRICT_CERTIFICATES:
        return f"{spec.certificate.value} certificate"
    if spec.ciphers is not None and not _encrypts(spec.ciphers):
        return "offers only NULL-encryption suites"
    if spec.proxy is not None and spec.proxy.vector in MITM_BLOCKS_TLS:
        return f"a man in the middle {MITM_BLOCKS_TLS[spec.proxy.vector]}"
    return None


def _encrypts(ciphers: str) -> bool:
    """Return True when the TLS 1.2-and-older suites OpenSSL selects from `ciphers` encrypt."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers(ciphers)
    suites = [s for s in context.get_ciphers() if s["protocol"] != "TLSv1.3"]
    return any(s["symmetric"] is not None for s in suites)


def is_safe(spec: ReceiverSpec) -> bool:
    """Return True when the receiver offers TLS >= 1.2 with a certificate valid for its MX host."""
    return unsafe_reason(spec) is None


def policy_expectation(policy: SuitePolicy, spec: ReceiverSpec) -> CellExpectation:
    """Return the expectation `policy` sets for any sender sending to this receiver."""
    if policy is not SuitePolicy.STRICT:  # pragma: no cover - one policy so far
        raise ValueError(f"unknown policy {policy!r}")
    why = unsafe_reason(spec)
    if why is None:
        return CellExpectation(
            outcome=Outcome.DELIVERED,
            tls=">=TLSv1.2",
            note="strict: a safe receiver must get the message, over TLS >= 1.2",
        )
    return CellExpectation(
        outcome=NOT_DELIVERED,
        note=f"strict: the receiver is not safe ({why}); the message must not be delivered",
    )


def failure_note(expected: CellExpectation, verdict: Verdict) -> str:
    """Return `; note: <the expectation's note>` for a failed cell with a note, else ''."""
    return f"; note: {expected.note}" if verdict is Verdict.FAIL and expected.note else ""


def tls_text(tls: TlsVersion | str | None) -> str | None:
    """Return the TLS part of an expectation as results.json stores it (`TLSv1.2`, `>=TLSv1.2`)."""
    return tls.value if isinstance(tls, TlsVersion) else tls


def expectation_label(outcome: ExpectedOutcome, tls: str | None) -> str:
    """Return `delivered TLSv1.2`, `delivered TLS>=1.2`, `delivered plaintext`, `not delivered`."""
    if outcome == NOT_DELIVERED:
        return "not delivered"
    if outcome != Outcome.DELIVERED or tls is None:
        return str(outcome)
    if tls == "any":
        return "delivered over any TLS"
    if tls.startswith(">=TLSv"):
        return f"delivered TLS>={tls.removeprefix('>=TLSv')}"
    return f"delivered {tls}"


__all__ = [
    "NOT_DELIVERED_OUTCOMES",
    "expectation_label",
    "failure_note",
    "is_safe",
    "policy_expectation",
    "tls_text",
    "unsafe_reason",
]
