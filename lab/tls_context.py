"""Server TLS contexts for a receiver state: versions, ciphers, and a certificate chosen by SNI."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.spec import CertState, ReceiverSpec

LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
# OpenSSL refuses to load these leaves at its default security level (key or digest too weak)
LEVEL_0_CERTIFICATES = frozenset({CertState.WEAK_KEY, CertState.SHA1_SIGNATURE})
SniCallback = Callable[[Any, str | None, ssl.SSLContext], None]


def server_context(spec: ReceiverSpec, cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Return a server context with the spec's versions and ciphers and one certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = spec.tls_min.ssl_version
    context.maximum_version = spec.tls_max.ssl_version
    if spec.ciphers is not None:
        context.set_ciphers(spec.ciphers)
    elif spec.tls_min.is_legacy or spec.certificate in LEVEL_0_CERTIFICATES:
        context.set_ciphers(LEGACY_CIPHERS)
    context.load_cert_chain(cert_path, key_path)
    return context


def switch_on_sni(mx_host: str, named: ssl.SSLContext, remember: SniCallback) -> SniCallback:
    """Return an SNI callback that calls `remember`, then moves to `named` if SNI is mx_host."""

    def switch(ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        remember(ssl_object, server_name, context)
        if server_name is not None and server_name.lower() == mx_host:
            ssl_object.context = named

    return switch
