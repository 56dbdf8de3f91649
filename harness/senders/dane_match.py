"""Match a server's certificate chain against TLSA records the way RFC 7672 section 3 says."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

DANE_TA, DANE_EE = 2, 3  # the usages RFC 7672 section 3.1 allows for SMTP
SELECTORS, MATCHINGS = (0, 1), (0, 1, 2)


@dataclasses.dataclass(frozen=True)
class Tlsa:
    """One TLSA record: usage, selector, matching type and association data."""

    usage: int
    selector: int
    matching: int
    data: bytes

    @classmethod
    def parse(cls, text: str) -> Tlsa:
        """Parse presentation form `3 1 1 <hex>`; raise ValueError on anything else."""
        usage, selector, matching, *data = text.split()
        return cls(int(usage), int(selector), int(matching), bytes.fromhex("".join(data)))

    @property
    def usable(self) -> bool:
        """Return True for DANE-TA(2) / DANE-EE(3) with a known selector and matching type."""
        return (
            self.usage in (DANE_TA, DANE_EE)
            and self.selector in SELECTORS
            and self.matching in MATCHINGS
        )

    def label(self) -> str:
        """Return `usage selector matching` (how the account names the record)."""
        return f"{self.usage} {self.selector} {self.matching}"

    def matches(self, cert: x509.Certificate) -> bool:
        """Return True when this record's data is the certificate's (selector, matching)."""
        if self.selector == 0:
            content = cert.public_bytes(serialization.Encoding.DER)
        else:
            content = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        if self.matching == 1:
            content = hashlib.sha256(content).digest()
        elif self.matching == 2:
            content = hashlib.sha512(content).digest()
        return content == self.data


@dataclasses.dataclass(frozen=True)
class Authentication:
    """The result of DANE authentication: whether it passed and the reason."""

    ok: bool
    reason: str


def authenticate(chain_der: list[bytes], mx_host: str, records: list[Tlsa]) -> Authentication:
    """Authenticate a presented chain (leaf first) against the usable TLSA records.

    DANE-EE(3) matches the leaf alone, without name or date checks (RFC 7672 section 3.1.1).
    DANE-TA(2) matches a certificate the server sent as trust anchor, then requires a valid
    path from the leaf to it with the MX host name in the leaf (sections 3.1.2 and 3.2).
    """
    if not chain_der:
        return Authentication(False, "the server sent no certificate")
    chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    leaf, tried = chain[0], []
    for record in (r for r in records if r.usable):
        tried.append(record.label())
        if record.usage == DANE_EE and record.matches(leaf):
            return Authentication(True, f"TLSA {record.label()} matches the server's certificate")
        if record.usage != DANE_TA:
            continue
        for anchor in chain[1:]:
            if not record.matches(anchor):
                continue
            problem = _path_problem(leaf, chain[1:], anchor, mx_host)
            if problem is None:
                subject = anchor.subject.rfc4514_string()
                return Authentication(
                    True, f"TLSA {record.label()} matches the trust anchor {subject}; "
                    f"path and name {mx_host} verified",
                )  # fmt: skip
            return Authentication(
                False, f"TLSA {record.label()} matches a trust anchor, but {problem}"
            )
    return Authentication(
        False, f"no usable TLSA record ({', '.join(tried)}) matches the presented chain"
    )


def _path_problem(
    leaf: x509.Certificate, sent: list[x509.Certificate], anchor: x509.Certificate, host: str
) -> str | None:
    """Return why the leaf does not chain to `anchor` for `host` (dates, name), or None."""
    verifier = (
        PolicyBuilder()
        .store(Store([anchor]))
        .time(datetime.datetime.now(datetime.UTC))
        .build_server_verifier(x509.DNSName(host))
    )
    try:
        verifier.verify(leaf, [c for c in sent if c != anchor])
    except VerificationError as error:
        return f"the certificate does not verify for {host}: {error}"
    return None


def pkix_problem(chain_der: list[bytes], ca_pem: bytes, host: str) -> str | None:
    """Return why the chain does not verify against the CA for `host` (MTA-STS), or None."""
    if not chain_der:
        return "the server sent no certificate"
    chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    anchor = x509.load_pem_x509_certificate(ca_pem)
    return _path_problem(chain[0], chain[1:], anchor, host)
