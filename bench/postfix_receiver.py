"""A private Postfix instance receiving over TLS on 127.0.0.1, pinned like the lab's receivers.

One `postfix -c DIR start-fg` with its own config, queue and data directories under a temp
folder, one `smtpd` listener per receiver state (TLS version pinned with smtpd_tls_protocols, the
lab's certificate for that MX host, `@SECLEVEL=0` for TLS 1.0/1.1 as the lab does), and every
message discarded after it was queued. Always stopped and removed, even when start fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from lab.pki import LabPki
from lab.spec import ReceiverSpec, TlsVersion

POSTFIX = "/usr/sbin/postfix"
SMTP_SOURCE = "/usr/sbin/smtp-source"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixUnavailable(Exception):
    """Postfix cannot run here (not installed, not root, no postfix user); says why."""


@dataclasses.dataclass(frozen=True)
class PostfixListener:
    """One smtpd listener standing in for one lab receiver state."""

    receiver: str
    host: str
    port: int
    mx_host: str
    domain: str


def unavailable_reason() -> str | None:
    """Return why a private Postfix cannot run on this machine, or None when it can."""
    if not Path(POSTFIX).exists():
        return f"{POSTFIX} is missing (Debian package postfix; `make bench` installs it as root)"
    if os.geteuid() != 0:
        return "a private Postfix instance needs root (postfix start)"
    try:
        pwd.getpwnam("postfix")
    except KeyError:
        return "no `postfix` user on this machine"
    return None


def main_cf(base: Path, specs: Sequence[ReceiverSpec]) -> str:
    """Return main.cf: private directories, loopback only, lab domains accepted and discarded."""
    domains = ", ".join(spec.domain for spec in specs)
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(base / "queue"),
        "data_directory": str(base / "data"),
        "mail_owner": "postfix",
        "setgid_group": "postdrop",
        "myhostname": "mx.lab.test",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "mydestination": domains,
        "local_recipient_maps": "",
        "local_transport": "discard:",
        "default_transport": "discard:",
        "relay_transport": "discard:",
        "alias_maps": "",
        "alias_database": "",
        "biff": "no",
        "maillog_file": str(base / "maillog"),
        "maillog_file_prefixes": str(base),
        "smtpd_tls_security_level": "may",
        "smtpd_tls_received_header": "yes",
        "smtpd_tls_loglevel": "0",
    }
    return "".join(f"{key} = {value}\n" for key, value in settings.items())


def master_cf(
    listeners: Sequence[tuple[PostfixListener, ReceiverSpec]],
    pki: LabPki,
    extra: Sequence[str] = (),
) -> str:
    """Return master.cf: one smtpd per receiver state with its TLS pinning, then the services.

    `extra` are further `name=value` smtpd options for every listener (e.g. a proxy filter).
    """
    lines = []
    for listener, spec in listeners:
        options = [f"myhostname={spec.mx_host}", *extra]
        if spec.starttls:
            bundle = pki.bundle(spec.id)
            options += [
                f"smtpd_tls_cert_file={bundle.cert_path}",
                f"smtpd_tls_key_file={bundle.key_path}",
                f"smtpd_tls_protocols=>={_name(spec.tls_min)},<={_name(spec.tls_max)}",
            ]
            if spec.tls_min.is_legacy:
                options.append(f"tls_medium_cipherlist={LEGACY_CIPHERS}")
        else:
            options.append("smtpd_tls_security_level=none")
        flags = " ".join(f"-o {option}" for option in options)
        lines.append(f"{listener.host}:{listener.port} inet n - n - - smtpd {flags}")
    return "\n".join(lines) + "\n" + SERVICES


def _name(version: TlsVersion) -> str:
    """Return Postfix's (OpenSSL's) protocol name: TLS 1.0 is `TLSv1`."""
    return "TLSv1" if version is TlsVersion.TLS10 else version.value


class PostfixReceiver:
    """A running private Postfix; `master_pid` lets callers account its CPU time."""

    def __init__(self, base: Path, process: subprocess.Popen[bytes]) -> None:
        """Wrap the started instance."""
        self.base, self.process = base, process
        self.listeners: dict[str, PostfixListener] = {}

    @property
    def master_pid(self) -> int | None:
        """Return the id of the master daemon from its pid file, or None when unreadable."""
        try:
            return int((self.base / "queue" / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def log_tail(self, lines: int = 8) -> str:
        """Return the last lines of the instance's mail log on one line."""
        try:
            text = (self.base / "maillog").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no maillog)"
        return " | ".join(text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def running_postfix(
    specs: Sequence[ReceiverSpec],
    pki: LabPki,
    ports: Sequence[int],
    smtpd_options: Sequence[str] = (),
) -> Iterator[PostfixReceiver]:
    """Start a private Postfix with one listener per spec on the given ports; always stop it.

    Its folder is a fresh world-traversable temp folder: Postfix's daemons run as `postfix`.
    """
    reason = unavailable_reason()
    if reason:
        raise PostfixUnavailable(reason)
    base = Path(tempfile.mkdtemp(prefix="tlslab-bench-postfix-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        base.chmod(0o755)
        for name in ("conf", "queue", "data"):
            (base / name).mkdir()
        shutil.chown(base / "data", user="postfix")
        pairs = [
            (PostfixListener(s.id, "127.0.0.1", port, s.mx_host, s.domain), s)
            for s, port in zip(specs, ports, strict=True)
        ]
        (base / "conf" / "main.cf").write_text(main_cf(base, specs))
        (base / "conf" / "master.cf").write_text(master_cf(pairs, pki, smtpd_options))
        process = subprocess.Popen(
            [POSTFIX, "-c", str(base / "conf"), "start-fg"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        receiver = PostfixReceiver(base, process)
        for listener, _spec in pairs:
            _wait_for_banner(listener, receiver)
            receiver.listeners[listener.receiver] = listener
        yield receiver
    finally:
        if process is not None:
            _stop(base, process)
        shutil.rmtree(base, ignore_errors=True)


def _stop(base: Path, process: subprocess.Popen[bytes]) -> None:
    """Stop the instance with `postfix stop`; kill the master (by its pid file) if it lingers."""
    master = PostfixReceiver(base, process).master_pid
    with contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
            [POSTFIX, "-c", str(base / "conf"), "stop"], capture_output=True, timeout=STOP_TIMEOUT
        )
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        if master is not None:
            with contextlib.suppress(OSError):
                os.kill(master, signal.SIGKILL)
        process.kill()
        process.wait()


def _wait_for_banner(listener: PostfixListener, receiver: PostfixReceiver) -> None:
    """Wait (bounded) until the listener answers with a 220 banner."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if receiver.process.poll() is not None:
            raise PostfixUnavailable(f"postfix exited: {receiver.log_tail()}")
        try:
            with socket.create_connection((listener.host, listener.port), timeout=2) as sock:
                if sock.recv(512).startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise PostfixUnavailable(f"no banner on port {listener.port}: {receiver.log_tail()}")
