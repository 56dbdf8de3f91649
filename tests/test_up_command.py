"""`tlslab up` as a real process (contract 4), probed with real external tools: openssl, swaks.

Needs the `openssl` and `swaks` binaries (Debian packages `openssl` and `swaks`, which pulls in
`libnet-ssleay-perl` for its TLS); tests that need a missing one are skipped, naming it, or fail
under `LAB_REQUIRE_TOOLS=1` (tests/tools.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tools import require_swaks_tls, require_tool
from waiting import eventually as wait_until

from harness.evidence import parse_received, received_headers
from lab.evidence_store import read_sessions
from lab.pki import LabPki
from lab.spec import TlsVersion

pytestmark = pytest.mark.integration

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONTRACT_KEYS = {"receiver", "host", "port", "mx_host", "domain", "evidence_dir"}
RECEIVERS = ("tls11", "no-starttls")
LOOPBACK = "127.0.0.1"
CLIENT_DOMAIN = "client.lab.test"
LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
TOOL_TIMEOUT = 30.0
RECORD_TIMEOUT = 5.0
POLL_INTERVAL = 0.01
ALLOWED_STDERR = re.compile(r"\('127\.0\.0\.1', \d+\) unrecognised: ")
PROTOCOL_LINE = re.compile(r"^\s*Protocol\s*:\s*(\S+)\s*$", re.MULTILINE)
KNOWN_RECEIVERS = (
    "expired",
    "mismatched",
    "no-starttls",
    "self-signed",
    "tls10",
    "tls11",
    "tls12",
    "tls13",
    "untrusted-ca",
)


@dataclasses.dataclass
class Up:
    """A running `tlslab up --json` process and what it printed up to `{"ready": true}`."""

    process: subprocess.Popen[bytes]
    endpoints: dict[str, dict[str, Any]]
    objects: list[dict[str, Any]]
    stderr_path: Path
    evidence_dir: Path

    def port(self, receiver: str) -> int:
        """Return the port a receiver listens on."""
        port = self.endpoints[receiver]["port"]
        assert isinstance(port, int)
        return port

    def stderr(self) -> str:
        """Return everything the process wrote to stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


@dataclasses.dataclass(frozen=True)
class Ran:
    """The result of one external tool run."""

    status: int
    output: str


# ---------------------------------------------------------------- process control


def tlslab_command(*args: str) -> list[str]:
    """Return the argv that runs `tlslab` with this interpreter."""
    return [sys.executable, "-m", "harness.cli", *args]


