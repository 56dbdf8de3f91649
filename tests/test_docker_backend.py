"""The Docker backend: same evidence as the local backend, real DNS, and nothing left behind."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import selectors
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from waiting import eventually as wait_until

from harness.evidence import parse_received, received_headers
from harness.model import Outcome, Verdict
from harness.report import load_results
from harness.run_start import backend_named, open_run
from harness.scenarios import LoadedSuite, load_suite
from lab.backends.base import SenderContainer
from lab.backends.docker import RUN_LABEL, DockerBackend, remove_run
from lab.backends.docker_images import ensure_images
from lab.pki import LabPki
from lab.serve import ReceiverEndpoint
from lab.spec import ReceiverSpec, TlsVersion

pytestmark = pytest.mark.integration
PROJECT = Path(__file__).resolve().parents[1]
SUBSET = ["tls13", "tls10", "no-starttls", "self-signed", "mismatched"]
WAIT = 20.0
SIOCGIFADDR = 0x8915
NOT_LAB = "203.0.113.1"  # TEST-NET-3: never routed; the probe's SYN never leaves this host
# run in a sender container: try to connect to each host:port (nothing is sent), say what happened
REACH_PROBE = """\
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        print(target, "connected")
    except OSError as error:
        print(target, "failed", type(error).__name__)
"""
# run in a sender container: one message over STARTTLS to a receiver (by container address)
SEND_PROBE = """\
import smtplib, ssl, sys
address, domain, message_id = sys.argv[1:]
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
with smtplib.SMTP(address, 25, local_hostname="probe.sender.lab.test", timeout=10) as smtp:
    smtp.starttls(context=context)
    body = f"Message-ID: {message_id}\\r\\nSubject: probe\\r\\n\\r\\nevidence on the host\\r\\n"
    smtp.sendmail("probe@sender.lab.test", [f"inbox@{domain}"], body)
