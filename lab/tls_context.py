"""The TLS context of one receiver: exactly its versions, its certificate, its handshakes logged."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from lab.spec import ReceiverSpec
from lab.tls_names import postfix_server_key
from lab.tls_observe import observe_handshakes

__all__ = ["LEGACY_CIPHERS", "LabTLSContext", "build_tls_context"]

LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"


class LabTLSContext(ssl.SSLContext):
    """A server context that knows how Postfix names its key, e.g. `RSA-PSS (2048 bits)`."""

    server_key: str | None = None


def build_tls_context(spec: ReceiverSpec, cert_path: Path, key_path: Path) -> LabTLSContext:
    """Return a server context offering exactly the spec's TLS versions with its certificate."""
    context = LabTLSContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = spec.tls_min.ssl_version
    context.maximum_version = spec.tls_max.ssl_version
    if spec.tls_min.is_legacy:
        context.set_ciphers(LEGACY_CIPHERS)
    context.load_cert_chain(cert_path, key_path)
    context.sni_callback = _remember_sni
    context.server_key = postfix_server_key(cert_path)
    observe_handshakes(context)
    return context


def _remember_sni(ssl_object: Any, server_name: str | None, _context: ssl.SSLContext) -> None:
    """Attach the SNI the client sent to its SSL object, where the session record finds it."""
    ssl_object.lab_sni = server_name
