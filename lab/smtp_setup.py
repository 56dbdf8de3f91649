"""aiosmtpd's SMTP with its per-connection set-up done once per class: the same protocol, cheaper.

aiosmtpd 1.4's `SMTP.__init__` builds three method tables (AUTH mechanisms, handler hooks,
`smtp_*` commands) by reflection over the protocol and its handler (`inspect.getmembers`,
`dir`, `inspect.signature`) for every connection: about a sixth of the receiver's CPU per
delivery. `CachedSMTP` finds the names once per (protocol class, handler class) and binds them
per connection, setting exactly the attributes aiosmtpd sets (tests/test_smtp_setup.py compares
both). Options outside the lab's (AUTH, call limits, PROXY protocol) take aiosmtpd's own path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import re
import socket
import ssl
from typing import Any, cast
from warnings import warn

from aiosmtpd import smtp as aiosmtpd_smtp
from aiosmtpd.smtp import SMTP

_REFLECTED = re.compile(r"^(?:auth_|handle_|smtp_)", re.MULTILINE)  # names the tables list
PATHS_CACHED = 1024  # parsed MAIL/RCPT paths kept (each at most a 512-byte command line)
FAST_OPTIONS = frozenset({"hostname", "ident", "data_size_limit", "timeout", "tls_context", "loop"})


@dataclasses.dataclass(frozen=True)
class MethodNames:
    """The names aiosmtpd's tables map to, found once per protocol and handler class."""

    auth: tuple[tuple[str, str, bool], ...]  # (mechanism, attribute, on the protocol itself)
    hooks: tuple[tuple[str, str], ...]  # (command, handler attribute)
    commands: tuple[tuple[str, str], ...]  # (command, protocol attribute)
    ehlo_hook: str | None  # "old" (4 parameters), "new" (5) or None (no handle_EHLO)


def method_names(protocol: object, handler: object) -> MethodNames:
    """Return the tables' names for a protocol and its handler, by aiosmtpd's own rules."""
    auth = tuple(
        (getattr(method, "__auth_mechanism_name__", _mechanism(name)), name, obj is protocol)
        for obj in (protocol, handler)
        for name, method in inspect.getmembers(obj)
        if name.startswith("auth_")
    )
    hooks = tuple((m.replace("handle_", ""), m) for m in dir(handler) if m.startswith("handle_"))
    ehlo_hook = None
    hook = getattr(handler, "handle_EHLO", None) if ("EHLO", "handle_EHLO") in hooks else None
    if hook is not None:
        count = len(inspect.signature(hook).parameters)
        if count not in (4, 5):
            raise RuntimeError("Unsupported EHLO Hook")
        ehlo_hook = "old" if count == 4 else "new"
    commands = tuple((m.replace("smtp_", ""), m) for m in dir(protocol) if m.startswith("smtp_"))
    return MethodNames(auth, hooks, commands, ehlo_hook)


def _mechanism(name: str) -> str:
    """Return the mechanism aiosmtpd names after an `auth_*` method: auth_CRAM__MD5 is CRAM-MD5."""
    return name.replace("auth_", "").replace("__", "-")


