"""Make text from the network safe to print: no control character reaches a terminal or log."""

from __future__ import annotations


def _escape(char: str) -> str:
    r"""Return one character as a Python-style escape: `\x1b`, `\u202e`, `\U0001f600`."""
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def printable(text: str) -> str:
    """Return `text` as printable ASCII; every other character, and the backslash, escaped.

    That covers C0 (ESC, CR, NUL), DEL, C1, bidi overrides, line separators, lone surrogates and
    any other non-ASCII character, so a line stays one line and shows what was sent.
    """
    return "".join(c if " " <= c <= "~" and c != "\\" else _escape(c) for c in text)