print("sent")
"""


def other_host_addresses(client: Any) -> set[str]:
    """Return the host's docker0 address and its default-route source address, where it has them."""
    found = set()
    for network in client.networks.list(names=["bridge"]):
        bridge = (network.attrs.get("Options") or {}).get("com.docker.network.bridge.name")
        with contextlib.suppress(OSError):  # no such interface, or it has no IPv4 address
            found.add(interface_address(bridge or "docker0"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.connect((NOT_LAB, 9))  # UDP connect only picks a route: nothing is sent
            found.add(udp.getsockname()[0])
        except OSError:
            pass  # no default route: nothing more to listen on
    return found


def interface_address(name: str) -> str:
    """Return the IPv4 address of a network interface (SIOCGIFADDR); OSError when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        request = struct.pack("256s", name.encode()[:15])
        return socket.inet_ntoa(fcntl.ioctl(udp.fileno(), SIOCGIFADDR, request)[20:24])


@pytest.fixture(scope="module")
def client(docker_engine: Any) -> Any:
    return docker_engine


def left_behind(client: Any, before: tuple[list[str], list[str]]) -> tuple[set[str], set[str]]:
    """Return lab containers and networks that exist now but did not exist at `before`."""
    now = lab_resources(client)
    return set(now[0]) - set(before[0]), set(now[1]) - set(before[1])


def lab_resources(client: Any) -> tuple[list[str], list[str]]:
    """Return the names of every lab-labelled container and network on the engine."""
    label = {"label": RUN_LABEL}
    containers = [c.name for c in client.containers.list(all=True, filters=label)]
    networks = [n.name for n in client.networks.list(filters=label)]
    return containers, networks


@pytest.fixture(scope="module")
def mini_suite(tmp_path_factory: pytest.TempPathFactory) -> LoadedSuite:
    """A copy of ses-2025 restricted to a representative subset of receivers."""
    root = tmp_path_factory.mktemp("scenarios")
    for folder in ("receivers", "senders"):
        shutil.copytree(PROJECT / "scenarios" / folder, root / folder)
    full = yaml.safe_load((PROJECT / "scenarios/suites/ses-2025.yaml").read_text())
    full["receivers"] = SUBSET
    full["cells"] = {r: full["cells"][r] for r in SUBSET}
    (root / "suites").mkdir()
    path = root / "suites" / "mini.yaml"
    path.write_text(yaml.safe_dump(full))
    return load_suite(path)


def run_all(loaded: LoadedSuite, backend: str, certs: Path, reports: Path) -> list[Any]:
    with open_run(loaded, backend_named(backend), certs, reports) as run:
        return [run.run_cell(r, s) for r, s in loaded.suite.cell_ids]


def test_docker_and_local_backends_agree(
    client: Any, mini_suite: LoadedSuite, lab_pki: LabPki, tmp_path: Path
) -> None:
    before = lab_resources(client)
    local = run_all(mini_suite, "local", lab_pki.root, tmp_path / "local")
    docker = run_all(mini_suite, "docker", lab_pki.root, tmp_path / "docker")

    def key(results: list[Any]) -> list[tuple[str, str, str, str | None]]:
        return [(r.id, r.outcome.value, r.verdict.value, r.tls and r.tls.version.value)
                for r in results]  # fmt: skip

    assert key(docker) == key(local)
    assert all(r.verdict.value == "pass" for r in docker)
    # on Docker the sender connects from its own container, not from the host
    delivered = [r for r in docker if r.outcome.value == "delivered"]
    assert delivered
    assert all(not s.peer.startswith("127.") for r in delivered for s in r.sessions)
    assert left_behind(client, before) == (set(), set())


@pytest.fixture(scope="class")
def docker_lab(
    client: Any, receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:  # fmt: skip
    specs = [receiver_specs[r] for r in SUBSET]
    evidence = tmp_path_factory.mktemp("docker-evidence")
    with DockerBackend().start(specs, lab_pki, evidence) as lab:
        yield lab


class TestRunningDockerLab:
    """Checks on one running Docker lab (torn down before the lifecycle tests below)."""

    def test_lab_dns_answers_mx_and_a_for_every_receiver(self, docker_lab: Any) -> None:
        host = docker_lab.sender_host(SenderContainer("dns-probe"))
        script = (
            "import sys, dns.resolver as r\n"
            "for d in sys.argv[1:]:\n"
            "    mx = str(r.resolve(d, 'MX', lifetime=5)[0].exchange).rstrip('.')\n"
            "    print(d, mx, r.resolve(mx, 'A', lifetime=5)[0].address)\n"
        )
        domains = [e.domain for e in docker_lab.endpoints.values()]
        status, output = host.exec(["python", "-c", script, *domains])
        assert status == 0, output
        answers = {line.split()[0]: line.split()[1:] for line in output.strip().splitlines()}
        for endpoint in docker_lab.endpoints.values():
            assert answers[endpoint.domain] == [endpoint.mx_host, endpoint.host]
        # negative control: a name the lab does not serve has no MX
        status, output = host.exec(["python", "-c", script, "tls99.lab.test"])
        assert status != 0
        assert "NXDOMAIN" in output or "does not exist" in output

    def test_the_lab_network_is_internal(self, client: Any, docker_lab: Any) -> None:
        networks = client.networks.list(filters={"label": RUN_LABEL})
        assert len(networks) == 1
        assert networks[0].attrs["Internal"] is True
        # proof, not the flag: listeners on the host's own addresses, and an address off the lab
        host_addresses = {
            networks[0].attrs["IPAM"]["Config"][0]["Gateway"],
            *other_host_addresses(client),
        }
        with contextlib.ExitStack() as stack:
            listeners = [stack.enter_context(socket.create_server((a, 0))) for a in host_addresses]
            for listener in listeners:  # control: the host itself reaches each listener
                socket.create_connection(listener.getsockname()[:2], timeout=3).close()
                listener.accept()[0].close()
                listener.setblocking(False)
            blocked = [
                f"{a}:{p}" for listener in listeners for a, p in [listener.getsockname()[:2]]
            ]
            blocked.append(f"{NOT_LAB}:25")
            receiver = f"{docker_lab.endpoints['tls13'].host}:25"
            host = docker_lab.sender_host(SenderContainer("reach-probe"))
            status, output = host.exec(["python", "-c", REACH_PROBE, *blocked, receiver])
            assert status == 0, output
            reached = dict(line.split(" ", 1) for line in output.strip().splitlines())
            # negative control, driven the same way: the lab's own receiver is reachable
            assert reached.pop(receiver) == "connected", output
            assert {t: r.split()[0] for t, r in reached.items()} == dict.fromkeys(blocked, "failed")
            for listener in listeners:  # nothing from the lab ever got through to the host
                with pytest.raises(BlockingIOError):
                    listener.accept()

    def test_evidence_lands_on_the_host_and_containers_run_without_root_powers(
        self, client: Any, docker_lab: Any
    ) -> None:
        containers = client.containers.list(filters={"label": RUN_LABEL})
        receivers = [c for c in containers if c.name.endswith("-tls13")]
        assert receivers
        config = receivers[0].attrs["HostConfig"]
        assert config["CapDrop"] == ["ALL"]
        assert config["CapAdd"] == ["NET_BIND_SERVICE"]
        user = receivers[0].attrs["Config"]["User"]

        assert user.split(":")[0] not in ("", "0", "root")  # never root, even for a root harness
        if os.getuid() != 0:
            assert user == f"{os.getuid()}:{os.getgid()}"
        # a message sent from a sender container lands, as an .eml, in the host's folder
        endpoint: ReceiverEndpoint = docker_lab.endpoints["tls13"]
        message_id = f"<evidence-{secrets.token_hex(6)}@sender.lab.test>"
        host = docker_lab.sender_host(SenderContainer("evidence-probe"))
        status, output = host.exec(
            ["python", "-c", SEND_PROBE, endpoint.host, endpoint.domain, message_id]
        )
        assert (status, output.strip()) == (0, "sent"), output

        def stored() -> bytes | None:
            for path in endpoint.evidence_dir.glob("*.eml"):
                data = path.read_bytes()
                if message_id.encode() in data:
                    return data
            return None

        data = wait_until(stored, f"the .eml of {message_id} on the host", WAIT)
        (top, *_rest) = received_headers(data)
        assert "by mx.tls13.lab.test" in top
        facts = parse_received(top)
        assert facts is not None
        assert facts.version is TlsVersion.TLS13
        assert data.rstrip().endswith(b"evidence on the host")


def test_two_mx_hosts_run_as_two_containers_published_in_preference_order(
    client: Any, receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    specs = [receiver_specs["mx-fallback"], receiver_specs["tls13"]]
    script = (
        "import sys, socket\n"
        "from harness.senders.remote import DnsRouter\n"
        "for d in sys.argv[1:]:\n"
        "    print(d, *[h + '=' + DnsRouter().address_of(h)[0] for h in DnsRouter().mx_hosts(d)])\n"
    )
    with DockerBackend().start(specs, lab_pki, tmp_path / "evidence") as lab:
        assert lab.sender_host is not None
        host = lab.sender_host(SenderContainer("mx-probe"))
        names = {c.name for c in client.containers.list(filters={"label": RUN_LABEL})}
        status, output = host.exec(
            ["python", "-c", script, "mx-fallback.lab.test", "tls13.lab.test"]
        )
        fallback = lab.endpoint("mx-fallback")
        run = next(n for n in names if n.endswith("-mx-probe")).removesuffix("-mx-probe")
    assert status == 0, output
    answers = {line.split()[0]: line.split()[1:] for line in output.strip().splitlines()}
    assert answers["mx-fallback.lab.test"] == [f"{m.mx_host}={m.host}" for m in fallback.mx]
    assert [m.mx_host for m in fallback.mx] == [
        "mx-plain.mx-fallback.lab.test", "mx.mx-fallback.lab.test"
    ]  # fmt: skip
    assert fallback.mx[0].host != fallback.mx[1].host  # two containers, two addresses
    assert {f"{run}-mx-fallback", f"{run}-mx-fallback-mx-plain"} <= names
    # negative control: a receiver without an MX list publishes its one MX host
    assert answers["tls13.lab.test"] == [f"mx.tls13.lab.test={lab.endpoint('tls13').host}"]


def test_a_second_start_reuses_the_images(client: Any) -> None:
    first = ensure_images(client)
    said: list[str] = []
    second = ensure_images(client, said.append)
    assert second == first
    assert said == []  # warm: nothing built, nothing to say


def test_nothing_left_after_a_failing_cell(
    client: Any, receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    before = lab_resources(client)
    seen: list[str] = []

    def failing_cell() -> None:
        with DockerBackend().start([receiver_specs["tls12"]], lab_pki, tmp_path):
            seen.extend(lab_resources(client)[0])
            raise RuntimeError("cell blew up")

    with pytest.raises(RuntimeError, match="cell blew up"):
        failing_cell()
    assert seen, "the lab was running when the cell failed"
    assert left_behind(client, before) == (set(), set())


def test_sigint_mid_run_leaves_nothing(client: Any, lab_pki: LabPki, tmp_path: Path) -> None:
    before = lab_resources(client)
    command = [
        sys.executable, "-m", "harness.cli", "run", "--backend", "docker",
        "--certs", str(lab_pki.root), "--reports", str(tmp_path),
    ]  # fmt: skip
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=PROJECT
    ) as process:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        seen = b""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            while b"[ 1/27]" not in seen and time.monotonic() < deadline:
                if selector.select(deadline - time.monotonic()):
                    chunk = os.read(process.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    seen += chunk
        assert b"[ 1/27]" in seen, seen
        assert left_behind(client, before)[0], "the run should have containers while it runs"
        process.send_signal(signal.SIGINT)
        status = process.wait(60)
        stderr = process.stderr.read().decode() if process.stderr else ""
        assert status == 130, stderr
        assert "Traceback" not in stderr
    assert left_behind(client, before) == (set(), set())
    # the cells that ran before the interrupt are still reported, judged
    first = re.search(rb"\[ 1/27\] (\S+)", seen)
    assert first is not None, seen
    assert not (tmp_path / "latest").exists(), "an interrupted run never moves latest"
    (run_dir,) = [p for p in tmp_path.iterdir() if (p / "results.json").exists()]
    report = load_results(run_dir)
    assert (report.suite, report.backend) == ("ses-2025", "docker")
    assert not report.complete
    assert report.stopped_by
    judged = {r.id: r for r in report.results}
    assert 1 <= len(judged) < 27, sorted(judged)
    cell = judged[first.group(1).decode()]
    assert cell.verdict is Verdict.PASS, cell
    assert cell.outcome is not Outcome.ERROR


def test_down_removes_what_a_crashed_run_left(client: Any) -> None:
    image = ensure_images(client)["lab"]
    labels = {RUN_LABEL: "crashed-run"}
    network = client.networks.create("tlslab-crashed-run", internal=True, labels=labels)
    client.containers.run(image, ["sleep", "60"], detach=True, labels=labels,
                          network=network.name, name="tlslab-crashed-run-x")  # fmt: skip
    before = lab_resources(client)
    assert "tlslab-crashed-run-x" in before[0]
    assert "tlslab-crashed-run" in before[1]
    result = subprocess.run(
        [sys.executable, "-m", "harness.cli", "down", "--run", "crashed-run"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "removed 2" in result.stdout
    after = lab_resources(client)
    assert "tlslab-crashed-run-x" not in after[0]
    assert "tlslab-crashed-run" not in after[1]
    assert remove_run(client, "crashed-run") == 0  # idempotent


SERVED_CERT_SCRIPT = """
import hashlib, socket, ssl, sys
host, name = sys.argv[1], sys.argv[2] or None
sock = socket.create_connection((host, 25), timeout=10)
reader = sock.makefile("rb")
def reply():
    while True:
        line = reader.readline()
        if line[3:4] != b"-":
            return line
reply()
sock.sendall(b"EHLO probe.lab.test\\r\\n")
reply()
sock.sendall(b"STARTTLS\\r\\n")
assert reply().startswith(b"220"), "no 220 to STARTTLS"
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
context.set_ciphers("DEFAULT:@SECLEVEL=0")
tls = context.wrap_socket(sock, server_hostname=name)
print(hashlib.sha256(tls.getpeercert(True)).hexdigest())
"""


def test_new_certificate_files_reach_the_receiver_containers(
    client: Any, receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    states = ["sni-only", "missing-intermediate", "weak-key", "sha1-signature"]
    specs = [receiver_specs[state] for state in states]
    with DockerBackend().start(specs, lab_pki, tmp_path) as lab:
        assert lab.sender_host is not None
        host = lab.sender_host(SenderContainer("cert-probe"))

        def served(receiver: str, name: str) -> str:
            endpoint = lab.endpoints[receiver]
            status, output = host.exec(["python", "-c", SERVED_CERT_SCRIPT, endpoint.host, name])
            assert status == 0, output
            return str(output.strip().splitlines()[-1])

        for state in states:  # each container serves the leaf the host issued for it
            mx_host = lab.endpoints[state].mx_host
            assert served(state, mx_host) == fingerprint(lab_pki.bundle(state).cert_path)
        no_sni = lab_pki.bundle("sni-only").no_sni_cert_path
        assert no_sni is not None
        assert served("sni-only", "") == fingerprint(no_sni)  # the pair for clients without SNI


def fingerprint(path: Path) -> str:
    """Return the SHA-256 of the DER certificate stored as PEM at path."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(path.read_text())).hexdigest()
