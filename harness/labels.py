"""Every word a report uses for a cell: outcome, expectation, risk class and match mark."""

from __future__ import annotations

from harness.evidence import UNKNOWN_CIPHER
from harness.expectations import expectation_label
from harness.model import CellResult, Outcome, ReceiverInfo, Risk, TlsFacts, Verdict
from lab.spec import CertState, TlsVersion

NOT_RUN = "not run"
# Markdown marks (emoji); the HTML page uses text glyphs every common font carries
MARKS = {Verdict.PASS: "✅", Verdict.FAIL: "❌", Verdict.ERROR: "⚠️"}
HTML_MARKS = {Verdict.PASS: "✓", Verdict.FAIL: "✗", Verdict.ERROR: "⚠"}
TEXT_MARKS = {Verdict.PASS: "pass", Verdict.FAIL: "FAIL", Verdict.ERROR: "ERROR"}  # the terminal
MATCH = {
    Verdict.PASS: "as expected",
    Verdict.FAIL: "differs from expectation",
    Verdict.ERROR: "not judged (lab error)",
}
MATCH_LEGEND = {
    Verdict.PASS: "the observation matched the suite's expectation (it says nothing about safety)",
    Verdict.FAIL: "the observation differs from the suite's expectation, shown on the cell",
    Verdict.ERROR: "the lab failed, so the cell is not judged and not the sender's fault",
}
# risk class -> (name shown on the cell and in the legend, Markdown swatch, what it means)
RISK_SCALE: dict[Risk, tuple[str, str, str]] = {
    Risk.VERIFIED: (
        "TLS ≥ 1.2, authenticated receiver", "🟩",
        "delivered over TLS 1.2 or newer to a receiver whose certificate a verifying sender "
        "accepts",
    ),
    Risk.UNVERIFIED: (
        "TLS, certificate not verified", "🟧",
        "delivered over TLS to a receiver whose certificate no verifying sender accepts "
        "(self-signed, expired, wrong host, untrusted CA): anyone in the path could read it",
    ),
    Risk.LEGACY: (
        "legacy TLS 1.0/1.1", "🟨",
        "delivered over TLS 1.0 or 1.1, retired by the IETF in 2021 (RFC 8996)",
    ),
    Risk.DOWNGRADED: (
        "downgraded to plaintext", "🟪",
        "delivered in plaintext although the receiver offered STARTTLS or TLS was attempted",
    ),
    Risk.PLAINTEXT: (
        "plaintext", "🟥", "delivered in plaintext to a receiver that offers no TLS",
    ),
    Risk.NOT_DELIVERED: (
        "not delivered", "🟦",
        "not delivered: refused, deferred or sent to a fallback (e.g. a secure portal)",
    ),
    Risk.NOT_OBSERVED: (
        "not observed", "⬜", "neither the message nor a bounce arrived in time",
    ),
    Risk.ERROR: (
        "lab error", "⬛", "the lab failed; this says nothing about the sender",
    ),
}  # fmt: skip
CERTIFICATE_WORDS = {
    CertState.SELF_SIGNED: "a self-signed certificate",
    CertState.EXPIRED: "an expired certificate",
    CertState.MISMATCHED: "a certificate for another host",
    CertState.UNTRUSTED_CA: "a certificate from an untrusted CA",
}
UNSAFE_RISKS = frozenset(
    {Risk.UNVERIFIED, Risk.LEGACY, Risk.DOWNGRADED, Risk.PLAINTEXT, Risk.NOT_OBSERVED}
)


def facts_text(facts: TlsFacts | None) -> str:
    """Return `TLSv1.2 ECDHE-RSA-AES256-GCM-SHA384 (256 bits)`, or `plaintext`."""
    if facts is None:
        return "plaintext"
    if facts.cipher == UNKNOWN_CIPHER:
        return f"{facts.version.value} (cipher not stated)"
    bits = f" ({facts.bits} bits)" if facts.bits else ""
    return f"{facts.version.value} {facts.cipher}{bits}"


def expected_label(cell: CellResult) -> str:
    """Return the expectation as text: `refused`, `delivered TLSv1.2`, `not delivered`, ..."""
    return expectation_label(cell.expected, cell.expected_tls)


