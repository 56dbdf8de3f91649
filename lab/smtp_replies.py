"""aiosmtpd's SMTP sending each multi-line reply in one write, as Postfix's smtpd does.

aiosmtpd writes (and drains) every line of an EHLO reply on its own: a socket send per line,
the largest single cost of a short session after the TLS handshake. Here the lines of an EHLO
reply are held back while aiosmtpd builds them and go out in one write; the bytes on the wire,
their order and everything logged per line stay the same (tests/test_smtp_setup.py compares).
"""

from __future__ import annotations

from typing import Any

from aiosmtpd import smtp as aiosmtpd_smtp

from lab.smtp_setup import CachedSMTP


class OneWriteSMTP(CachedSMTP):
    """CachedSMTP whose EHLO reply is one write (set ONE_WRITE_EHLO False for aiosmtpd's way)."""

    ONE_WRITE_EHLO = True
    _corked: list[bytes] | None = None  # reply lines held back while an EHLO reply is built

    async def push(self, status: Any) -> None:
        """Send one reply line as aiosmtpd does; while an EHLO reply is built, hold it back."""
        if self._corked is None:
            await super().push(status)
            return
        if isinstance(status, str):
            status = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        self._corked.append(status)
        assert self.session is not None
        aiosmtpd_smtp.log.debug("%r << %r", self.session.peer, status)

    async def smtp_EHLO(self, hostname: str) -> None:
        """Answer EHLO as aiosmtpd does, every line of the reply in one write."""
        if not self.ONE_WRITE_EHLO:
            await super().smtp_EHLO(hostname)
            return
        self._corked = []
        try:
            await super().smtp_EHLO(hostname)
        finally:
            lines, self._corked = self._corked, None
            if lines:
                self._writer.write(b"".join(line + b"\r\n" for line in lines))
        if lines:
            await self._writer.drain()


__all__ = ["OneWriteSMTP"]