def child_env() -> dict[str, str]:
    """Return the environment for `tlslab`, without overrides of the scenarios or certs folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_up(receivers: str, certs: Path, workdir: Path) -> Up:
    """Start `tlslab up --json` and read its JSON lines until `{"ready": true}`, bounded."""
    evidence_dir = workdir / "evidence"
    stderr_path = workdir / "up.stderr"
    args = ["up", "--json", "--receivers", receivers]
    args += ["--evidence-dir", str(evidence_dir), "--certs", str(certs)]
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            tlslab_command(*args),
            cwd=PROJECT_ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    up = Up(process, {}, [], stderr_path, evidence_dir)
    try:
        for line in read_lines_until_ready(process):
            data = json.loads(line)
            assert isinstance(data, dict), f"not a JSON object: {line!r}"
            up.objects.append(data)
        for data in up.objects[:-1]:
            up.endpoints[str(data.get("receiver"))] = data
    except BaseException:
        stop(up, signal.SIGKILL)
        raise
    return up


def read_lines_until_ready(process: subprocess.Popen[bytes]) -> list[str]:
    """Return stdout lines up to and including the `{"ready": true}` line, within READY_TIMEOUT."""
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    lines: list[str] = []
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"tlslab up not ready after {READY_TIMEOUT:.0f} s; printed {lines}")
            if not selector.select(remaining):
                continue
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                pytest.fail(
                    f"tlslab up exited ({process.wait(STOP_TIMEOUT)}) before ready: {lines}"
                )
            buffer += chunk
            while b"\n" in buffer:
                raw, buffer = buffer.split(b"\n", 1)
                lines.append(raw.decode())
                if json.loads(raw) == {"ready": True}:
                    assert buffer == b"", f"output after ready: {buffer!r}"
                    return lines


def stop(up: Up, signum: int) -> tuple[int, str]:
    """Send `signum`, wait up to STOP_TIMEOUT (then kill), return (status, stdout after ready)."""
    process = up.process
    if process.poll() is None:
        process.send_signal(signum)
    try:
        status = process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT)
        pytest.fail(f"tlslab up ignored signal {signum} for {STOP_TIMEOUT:.0f} s: {up.stderr()}")
    assert process.stdout is not None
    rest = process.stdout.read().decode(errors="replace")  # the process is gone: EOF is near
    process.stdout.close()
    return status, rest


@pytest.fixture(scope="module")
def up(lab_pki: LabPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """Run `tlslab up --json --receivers tls11,no-starttls` for this module's probes."""
    running = start_up(",".join(RECEIVERS), lab_pki.root, tmp_path_factory.mktemp("up"))
    try:
        yield running
    finally:
        status, rest = stop(running, signal.SIGINT)
    # The probes leave only aiosmtpd's warnings about junk commands on stderr (openssl sends its
    # ClientHello to no-starttls; the raw bytes, newlines included, follow each warning).
    stderr = running.stderr()
    assert (status, rest) == (0, ""), stderr
    assert ALLOWED_STDERR.split(stderr)[0] == "", f"unexpected stderr: {stderr!r}"
    assert "Traceback" not in stderr, stderr


# ---------------------------------------------------------------- evidence


def eventually(probe: Callable[[], T | None], what: str, timeout: float = RECORD_TIMEOUT) -> T:
    """Return probe()'s first non-None value within `timeout` s (module default); else fail."""
    return wait_until(probe, what, timeout)


def record_for(up: Up, receiver: str, helo: str) -> dict[str, Any]:
    """Return the receiver's single session record of the client that said EHLO `helo`."""
    directory = up.evidence_dir / receiver

    def probe() -> list[dict[str, Any]] | None:
        found = [r for r in read_sessions(directory) if r.get("ehlo") == helo]
        return found or None

    records = eventually(probe, f"{receiver}'s session record for EHLO {helo}")
    assert len(records) == 1, records
    return records[0]


def stored_with(up: Up, receiver: str, message_id: str) -> list[Path]:
    """Return the receiver's .eml files that contain the Message-ID."""
    needle = message_id.encode()
    directory = up.evidence_dir / receiver
    return sorted(p for p in directory.glob("*.eml") if needle in p.read_bytes())


def unique(prefix: str) -> str:
    """Return a fresh host name under the client domain (EHLO names, Message-ID right sides)."""
    return f"{prefix}-{secrets.token_hex(4)}.{CLIENT_DOMAIN}"


# ---------------------------------------------------------------- external tools


def run_tool(argv: list[str]) -> Ran:
    """Run an external tool with stdin closed, bounded by TOOL_TIMEOUT; merge its output."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{argv[0]} still running after {TOOL_TIMEOUT:.0f} s: {error.output!r}")
    return Ran(done.returncode, done.stdout.decode(errors="replace"))


def openssl_starttls(up: Up, receiver: str, helo: str, *options: str) -> Ran:
    """Run `openssl s_client -starttls smtp` against the receiver, naming its MX host."""
    openssl = require_tool("openssl", "openssl")
    mx_host = up.endpoints[receiver]["mx_host"]
    argv = [openssl, "s_client", "-starttls", "smtp", "-name", helo]
    argv += ["-connect", f"{LOOPBACK}:{up.port(receiver)}", "-servername", mx_host, *options]
    return run_tool(argv)


def swaks(up: Up, receiver: str, helo: str, message_id: str, *options: str) -> Ran:
    """Run swaks to inbox@<receiver's domain> with a known EHLO name and Message-ID."""
    path = require_tool("swaks", "swaks")
    domain = up.endpoints[receiver]["domain"]
    argv = [path, "--to", f"inbox@{domain}", "--from", f"probe@{CLIENT_DOMAIN}"]
    argv += ["--server", f"{LOOPBACK}:{up.port(receiver)}", "--helo", helo, "--timeout", "10"]
    argv += ["--header", f"Message-Id: {message_id}", *options]
    return run_tool(argv)


