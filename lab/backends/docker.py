"""The Docker backend: one container per receiver and a lab DNS on a private, internal network."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lab.backends.base import (
    BackendError,
    RunningLab,
    SenderContainer,
    nothing,
)
from lab.backends.docker_channel import DockerChannel
from lab.backends.docker_dns import publish_records, start_dns_and_resolver, start_plain_dns
from lab.backends.docker_early import EarlySenders
from lab.backends.docker_images import ensure_images
from lab.backends.docker_ready import await_ready_line, log_tail
from lab.backends.docker_sender_host import DockerSenderHost
from lab.backends.docker_sts import HTTPS_PORT, remove_temp_dirs, start_policy_host
from lab.backends.lab_dns import needs_dns
from lab.endpoints import MxEndpoint, ReceiverEndpoint, write_specs_file
from lab.pki import LabPki
from lab.spec import LAB_ZONE, ReceiverSpec

RUN_LABEL = "sender-tls-lab.run"
BRIDGE_PREFIX = "tlslab"  # + an 8-character run id: a Linux interface name (at most 15)
LAB_UID = 10025  # the unprivileged user lab containers run as when the harness runs as root
READY_TIMEOUT = 30.0
ENGINE_CALLS = 4  # engine API calls made side by side when starting or removing containers
READY_WAITS = 32  # receivers' ready waits side by side (each blocks on its container's output)
SMTP_PORT = 25
ENGINE_HINT = "start one with `make docker-engine`, or point DOCKER_HOST at a running engine"


def _to_stderr(line: str) -> None:
    """Print a progress line on standard error, keeping standard output for results."""
    print(line, file=sys.stderr, flush=True)


def docker_client() -> Any:
    """Return a docker SDK client, or raise BackendError with a hint when no engine answers."""
    try:
        import docker
        import docker.errors
    except ImportError:
        raise BackendError("the docker Python package is missing", "pip install docker") from None
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except docker.errors.DockerException as error:
        raise BackendError(f"no Docker engine answers: {error}", ENGINE_HINT) from None
    return client


class DockerBackend:
    """Runs each receiver, the lab DNS and the senders in containers on an internal network."""

    name = "docker"

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        """Use `say` for progress lines (image builds); default: standard error."""
        self.say = say or _to_stderr

    @contextlib.contextmanager
    def start(
        self,
        specs: Sequence[ReceiverSpec],
        pki: LabPki,
        evidence_root: Path,
        senders: Callable[[], Sequence[SenderContainer]] = tuple,
        meanwhile: Callable[[], None] = nothing,
    ) -> Iterator[RunningLab]:
        """Start the lab network, receivers and DNS; yield the lab; always remove everything.

        The `senders` containers start once the DNS has its address, while the receivers boot.
        """
        client = docker_client()
        run = secrets.token_hex(4)
        evidence_root.mkdir(parents=True, exist_ok=True)
        # the images are checked (or built) while the engine creates the run's network
        with ThreadPoolExecutor(max_workers=1) as side:
            checked = side.submit(ensure_images, client, self.say)
            try:
                lab = _LabContainers(client, run, pki, evidence_root)
            except BaseException:
                checked.cancel()
                raise
        early = EarlySenders(lab.sender_host)
        try:
            images = lab.images = checked.result()  # a failed build: the network is removed
            self.say(f"starting {len(specs)} receivers and the lab DNS...")
            plain = not needs_dns(specs)  # no DANE, no MTA-STS: the DNS starts beside them
            with ThreadPoolExecutor(max_workers=1) as first:
                dns = first.submit(lab.start_dns) if plain else None
                endpoints, receivers = lab.start_receivers(specs)
                dns_container = dns.result() if dns else None
            # the receivers boot while the policy host and the DNS start: each wait blocks on
            # its container's output, so the waits run side by side, one thread each
            with ThreadPoolExecutor(max_workers=min(READY_WAITS, len(receivers) or 1)) as waits:
                booted = [waits.submit(lab.await_receiver, c) for c in receivers]
                meanwhile()
                policy_address = start_policy_host(lab, specs, LAB_UID)  # its A: the lab DNS
                signed = None
                if dns_container is None:  # DANE, MTA-STS: the signed lab DNS and a resolver
                    signed, lab.dns_address = start_dns_and_resolver(
                        lab._run, lambda c: _address(c, lab.network.name), images,
                        specs, endpoints, pki, evidence_root, policy_address,
                    )  # fmt: skip
                else:
                    publish_records(evidence_root, specs, endpoints)
                    lab._wait_ready(dns_container, "dns")
                for receiver in booted:
                    receiver.result()  # the first receiver that failed to start is the error
            # only now: started while the receivers boot, the senders' containers took their CPU
            # (2 cores; the Postfix suite 1.3 s slower warm, ses-2025 no faster, 2026-12-03)
            early.begin(senders())
            yield RunningLab(
                self.name, endpoints, pki, evidence_root, sender_host=early.sender_host, dns=signed,
                policy_host=(policy_address, HTTPS_PORT) if policy_address else None,
            )  # fmt: skip
        finally:
            early.close()  # every early start has ended: the removal finds all of them
            lab.remove_all()


class _LabContainers:
    """Everything one run created on the engine, so it can all be removed."""

    def __init__(self, client: Any, run: str, pki: LabPki, evidence_root: Path) -> None:
        """Create the run's internal network (`images` is set once they are checked)."""
        self.client, self.run = client, run
        self.images: dict[str, str] = {}
        self.pki, self.evidence_root = pki, evidence_root
        self.labels = {RUN_LABEL: run}
        self.containers: list[Any] = []
        self.specs_files: list[Path] = []
        self.temp_dirs: list[Path] = []  # e.g. the MTA-STS policy host's keys
        self.dns_address = ""
        self.user, self.certs_dir = _container_user(), pki.root.resolve()
        if os.getuid() == 0:
            # a root harness still runs lab containers unprivileged: hand them what they use
            self.certs_dir = _readable_copy(pki.root, LAB_UID)
            _grant(evidence_root, LAB_UID)
        # the bridge is named tlslab<run>: the host firewall drops what lab containers start
        # towards the host itself (lab/docker/ensure-engine.sh), which `internal` does not stop
        self.network = client.networks.create(
            f"tlslab-{run}",
            driver="bridge",
            internal=True,
            labels=self.labels,
            options={"com.docker.network.bridge.name": f"{BRIDGE_PREFIX}{run}"},
        )

    def _run(self, name: str, image: str, command: list[str], **options: Any) -> Any:
        """Start one hardened container of this run on the lab network; options override."""
        settings: dict[str, Any] = {
            "user": self.user,
            "cap_drop": ["ALL"],
            "cap_add": ["NET_BIND_SERVICE"],
            "security_opt": ["no-new-privileges"],
            "sysctls": {"net.ipv4.ip_unprivileged_port_start": "0"},
            "environment": {"HOME": "/tmp"},
        }
        settings.update(options)
        container = self.client.containers.run(
            image,
            command,
            name=f"tlslab-{self.run}-{name}",
            detach=True,
            labels=self.labels,
            network=self.network.name,
            **settings,
        )
        self.containers.append(container)
        return container

    def start_receivers(
        self, specs: Sequence[ReceiverSpec]
    ) -> tuple[dict[str, ReceiverEndpoint], list[Any]]:
        """Start one receiver container per MX host of each spec; return endpoints and containers.

        The endpoints are known once the containers exist; `await_receivers` waits until they
        answer, so the DNS and the policy host can start while the receivers boot.
        """
        hosts = [(spec, route.host) for spec in specs for route in spec.mx_routes]
        # one file of every receiver, read via /evidence: each container checks the certificates
        # of the set the harness checked, so it finds that check's recorded pass (lab.pki_stamp)
        # instead of loading `cryptography` for a check of its own receiver alone
        specs_file = write_specs_file(specs, self.evidence_root)
        self.specs_files.append(specs_file)

        def start(job: tuple[ReceiverSpec, str]) -> Any:
            spec, mx_host = job
            command = [
                "python", "-m", "lab.serve", "--specs-file", f"/evidence/{specs_file.name}",
                "--certs-dir", "/certs", "--evidence-dir", "/evidence", "--receiver", spec.id,
                "--host", "0.0.0.0", "--port", str(SMTP_PORT), "--mx-host", mx_host,
            ]  # fmt: skip
            own = mx_host == spec.mx_host  # other MX hosts are named after their first label
            container = self._run(
                spec.id if own else f"{spec.id}-{mx_host.split('.', 1)[0]}",
                self.images["lab"],
                command,
                hostname=mx_host,
                volumes={
                    str(self.certs_dir): {"bind": "/certs", "mode": "ro"},
                    str(self.evidence_root.resolve()): {"bind": "/evidence", "mode": "rw"},
                },
            )
            container.reload()  # its address on the lab network
            return container

        # the engine creates containers faster side by side; a failure still reaches remove_all
        with ThreadPoolExecutor(max_workers=ENGINE_CALLS) as pool:
            started = list(zip(hosts, pool.map(start, hosts), strict=True))
        listening: dict[str, list[MxEndpoint]] = {spec.id: [] for spec in specs}
        for (spec, mx_host), container in started:
            address = _address(container, self.network.name)
            preference = next(r.preference for r in spec.mx_routes if r.host == mx_host)
            listening[spec.id].append(MxEndpoint(mx_host, preference, address, SMTP_PORT))
        endpoints = {
            spec.id: ReceiverEndpoint.of(spec, self.evidence_root / spec.id, listening[spec.id])
            for spec in specs
        }
        return endpoints, [container for _, container in started]

    def await_receiver(self, container: Any) -> None:
        """Block (bounded) until the receiver printed its ready line and sends its banner."""
        address = self._wait_ready(container, container.name)
        _wait_for_banner(address, container)

    def start_dns(self) -> Any:
        """Start the unsigned lab DNS (its records come once the receivers have addresses)."""
        container, self.dns_address = start_plain_dns(
            self._run, lambda c: _address(c, self.network.name), self.images["lab"],
            self.evidence_root,
        )  # fmt: skip
        return container

    def sender_host(self, spec: SenderContainer) -> DockerSenderHost:
        """Start the container `spec` describes, resolving through the lab DNS (and its `warm`)."""
        if spec.target not in self.images:
            raise BackendError(
                f"the {spec.target} image was not built, so {spec.role} cannot start",
                "see the build message at the start of the run (lab/backends/docker_images.py)",
            )
        pki_root, volumes = self.pki.root.resolve(), {}
        for mount in spec.mounts:
            source = mount.source.resolve()
            if source == pki_root:  # senders see the same certificate copy the receivers read
                source = self.certs_dir
            if mount.writable and os.getuid() == 0 and not spec.root:
                _grant(source, LAB_UID)
            volumes[str(source)] = {"bind": mount.target, "mode": "rw" if mount.writable else "ro"}
        container = self._run(
            spec.role,
            self.images[spec.target],
            list(spec.command),
            dns=[self.dns_address],
            dns_search=[],
            hostname=f"{spec.role}.sender.{LAB_ZONE}",
            user="0:0" if spec.root else self.user,
            cap_add=list(spec.capabilities),
            environment={"HOME": "/root" if spec.root else "/tmp", **dict(spec.environment)},
            volumes=volumes,
        )
        container.reload()
        warm = DockerChannel(container, list(spec.warm)) if spec.warm else None
        return DockerSenderHost(container, _address(container, self.network.name), warm)

    def _wait_ready(self, container: Any, what: str) -> str:
        """Block (bounded) until the container prints its ready line; return its lab address."""
        await_ready_line(container, what, READY_TIMEOUT)
        container.reload()  # its address on the lab network
        return _address(container, self.network.name)

    def remove_all(self) -> None:
        """Remove every container and the network of this run, ignoring what is already gone."""
        remove_run(self.client, self.run)
        for specs_file in self.specs_files:
            specs_file.unlink(missing_ok=True)
        remove_temp_dirs(self.temp_dirs)
        if self.certs_dir != self.pki.root.resolve():
            shutil.rmtree(self.certs_dir, ignore_errors=True)


