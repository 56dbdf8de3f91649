"""What a client offered in its ClientHello, as session records store it (parsed by client_hello).

Kept apart from the parser, so that reading session records does not import the TLS library.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ClientOffer", "OfferedCipher"]


class OfferedCipher(BaseModel):
    """One cipher suite a client offered: its code point, IANA name and OpenSSL name."""

    model_config = ConfigDict(defer_build=True, frozen=True)

    code: str  # `0x1301`
    iana: str | None = None
    openssl: str | None = None  # None when the local OpenSSL does not know the suite


class ClientOffer(BaseModel):
    """The offer of one ClientHello."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="ignore")

    legacy_version: str
    supported_versions: tuple[str, ...] = ()
    versions: tuple[str, ...]  # what the client offered (see the module docstring)
    cipher_suites: tuple[OfferedCipher, ...] = ()
    groups: tuple[str, ...] = ()
    signature_algorithms: tuple[str, ...] = ()
    sni: str | None = None
    alpn: tuple[str, ...] = ()
    resumption: str | None = None  # `psk`, `ticket` or `session-id` when it tried to resume
    ja4: str
