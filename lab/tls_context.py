"""A receiver's server TLS context: versions, ciphers, a certificate chosen by SNI, logged."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.cert_key import postfix_server_key
from lab.spec import CertState, ReceiverSpec
from lab.tls_observe import observe_handshakes

__all__ = ["LEGACY_CIPHERS", "LabTLSContext", "build_tls_context"]

LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
# OpenSSL refuses to load these leaves at its default security level (key or digest too weak)
LEVEL_0_CERTIFICATES = frozenset({CertState.WEAK_KEY, CertState.SHA1_SIGNATURE})
SniCallback = Callable[[Any, str | None, ssl.SSLContext], None]


class LabTLSContext(ssl.SSLContext):
    """A server context that knows how Postfix names its key, e.g. `RSA-PSS (2048 bits)`."""

    server_key: str | None = None


def build_tls_context(
    spec: ReceiverSpec, cert_path: Path, key_path: Path, no_sni: tuple[Path, Path] | None = None
) -> LabTLSContext:
    """Return a server context offering exactly the spec's TLS versions and ciphers.

    With a `no_sni` (cert, key) pair, that pair is what a client gets unless it names the MX
    host in SNI; only then does the handshake switch to the certificate at cert_path.
    """
    context = _server_context(spec, cert_path, key_path)
    context.sni_callback = _remember_sni
    if no_sni is None:
        return context
    default = _server_context(spec, *no_sni)
    default.sni_callback = _switch_on_sni(spec.mx_host, context)
    return default


def _server_context(spec: ReceiverSpec, cert_path: Path, key_path: Path) -> LabTLSContext:
    """Return a context with the spec's versions and ciphers, one certificate, handshakes logged."""
    context = LabTLSContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = spec.tls_min.ssl_version
    context.maximum_version = spec.tls_max.ssl_version
    if spec.ciphers is not None:
        context.set_ciphers(spec.ciphers)
    elif spec.tls_min.is_legacy or spec.certificate in LEVEL_0_CERTIFICATES:
        context.set_ciphers(LEGACY_CIPHERS)
    context.load_cert_chain(cert_path, key_path)
    context.server_key = postfix_server_key(cert_path)
    observe_handshakes(context)
    return context


def _switch_on_sni(mx_host: str, named: ssl.SSLContext) -> SniCallback:
    """Return an SNI callback that remembers the SNI, then moves to `named` if SNI is mx_host."""

    def switch(ssl_object: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        _remember_sni(ssl_object, server_name, context)
        if server_name is not None and server_name.lower() == mx_host:
            ssl_object.context = named

    return switch


def _remember_sni(ssl_object: Any, server_name: str | None, _context: ssl.SSLContext) -> None:
    """Attach the SNI the client sent to its SSL object, where the session record finds it."""
    ssl_object.lab_sni = server_name