def _container_user() -> str:
    """Return the user lab containers run as: the caller's, or LAB_UID when the caller is root."""
    if os.getuid() == 0:
        return f"{LAB_UID}:{LAB_UID}"
    return f"{os.getuid()}:{os.getgid()}"


def _readable_copy(certs: Path, uid: int) -> Path:
    """Copy the certificate folder to a private temp folder owned by `uid` (keys stay 0600)."""
    copy = Path(tempfile.mkdtemp(prefix="tlslab-certs-"))
    shutil.copytree(certs, copy, dirs_exist_ok=True)
    for path in [copy, *copy.rglob("*")]:
        os.chown(path, uid, uid)
    return copy


def _grant(directory: Path, uid: int) -> None:
    """Make a host folder the lab containers write into owned by their unprivileged user."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chown(directory, uid, uid)


def remove_run(client: Any, run: str | None = None) -> int:
    """Remove the containers and networks of one run (or of every lab run); return the count."""
    import docker.errors

    selector = f"{RUN_LABEL}={run}" if run else RUN_LABEL

    def remove(container: Any) -> int:
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
            return 1
        return 0

    containers = client.containers.list(all=True, filters={"label": selector})
    with ThreadPoolExecutor(max_workers=ENGINE_CALLS) as pool:
        removed = sum(pool.map(remove, containers))
    for network in client.networks.list(filters={"label": selector}):
        with contextlib.suppress(docker.errors.NotFound):
            network.remove()
            removed += 1
    return removed


def _address(container: Any, network: str) -> str:
    """Return the container's IPv4 address on the lab network."""
    address = str(container.attrs["NetworkSettings"]["Networks"][network]["IPAddress"])
    if not address:
        raise BackendError(f"container {container.name} has no address", "check the engine")
    return address


def _wait_for_banner(address: str, container: Any) -> None:
    """Connect to the receiver and read its 220 banner, bounded by READY_TIMEOUT."""
    deadline = time.monotonic() + READY_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, SMTP_PORT), timeout=5) as sock:
                if sock.recv(512).startswith(b"220"):
                    return
        except OSError as error:
            last = error
        time.sleep(0.05)
    raise BackendError(
        f"{container.name} at {address}:{SMTP_PORT} sent no banner ({last}): {log_tail(container)}",
        "the host must reach containers by address on the lab network",
    )
