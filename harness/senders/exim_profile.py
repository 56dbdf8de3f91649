"""The exim driver's sender profile: which smtp transport TLS options differ from stock Exim."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictBool

from harness.model import Id, SenderProfileBase, Text

GNUTLS_PRIORITY = r"^[A-Za-z0-9_.%+!:-]+$"  # no space, `$`, brace or backslash: Exim expands it
GnutlsPriority = Annotated[str, Field(pattern=GNUTLS_PRIORITY, max_length=200)]


class EximSenderProfile(SenderProfileBase):
    """A real Exim (Debian's exim4-daemon-light, GnuTLS, stock TLS defaults) with these knobs."""

    id: Id
    driver: Literal["exim"]
    description: Text = ""
    models: Text = Field(default="", description="the real sender configuration this profile is")
    require_tls: StrictBool = Field(
        default=False, description="hosts_require_tls = * on the smtp transport; false: unset"
    )
    verify: StrictBool = Field(
        default=False,
        description="tls_verify_certificates = the lab CA and tls_verify_hosts = *; false: unset",
    )
    dane: StrictBool = Field(
        default=False,
        description="hosts_try_dane = * with DNSSEC through the lab's validating resolver",
    )
    require_ciphers: GnutlsPriority | None = Field(
        default=None,
        description="tls_require_ciphers, a GnuTLS priority string; unset: GnuTLS' default",
    )
