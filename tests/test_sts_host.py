"""The MTA-STS policy host and records, proven with a real HTTPS client and DNS queries."""

from __future__ import annotations

import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest

from harness.senders.sts_fetch import StsClient, StsFetchError
from lab.backends.base import RunningLab
from lab.backends.local import LocalBackend
from lab.pki import LabPki
from lab.spec import ReceiverSpec
from lab.sts_host import REDIRECT_PATH
from lab.sts_spec import POLICY_PATH

STATES = ["sts-enforce", "sts-fetch-404", "sts-fetch-redirect", "sts-policy-bad-cert"]


@pytest.fixture(scope="module")
def sts_lab(
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningLab]:
    specs = [receiver_specs[state] for state in STATES]
    with LocalBackend().start(specs, lab_pki, tmp_path_factory.mktemp("sts-evidence")) as lab:
        yield lab


def dns_server(lab: RunningLab) -> tuple[str, int]:
    """Return where the run's one lab DNS answers (it carries the MTA-STS records too)."""
    assert lab.dns is not None
    return lab.dns.host, lab.dns.port


def client(lab: RunningLab) -> StsClient:
    return StsClient(lab.pki.ca_cert_path, dns_server(lab), lab.policy_host)


def get(lab: RunningLab, host: str, path: str, context: ssl.SSLContext) -> bytes:
    """Return the raw HTTP response of one GET to the policy host, as any HTTPS client sends it."""
    assert lab.policy_host is not None
    with (
        socket.create_connection(lab.policy_host, timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_a_valid_policy_host_serves_the_policy_as_text_plain(sts_lab: RunningLab) -> None:
    found = client(sts_lab).lookup("sts-enforce.lab.test")
    assert found.policy is not None, found.reason
    assert found.policy.mx == ("mx.sts-enforce.lab.test",)
    assert (found.txt, found.txt_id) == ("v=STSv1; id=lab1", "lab1")
    again = client(sts_lab)  # a cache is per client: the second lookup of one client is cached
    assert not again.lookup("sts-enforce.lab.test").cached
    assert again.lookup("sts-enforce.lab.test").cached


def test_404_is_no_policy(sts_lab: RunningLab) -> None:
    with pytest.raises(StsFetchError, match="HTTP 404"):
        client(sts_lab).fetch("sts-fetch-404.lab.test")
    assert client(sts_lab).lookup("sts-fetch-404.lab.test").policy is None


def test_a_redirect_is_not_followed_though_its_target_serves_a_policy(
    sts_lab: RunningLab,
) -> None:
    with pytest.raises(StsFetchError, match=r"HTTP 301 to .*redirects are not followed"):
        client(sts_lab).fetch("sts-fetch-redirect.lab.test")
    host = "mta-sts.sts-fetch-redirect.lab.test"
    context = ssl.create_default_context(cafile=str(sts_lab.pki.ca_cert_path))
    moved = get(sts_lab, host, REDIRECT_PATH, context)  # a client that followed would get it
    assert moved.startswith(b"HTTP/1.1 200 ")
    assert b"mode: enforce" in moved


def test_a_self_signed_policy_host_fails_verification_though_it_serves_the_policy(
    sts_lab: RunningLab,
) -> None:
    with pytest.raises(StsFetchError, match="certificate not valid: self-signed"):
        client(sts_lab).fetch("sts-policy-bad-cert.lab.test")
    served = get(sts_lab, "mta-sts.sts-policy-bad-cert.lab.test", POLICY_PATH, unverified())
    assert served.startswith(b"HTTP/1.1 200 ")
    assert b"mode: enforce" in served


def test_a_valid_host_fails_verification_under_another_name(sts_lab: RunningLab) -> None:
    context = ssl.create_default_context(cafile=str(sts_lab.pki.ca_cert_path))
    ok = get(sts_lab, "mta-sts.sts-enforce.lab.test", POLICY_PATH, context)
    assert ok.startswith(b"HTTP/1.1 200 ")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"mismatch|doesn.t match"):
        get(sts_lab, "mta-sts.unknown.lab.test", POLICY_PATH, context)


def test_the_lab_dns_publishes_the_sts_and_tlsrpt_records(sts_lab: RunningLab) -> None:
    found = {}
    for owner in ["_mta-sts.sts-enforce.lab.test", "_smtp._tls.sts-enforce.lab.test"]:
        query = dns.message.make_query(owner, "TXT")
        address, port = dns_server(sts_lab)
        answer = dns.query.udp(query, address, port=port, timeout=3).answer
        found[owner] = [b"".join(r.strings).decode() for r in answer[0]]
    assert found == {
        "_mta-sts.sts-enforce.lab.test": ["v=STSv1; id=lab1"],
        "_smtp._tls.sts-enforce.lab.test": ["v=TLSRPTv1; rua=mailto:tlsrpt@lab.test"],
    }
    assert client(sts_lab).txt("_mta-sts.tls13.lab.test") == []  # a domain without a record


def test_the_services_stop_with_the_lab_and_leave_nothing_behind(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    before = set(Path(tempfile.gettempdir()).glob("tlslab-sts-*"))
    with LocalBackend().start([receiver_specs["sts-enforce"]], lab_pki, tmp_path) as lab:
        assert lab.policy_host is not None
        https, dns_address = lab.policy_host, dns_server(lab)
        assert client(lab).lookup("sts-enforce.lab.test").policy is not None  # up: control
        during = set(Path(tempfile.gettempdir()).glob("tlslab-sts-*")) - before
        assert len(during) == 1  # the policy host's keys live in one private temp folder
    assert not any(path.exists() for path in during)
    for address in (https, dns_address):
        with pytest.raises(ConnectionRefusedError), socket.create_connection(address, timeout=3):
            pass


def test_a_lab_without_sts_states_starts_no_policy_host(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    with LocalBackend().start([receiver_specs["tls13"]], lab_pki, tmp_path) as lab:
        assert (lab.policy_host, lab.dns) == (None, None)


def test_on_docker_the_policy_host_is_a_container_on_443_removed_with_the_lab(
    docker_engine: Any, receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    from lab.backends.docker import RUN_LABEL, DockerBackend

    specs = [receiver_specs["sts-enforce"], receiver_specs["sts-policy-bad-cert"]]
    before = set(Path(tempfile.gettempdir()).glob("tlslab-sts-*"))
    with DockerBackend(say=lambda line: None).start(specs, lab_pki, tmp_path) as lab:
        assert lab.policy_host is not None
        assert lab.policy_host[1] == 443
        found = client(lab).lookup("sts-enforce.lab.test")  # the host reaches lab addresses
        assert found.policy is not None, found.reason
        with pytest.raises(StsFetchError, match="certificate not valid: self-signed"):
            client(lab).fetch("sts-policy-bad-cert.lab.test")
        run = docker_engine.containers.list(filters={"name": "policy-host"})
        mine = [c for c in run if c.attrs["NetworkSettings"]["Networks"]]
        assert mine, "no policy host container"
        labels = {c.labels.get(RUN_LABEL) for c in mine}
        during = set(Path(tempfile.gettempdir()).glob("tlslab-sts-*")) - before
    left = [
        c.name for c in docker_engine.containers.list(all=True)
        if c.labels.get(RUN_LABEL) in labels
    ]  # fmt: skip
    assert left == []
    assert during
    assert not any(path.exists() for path in during)
