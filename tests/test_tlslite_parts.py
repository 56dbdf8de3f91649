"""Tests of lab.tlslite_parts: the ClientHello parser loads tlslite's parts, not its add-ons."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.tlslite_parts import register_bare_package

PROBE = """
import json, ssl, sys
{before}
from lab.client_hello import parse_client_hello
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="lab.test")
try:
    client.do_handshake()
except ssl.SSLWantReadError:
    pass
record = outgoing.read()
hello = record[5:]  # the handshake message after the 5-byte record header
offer = parse_client_hello(hello)
names = ("tlslite.api", "xmlrpc.server", "asyncore", "pydoc")
print(json.dumps([offer.sni if offer else None, sorted(m for m in names if m in sys.modules)]))
"""


def probe(before: str = "") -> tuple[str | None, list[str]]:
    """Parse a real ClientHello in a fresh process; return its SNI and the heavy modules loaded."""
    code = PROBE.format(before=before)
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    sni, loaded = json.loads(done.stdout)
    return sni, loaded


def test_the_parser_reads_a_client_hello_without_tlslite_integrations() -> None:
    assert probe() == ("lab.test", [])


def test_control_a_process_that_imported_the_full_package_keeps_it_and_still_parses() -> None:
    sni, loaded = probe("import warnings; warnings.simplefilter('ignore'); import tlslite")
    assert sni == "lab.test"
    assert {"tlslite.api", "xmlrpc.server"} <= set(loaded)


def test_a_module_that_is_not_a_package_is_refused() -> None:
    with pytest.raises(ImportError, match="not an installed package"):
        register_bare_package("wave")  # a module of its own, not yet imported
    with pytest.raises(ImportError, match="not an installed package"):
        register_bare_package("no_such_package_here")