def swaks_tls(up: Up, receiver: str) -> list[str]:
    """Return swaks options for STARTTLS naming the MX host, once swaks is known to speak TLS."""
    require_swaks_tls()
    return ["--tls", "--tls-sni", str(up.endpoints[receiver]["mx_host"])]


# ---------------------------------------------------------------- contract 4


def test_up_prints_one_contract_object_per_receiver_then_ready(up: Up) -> None:
    assert up.objects[-1] == {"ready": True}
    assert [o.get("receiver") for o in up.objects[:-1]] == list(RECEIVERS)
    for data in up.objects[:-1]:
        assert set(data) == CONTRACT_KEYS, f"keys {sorted(data)}"
        receiver = data["receiver"]
        assert data["host"] == LOOPBACK
        assert isinstance(data["port"], int)
        assert 0 < data["port"] < 65536
        assert data["domain"] == f"{receiver}.lab.test"
        assert data["mx_host"] == f"mx.{receiver}.lab.test"
        assert Path(data["evidence_dir"]) == up.evidence_dir / receiver
        assert Path(data["evidence_dir"]).is_dir()
    assert len({o["port"] for o in up.objects[:-1]}) == len(RECEIVERS)


# ---------------------------------------------------------------- openssl s_client


def test_openssl_negotiates_tls11_and_verifies_the_lab_certificate(up: Up, lab_pki: LabPki) -> None:
    helo = unique("openssl")
    mx_host = up.endpoints["tls11"]["mx_host"]
    verify = ["-CAfile", str(lab_pki.ca_cert_path), "-verify_return_error"]
    verify += ["-verify_hostname", mx_host]
    ran = openssl_starttls(up, "tls11", helo, "-tls1_1", "-cipher", LEGACY_CIPHERS, *verify)
    assert ran.status == 0, ran.output
    assert PROTOCOL_LINE.findall(ran.output) == ["TLSv1.1"], ran.output
    assert "Verify return code: 0 (ok)" in ran.output
    record = record_for(up, "tls11", helo)
    assert (record["handshake"], record["version"], record["sni"]) == ("ok", "TLSv1.1", mx_host)


def test_openssl_without_tls11_fails_against_tls11(up: Up) -> None:
    helo = unique("openssl-tls12")
    ran = openssl_starttls(up, "tls11", helo, "-tls1_2")
    assert ran.status != 0, ran.output
    assert "Cipher is (NONE)" in ran.output, ran.output
    assert "unsupported protocol" in ran.output, ran.output
    record = record_for(up, "tls11", helo)
    assert (record["handshake"], record["version"], record["alert"]) == ("failed", None, None)


def test_openssl_finds_no_starttls_at_no_starttls(up: Up) -> None:
    helo = unique("openssl-plain")
    ran = openssl_starttls(up, "no-starttls", helo)
    assert ran.status != 0, ran.output
    assert "Didn't find STARTTLS" in ran.output, ran.output
    record = record_for(up, "no-starttls", helo)
    assert (record["starttls_offered"], record["handshake"]) == (False, "none")


# ---------------------------------------------------------------- swaks


def test_swaks_delivers_over_tls11_and_the_eml_says_so(up: Up, lab_pki: LabPki) -> None:
    helo, message_id = unique("swaks"), f"<{unique('tls11')}>"
    tls = [*swaks_tls(up, "tls11"), "--tls-protocol", "tlsv1_1", "--tls-cipher", LEGACY_CIPHERS]
    tls += ["--tls-verify", "--tls-ca-path", str(lab_pki.ca_cert_path)]
    ran = swaks(up, "tls11", helo, message_id, *tls)
    assert ran.status == 0, ran.output
    assert "TLS started with cipher TLSv1.1:" in ran.output, ran.output
    [eml] = stored_with(up, "tls11", message_id)
    assert eml.parent == up.evidence_dir / "tls11"
    top = received_headers(eml.read_bytes())[0]
    assert "(using TLSv1.1 with cipher " in top
    assert " with ESMTPS id " in top
    facts = parse_received(top)
    assert facts is not None
    assert facts.version is TlsVersion.TLS11
    record = record_for(up, "tls11", helo)
    assert (record["version"], record["cipher"]) == ("TLSv1.1", facts.cipher)
    assert [m["eml"] for m in record["messages"]] == [eml.name]