def tls_label(cell: CellResult) -> str:
    """Return a delivery's TLS version, or `plaintext`."""
    return cell.tls.version.value if cell.tls else "plaintext"


def outcome_label(cell: CellResult) -> str:
    """Return the observed outcome as text: `delivered TLSv1.3`, `delivered plaintext`, ..."""
    if cell.outcome is Outcome.DELIVERED:
        return f"delivered {cell.tls.version.value if cell.tls else 'plaintext'}"
    return str(cell.outcome.value)


def _tls_was_tried(cell: CellResult, info: ReceiverInfo | None) -> bool:
    """Return True when the receiver offered STARTTLS or a session of the cell asked for it."""
    return any(s.starttls for s in cell.sessions) or (info is not None and info.starttls)


def risk_of(cell: CellResult, info: ReceiverInfo | None) -> Risk:
    """Return the risk class of a cell from its outcome, TLS facts and the receiver's facts.

    Without the receiver's facts a TLS delivery is never called authenticated.
    """
    if cell.outcome is Outcome.ERROR:
        return Risk.ERROR
    if cell.outcome is Outcome.NOT_OBSERVED:
        return Risk.NOT_OBSERVED
    if cell.outcome is not Outcome.DELIVERED:
        return Risk.NOT_DELIVERED
    if cell.tls is None:
        tried = cell.downgraded or _tls_was_tried(cell, info)
        return Risk.DOWNGRADED if tried else Risk.PLAINTEXT
    if info is None or not info.authenticated_for(any(s.sni for s in cell.sessions)):
        return Risk.UNVERIFIED
    if cell.tls.version.rank < TlsVersion.TLS12.rank:
        return Risk.LEGACY
    return Risk.VERIFIED


def risk_name(risk: Risk) -> str:
    """Return the short name of a risk class, as the cell and the legend show it."""
    return RISK_SCALE[risk][0]


def risk_swatch(risk: Risk) -> str:
    """Return the Markdown swatch (a coloured square) of a risk class."""
    return RISK_SCALE[risk][1]


def risk_words(cell: CellResult, info: ReceiverInfo | None) -> str:
    """Return what the delivery means, in words: `accepted an expired certificate — ...`."""
    risk = risk_of(cell, info)
    version = cell.tls.version.value if cell.tls else ""
    if risk is Risk.VERIFIED:
        return f"{version} to an authenticated receiver"
    if risk is Risk.UNVERIFIED:
        if info is None:
            return f"{version}; receiver's certificate not recorded, so not known to be verified"
        what = CERTIFICATE_WORDS.get(info.certificate, f"a {info.certificate.value} certificate")
        return f"accepted {what} over {version} — no verification"
    if risk is Risk.LEGACY:
        return f"legacy {version}, retired in 2021 (RFC 8996)"
    if risk is Risk.DOWNGRADED:
        if any(s.starttls for s in cell.sessions):
            return "plaintext after a STARTTLS attempt"
        return "plaintext although the receiver offers STARTTLS"
    if risk is Risk.PLAINTEXT:
        return "plaintext: the receiver offers no TLS" if info else "plaintext"
    if risk is Risk.NOT_DELIVERED:
        return f"not delivered ({cell.outcome.value})"
    return risk_name(risk)


def match_label(cell: CellResult) -> str:
    """Return the match mark in words: `as expected`, `differs from expectation`, ..."""
    return MATCH[cell.verdict]


def match_text(cell: CellResult, marks: dict[Verdict, str] = MARKS) -> str:
    """Return `✅ as expected (expected delivered TLSv1.3)`: the mark with the expectation."""
    return f"{marks[cell.verdict]} {MATCH[cell.verdict]} (expected {expected_label(cell)})"


__all__ = [
    "HTML_MARKS",
    "MARKS",
    "MATCH",
    "NOT_RUN",
    "RISK_SCALE",
    "TEXT_MARKS",
    "expected_label",
    "facts_text",
    "match_label",
    "match_text",
    "outcome_label",
    "risk_name",
    "risk_of",
    "risk_words",
    "tls_label",
]
