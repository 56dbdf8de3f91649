"""Client text in the lab's Received header: neutralised so it cannot form a clause or a fold.

Postfix's smtpd passes the HELO argument through `printable(name, '?')` (control and other
non-printable characters become `?`), then `neuter(name, NEUTER_CHARACTERS, '?')` (HELO_NEUTER
below). The lab replaces those characters too, and more: its evidence parser reads many MTAs'
formats, some of which need no parenthesis or space (`version=TLS1_3`, `ESMTPS/TLS/<cipher>`),
so every character of a HELO name outside letters, digits and `-._:[]` (host names and address
literals) becomes `?`. The recipient in `for <...>` is treated the same, `+` kept in its local
part (the `bounce+<cell>` tags); Postfix re-quotes a quoted local part there, carrying its
parentheses and spaces into the header, which the lab does not. Content starting with a space
or tab would fold into the header above it: like Postfix's smtpd, which forces an empty record
before such content "so that it won't be considered as being part of our own Received:
header", the lab writes an empty line between its header and that content.
"""

from __future__ import annotations

import re

__all__ = ["HELO_NEUTER", "helo_text", "recipient_text", "stored_message"]

HELO_NEUTER = ' <>()\\";@'  # Postfix's NEUTER_CHARACTERS (smtpd.c), all replaced below
REPLACEMENT = "?"
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9._:\[\]-]", re.ASCII)
_LOCAL_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]", re.ASCII)
_FOLDING_START = (b" ", b"\t")


def helo_text(name: str) -> str:
    """Return a HELO/EHLO name as the Received header may show it: unsafe characters as `?`."""
    return _HOST_UNSAFE.sub(REPLACEMENT, name)


def recipient_text(address: str) -> str:
    """Return a recipient for `for <...>`: local part and domain with unsafe characters as `?`."""
    local, at, domain = address.rpartition("@")
    if not at:
        return _LOCAL_UNSAFE.sub(REPLACEMENT, address)
    return f"{_LOCAL_UNSAFE.sub(REPLACEMENT, local)}@{helo_text(domain)}"


def stored_message(header: str, content: bytes) -> bytes:
    """Return header + content, with an empty line between when the content would fold into it."""
    separator = b"\r\n" if content[:1] in _FOLDING_START else b""
    return header.encode() + separator + content
