"""`tlslab up --public` as a real process, on loopback addresses only (127.0.0.x).

Public mode is exercised with `--bind tls12=127.0.0.2:PORT`: it prints the DNS records, serves
the configured zone, takes real certificates for valid states, refuses to relay and logs each
session live. Without `--public` a non-loopback address is refused before anything listens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import trustme

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]
ZONE = "lab.example.org"
TIMEOUT = 30.0
BODY = b"Subject: public lab test\r\nMessage-ID: <public.1@client.test>\r\n\r\nhello\r\n"


def free_port(host: str) -> int:
    """Return a TCP port free on `host` right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def tlslab(*args: str | Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `python -m harness.cli ARGS` (no TLSLAB_* overrides) with piped output."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TLSLAB_")}
    return subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *map(str, args)],
        cwd=PROJECT,
        env={**clean, "PYTHONUNBUFFERED": "1", **(extra_env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(*args: str | Path) -> tuple[int, str, str]:
    """Run `tlslab ARGS` to completion; return (status, stdout, stderr)."""
    process = tlslab(*args)
    out, err = process.communicate(timeout=TIMEOUT)
    return process.returncode, out, err


def _pump(stream: IO[str] | None, lines: list[str]) -> None:
    """Append each line of `stream` to `lines` until it closes."""
    assert stream is not None
    for line in stream:
        lines.append(line.rstrip("\n"))


@dataclasses.dataclass
class Running:
    """A running `tlslab up` whose output lines reader threads collect."""

    process: subprocess.Popen[str]
    out: list[str] = dataclasses.field(default_factory=list)
    err: list[str] = dataclasses.field(default_factory=list)

    def wait_for(self, found: Callable[[list[str]], bool], what: str) -> None:
        """Wait (bounded) until `found(stdout lines)` holds; fail showing both streams."""
        deadline = time.monotonic() + TIMEOUT
        while not found(self.out):
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"no {what}; stdout={self.out} stderr={self.err}")
            time.sleep(0.02)


@contextlib.contextmanager
def up(*args: str | Path) -> Iterator[Running]:
    """Run `tlslab up ARGS` for the body, then stop it with SIGINT and reap it."""
    running = Running(tlslab("up", *args))
    streams = ((running.process.stdout, running.out), (running.process.stderr, running.err))
    readers = [threading.Thread(target=_pump, args=pair, daemon=True) for pair in streams]
    for reader in readers:
        reader.start()
    try:
        yield running
    finally:
        if running.process.poll() is None:
            running.process.send_signal(signal.SIGINT)
        try:
            running.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()
        for reader in readers:
            reader.join(TIMEOUT)
        for stream in (running.process.stdout, running.process.stderr):
            if stream is not None:
                stream.close()


class MxSMTP(smtplib.SMTP):
    """smtplib.SMTP that verifies the server as `mx_host` (as an MTA does) at a given address."""

    def __init__(self, address: tuple[str, int], mx_host: str) -> None:
        """Connect to `address`; STARTTLS then checks the certificate against `mx_host`."""
        super().__init__(*address, timeout=TIMEOUT)
        self._host = mx_host


def ready(lines: list[str]) -> bool:
    """Return True once the human-readable `up` output says the receivers are ready."""
    return any(line.startswith("receivers ready") for line in lines)


def client_context(ca: Path | None = None) -> ssl.SSLContext:
    """Return a client context that verifies against `ca`, or verifies nothing."""
    if ca is not None:
        return ssl.create_default_context(cafile=str(ca))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def rcpt_reply(address: tuple[str, int], rcpt: str, context: ssl.SSLContext | None) -> int:
    """Open a session (STARTTLS when given a context), try one recipient, return the reply code."""
    with smtplib.SMTP(*address, local_hostname="client.test", timeout=TIMEOUT) as smtp:
        smtp.ehlo()
        if context is not None:
            smtp.starttls(context=context)
            smtp.ehlo()
        smtp.mail("sender@client.test")
        code, _ = smtp.rcpt(rcpt)
        if code == 250:
            smtp.data(BODY)
        return code


# ---------------------------------------------------------------- safe by default


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--host", "0.0.0.0"], ["--host", "'0.0.0.0'", "--public"]),
        (["--bind", "tls12=192.0.2.10:2525"], ["--bind", "192.0.2.10", "--public"]),
        (["--bind-all", "192.0.2.10"], ["--bind", "192.0.2.10", "--public"]),
        (["--public", "--bind", "tls12=127.0.0.2:2525"], ["--domain", "zone you control"]),
        (["--public", "--domain", ZONE], ["--bind", "tls12"]),
        (["--public", "--domain", ZONE, "--host", "127.0.0.2"], ["--host", "--bind"]),
        (["--public", "--domain", ZONE, "--bind-all", "127.0.0.2", "--backend", "docker"],
         ["--backend", "docker"]),
        (["--bind", "tls12=127.0.0.2:2525", "--bind", "tls12=127.0.0.3:2525"], ["twice"]),
        (["--bind", "tls12=not-an-ip"], ["--bind", "ADDRESS[:PORT]"]),
        (["--bind", "tls9=127.0.0.2"], ["--bind", "tls9"]),
        (["--domain", "Not A Zone"], ["--domain", "DNS zone"]),
        (["--domain", ZONE, "--backend", "docker"], ["--backend", "lab.test zone"]),
    ],
)  # fmt: skip
def test_bad_or_unsafe_options_exit_2_with_one_line(args: list[str], names: list[str]) -> None:
    status, out, err = finished("up", "--receivers", "tls12", *args)
    assert status == 2, (out, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tlslab: error: "), err
    for name in names:
        assert name in lines[0], (name, lines[0])


# ---------------------------------------------------------------- a public lab on 127.0.0.2


def test_public_lab_prints_records_serves_its_zone_and_is_no_open_relay(tmp_path: Path) -> None:
    port = free_port("127.0.0.2")
    args = ["--public", "--domain", ZONE, "--receivers", "tls12,no-starttls"]
    args += ["--bind", f"tls12=127.0.0.2:{port}", "--bind-all", f"127.0.0.3:{port}"]
    args += ["--certs", str(tmp_path / "certs"), "--evidence-dir", str(tmp_path / "evidence")]
    with up(*args) as lab:
        lab.wait_for(ready, "ready line")
        out = lab.out
        assert f"tls12.{ZONE}. 300 IN MX 10 mx.tls12.{ZONE}." in out
        assert any(line.startswith(f"mx.tls12.{ZONE}. 300 IN A 127.0.0.2") for line in out)
        assert any(line.startswith(f"mx.no-starttls.{ZONE}. 300 IN A 127.0.0.3") for line in out)
        assert any(line.startswith(f"{ZONE}. 300 IN MX 10 mx.tls12.{ZONE}.") for line in out)
        assert any("warning: tls12 listens on port" in line for line in out)
        lab_file = json.loads((tmp_path / "evidence" / "lab.json").read_text())
        assert lab_file["zone"] == ZONE
        ca = Path(lab_file["ca"])
        assert ca.is_relative_to(tmp_path / "certs" / ZONE)  # not the default lab's certificates
        tls12 = ("127.0.0.2", port)
        # the certificate names the MX host in the configured zone and chains to the lab CA
        with MxSMTP(tls12, f"mx.tls12.{ZONE}") as smtp:
            smtp.starttls(context=client_context(ca))
            assert isinstance(smtp.sock, ssl.SSLSocket)
            assert smtp.sock.version() == "TLSv1.2"
        assert rcpt_reply(tls12, f"inbox@tls12.{ZONE}", client_context()) == 250
        assert rcpt_reply(tls12, "x@example.com", client_context()) == 550  # no open relay
        assert rcpt_reply(tls12, "inbox@tls12.lab.test", client_context()) == 550
        assert rcpt_reply(("127.0.0.3", port), f"bounce+cell@{ZONE}", None) == 250
        lab.wait_for(lambda lines: sum(" tls12 " in line for line in lines) >= 4, "live log")
    log = [line for line in lab.out if " tls12 " in line or " no-starttls " in line]
    assert any("TLSv1.2" in line and f"accepted for inbox@tls12.{ZONE}" in line for line in log)
    assert any("1 recipient refused" in line for line in log)
    assert any("no-starttls" in line and "plaintext (no STARTTLS offered)" in line for line in log)
    assert lab.process.returncode == 0, lab.err
    assert not (tmp_path / "evidence" / "lab.json").exists()


def test_json_mode_keeps_stdout_to_the_contract(tmp_path: Path) -> None:
    port = free_port("127.0.0.2")
    args = ["--json", "--public", "--domain", ZONE, "--receivers", "tls12"]
    args += ["--bind", f"tls12=127.0.0.2:{port}", "--certs", str(tmp_path / "certs")]
    args += ["--evidence-dir", str(tmp_path / "evidence")]
    with up(*args) as lab:
        lab.wait_for(lambda lines: '{"ready": true}' in lines, "ready object")
        assert rcpt_reply(("127.0.0.2", port), f"inbox@tls12.{ZONE}", client_context()) == 250
    objects = [json.loads(line) for line in lab.out]
    assert objects[0]["domain"] == f"tls12.{ZONE}"
    assert objects[0]["host"] == "127.0.0.2"
    assert objects[-1] == {"ready": True}
    assert len(objects) == 2
    assert any(f"tls12.{ZONE}. 300 IN MX" in line for line in lab.err)


# ---------------------------------------------------------------- real certificates


@pytest.fixture(scope="module")
def acme(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    """Return a stand-in public CA and a folder for the certificates it issues."""
    return trustme.CA(), tmp_path_factory.mktemp("acme")


def issue(acme: tuple[trustme.CA, Path], name: str, host: str) -> tuple[Path, Path]:
    """Issue a certificate for `host` as an ACME client would store it: fullchain + key."""
    ca, folder = acme
    leaf = ca.issue_cert(host)
    cert, key = folder / f"{name}-fullchain.pem", folder / f"{name}-privkey.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    return cert, key


def test_a_real_certificate_is_served_for_a_valid_state(
    tmp_path: Path, acme: tuple[trustme.CA, Path]
) -> None:
    cert, key = issue(acme, "good", f"mx.tls13.{ZONE}")
    port = free_port("127.0.0.2")
    args = ["--public", "--domain", ZONE, "--receivers", "tls13"]
    args += ["--bind", f"tls13=127.0.0.2:{port}", "--cert", f"tls13={cert}:{key}"]
    args += ["--certs", str(tmp_path / "certs"), "--evidence-dir", str(tmp_path / "evidence")]
    with up(*args) as lab:
        lab.wait_for(ready, "ready line")
        assert not any("present lab-CA certificates" in line for line in lab.out)
        public = ssl.create_default_context()
        acme[0].configure_trust(public)
        with MxSMTP(("127.0.0.2", port), f"mx.tls13.{ZONE}") as smtp:
            smtp.starttls(context=public)
            assert isinstance(smtp.sock, ssl.SSLSocket)
            assert smtp.sock.version() == "TLSv1.3"


@pytest.mark.parametrize(
    ("receiver", "host", "tamper", "names"),
    [
        ("tls12", "mx.other.example.org", None, ["good-name", "not the MX host", "mx.tls12."]),
        ("tls12", f"mx.tls12.{ZONE}", "key", ["privkey", "does not match"]),
        ("self-signed", f"mx.self-signed.{ZONE}", None, ["--cert self-signed", "defective"]),
        ("tls12", f"mx.tls12.{ZONE}", "garbage", ["not a PEM certificate"]),
    ],
)
def test_a_wrong_real_certificate_exits_2_naming_the_file(
    tmp_path: Path,
    acme: tuple[trustme.CA, Path],
    receiver: str,
    host: str,
    tamper: str | None,
    names: list[str],
) -> None:
    cert, key = issue(acme, "good-name" if "other" in host else receiver, host)
    if tamper == "key":
        _, key = issue(acme, "other-privkey", host)
    if tamper == "garbage":
        cert.write_text("not a certificate\n")
    status, _, err = finished(
        "up", "--receivers", receiver, "--certs", tmp_path / "certs",
        "--cert", f"{receiver}={cert}:{key}",
    )  # fmt: skip
    assert status == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("tlslab: error: "), err
    for name in names:
        assert name in lines[0], (name, lines[0])


# ---------------------------------------------------------------- `tlslab run --backend attached`


def test_run_attaches_to_a_running_lab_in_another_zone(tmp_path: Path) -> None:
    port = free_port("127.0.0.2")
    evidence = tmp_path / "evidence"
    args = ["--public", "--domain", ZONE, "--receivers", "tls12,no-starttls"]
    args += ["--bind-all", f"127.0.0.2:{port}", "--certs", str(tmp_path / "certs")]
    args += ["--evidence-dir", str(evidence)]
    suite = tmp_path / "scenarios" / "suites" / "attached.yaml"
    suite.parent.mkdir(parents=True)
    suite.write_text(
        "receivers: [tls12, no-starttls]\nsenders: [ses-default]\ncells:\n"
        "  tls12: {ses-default: {outcome: delivered, tls: TLSv1.2}}\n"
        "  no-starttls: {ses-default: {outcome: delivered, tls: plaintext}}\n"
    )
    with up(*args) as lab:
        lab.wait_for(ready, "ready line")
        run = tlslab(
            "run", "--suite", suite, "--scenarios", PROJECT / "scenarios", "--backend", "attached",
            "--reports", tmp_path / "reports", "--certs", tmp_path / "default-certs",
            extra_env={"TLSLAB_LAB": str(evidence / "lab.json")},
        )  # fmt: skip
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, (out, err)
    results = json.loads((tmp_path / "reports" / "latest" / "results.json").read_text())
    assert results["backend"] == "attached"
    cells = {c["receiver"]: c for c in results["results"]}
    assert f"for <inbox@tls12.{ZONE}>" in cells["tls12"]["received"]
    assert f"by mx.no-starttls.{ZONE}" in cells["no-starttls"]["received"]
    assert any(f"accepted for inbox@tls12.{ZONE}" in line for line in lab.out)  # live log


def test_attached_without_a_running_lab_exits_2(tmp_path: Path) -> None:
    status, _, err = finished(
        "run", "--suite", "ses-2025", "--backend", "attached", "--reports", tmp_path / "r",
    )  # fmt: skip
    assert status == 2, err
    assert "no running lab" in err
    assert "tlslab up" in err