def test_swaks_with_only_tls12_fails_against_tls11(up: Up) -> None:
    helo, message_id = unique("swaks-tls12"), f"<{unique('tls11-refused')}>"
    ran = swaks(up, "tls11", helo, message_id, *swaks_tls(up, "tls11"), "-tlsp", "tlsv1_2")
    assert ran.status != 0, ran.output
    assert "TLS startup failed" in ran.output, ran.output
    assert stored_with(up, "tls11", message_id) == []
    record = record_for(up, "tls11", helo)
    assert (record["handshake"], record["messages"]) == ("failed", [])


def test_swaks_delivers_plaintext_to_no_starttls(up: Up) -> None:
    helo, message_id = unique("swaks-plain"), f"<{unique('plain')}>"
    ran = swaks(up, "no-starttls", helo, message_id)
    assert ran.status == 0, ran.output
    [eml] = stored_with(up, "no-starttls", message_id)
    top = received_headers(eml.read_bytes())[0]
    assert " with ESMTP id " in top
    assert "using" not in top
    assert parse_received(top) is None
    record = record_for(up, "no-starttls", helo)
    assert (record["handshake"], record["version"]) == ("none", None)


def test_swaks_requiring_tls_fails_against_no_starttls(up: Up) -> None:
    helo, message_id = unique("swaks-tls"), f"<{unique('plain-refused')}>"
    ran = swaks(up, "no-starttls", helo, message_id, *swaks_tls(up, "no-starttls"))
    assert ran.status != 0, ran.output
    assert "Host did not advertise STARTTLS" in ran.output, ran.output
    assert stored_with(up, "no-starttls", message_id) == []
    record = record_for(up, "no-starttls", helo)
    assert (record["starttls_asked"], record["messages"]) == (False, [])


# ---------------------------------------------------------------- stopping and bad input


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly_and_closes_the_ports(
    lab_pki: LabPki, tmp_path: Path, signum: signal.Signals
) -> None:
    running = start_up(",".join(RECEIVERS), lab_pki.root, tmp_path)
    ports = [running.port(receiver) for receiver in RECEIVERS]
    # A sender still connected (idle, mid-session) must not hold the shutdown up.
    with socket.create_connection((LOOPBACK, ports[0]), timeout=5) as idle:
        assert idle.recv(512).startswith(b"220 mx.tls11.lab.test ")
        status, rest = stop(running, signum)
        assert idle.recv(512) == b"", "the idle session should be closed by the stop"
    assert status == 0, running.stderr()
    assert rest == "", f"stdout after ready: {rest!r}"
    assert running.stderr() == ""
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, port), timeout=5).close()


@pytest.mark.parametrize("wanted", ["nope", "tls11,nope"])
def test_unknown_receiver_exits_2_with_one_line_naming_the_option(
    tmp_path: Path, wanted: str
) -> None:
    evidence = tmp_path / "evidence"
    argv = tlslab_command("up", "--json", "--receivers", wanted, "--evidence-dir", str(evidence))
    argv += ["--certs", str(tmp_path / "certs")]
    done = subprocess.run(
        argv,
        cwd=PROJECT_ROOT,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "Traceback" not in err
    assert done.stdout == b""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tlslab: error: ")
    assert "--receivers" in lines[0]
    assert "'nope'" in lines[0]
    for known in KNOWN_RECEIVERS:
        assert f"'{known}'" in lines[0], f"{known} not named in {lines[0]!r}"
    assert not evidence.exists()