class CachedSMTP(SMTP):
    """aiosmtpd's SMTP protocol whose method tables come from a per-class cache."""

    def __init__(self, handler: Any, **options: Any) -> None:
        """Set the protocol up as `SMTP.__init__` does, reflecting over the classes only once."""
        if not FAST_OPTIONS.issuperset(options):
            super().__init__(handler, **options)
            return
        loop = options.get("loop") or aiosmtpd_smtp.make_loop()
        tls_context: ssl.SSLContext | None = options.get("tls_context")
        self.__ident__ = options.get("ident") or aiosmtpd_smtp.__ident__
        self.loop = loop
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.event_handler = handler
        self.data_size_limit = options.get("data_size_limit", aiosmtpd_smtp.DATA_SIZE_DEFAULT)
        self.enable_SMTPUTF8 = False
        self._decode_data = False
        self.command_size_limits.clear()
        self.hostname = options.get("hostname") or socket.getfqdn()
        self.tls_context = tls_context
        if tls_context:
            _warn_about(tls_context)
        self.require_starttls = tls_context and False
        self._timeout_duration = options.get("timeout", 300)
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = True
        self._proxy_timeout = None
        self._auth_callback = aiosmtpd_smtp.login_always_fail
        self._authenticator = None
        self._auth_required = False
        self._bind_tables(handler, _names(type(self), type(handler), self, handler))
        self._enforce_call_limit = False

    def _bind_tables(self, handler: Any, names: MethodNames) -> None:
        """Fill aiosmtpd's three tables with this connection's bound methods."""
        self._auth_methods = {
            mechanism: aiosmtpd_smtp._AuthMechAttr(getattr(self if own else handler, name), own)
            for mechanism, name, own in names.auth
        }
        if aiosmtpd_smtp.log.isEnabledFor(logging.INFO):
            listed = " ".join(
                m + "(builtin)" if impl.is_builtin else m
                for m, impl in sorted(self._auth_methods.items())
            )
            aiosmtpd_smtp.log.info("Available AUTH mechanisms: " + listed)
        self._handle_hooks = {command: getattr(handler, name) for command, name in names.hooks}
        self._ehlo_hook_ver = names.ehlo_hook
        if names.ehlo_hook == "old":
            warn(
                "Use the 5-argument handle_EHLO() hook instead of the 4-argument handle_EHLO() "
                "hook; support for the 4-argument handle_EHLO() hook will be removed in "
                "version 2.0",
                DeprecationWarning,
                stacklevel=2,
            )
        self._smtp_methods = {command: getattr(self, name) for command, name in names.commands}

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Parse a MAIL/RCPT path as aiosmtpd does; any parser failure is a malformed one (553)."""
        return _parsed_path(arg, self.local_part_limit)


@functools.lru_cache(maxsize=PATHS_CACHED)
def _parsed_path(arg: str, local_part_limit: int) -> tuple[str | None, str | None]:
    """Return aiosmtpd's parse of a path (address, rest), or (None, None) when it fails.

    A pure function of its arguments (senders repeat their paths), so parses are cached.
    """
    try:
        parser = cast(SMTP, _PathLimit(local_part_limit))  # _getaddr reads nothing else
        address: tuple[str | None, str | None] = SMTP._getaddr(parser, arg)
    except Exception:  # the email parser raises more than HeaderParseError on odd input
        return None, None
    return address


class _PathLimit:
    """What aiosmtpd's SMTP._getaddr reads of its protocol: the local-part length limit."""

    def __init__(self, local_part_limit: int) -> None:
        """Hold the limit (0: unlimited)."""
        self.local_part_limit = local_part_limit


def _names(
    protocol_class: type, handler_class: type, protocol: object, handler: object
) -> MethodNames:
    """Return the cached names for this pair of classes; instance-level names bypass the cache."""
    if _REFLECTED.search("\n".join((*vars(handler), *vars(protocol)))):
        return method_names(protocol, handler)  # an instance with its own hooks: not cacheable
    return _class_names(protocol_class, handler_class, protocol, handler)


_CACHE: dict[tuple[type, type], MethodNames] = {}


def _class_names(
    protocol_class: type, handler_class: type, protocol: object, handler: object
) -> MethodNames:
    """Return (computing on first use) the names of a protocol class with a handler class."""
    key = (protocol_class, handler_class)
    names = _CACHE.get(key)
    if names is None:
        names = _CACHE[key] = method_names(protocol, handler)
    return names


def _warn_about(context: ssl.SSLContext) -> None:
    """Log aiosmtpd's warnings about a server context that checks the client's certificate."""
    if context.verify_mode not in {ssl.CERT_NONE, ssl.CERT_OPTIONAL}:
        aiosmtpd_smtp.log.warning(
            "tls_context.verify_mode not in {CERT_NONE, CERT_OPTIONAL}; "
            "this might cause client connection problems"
        )
    elif context.check_hostname:
        aiosmtpd_smtp.log.warning(
            "tls_context.check_hostname == True; this might cause client connection problems"
        )


__all__ = ["CachedSMTP", "MethodNames", "method_names"]
