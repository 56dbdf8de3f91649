"""Downgrade states as data, and the proxy's records as evidence: spec, cell detail, Docker."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from harness.proxy_evidence import front_connections
from harness.run_start import open_run
from harness.scenarios import load_suite
from lab.backends.docker import DockerBackend
from lab.backends.local import LocalBackend
from lab.evidence_store import JsonLines
from lab.pki import LabPki
from lab.proxy_record import PROXY_FILE, ProxyRecord, read_proxy_records
from lab.spec import ProxyVector, ReceiverSpec

ROOT = Path(__file__).resolve().parents[1]
DOWNGRADE_STATES = [v.value for v in ProxyVector if v is not ProxyVector.NONE]
integration = pytest.mark.integration


def test_proxy_vector_is_validated() -> None:
    """An unknown vector and a proxy before a receiver without STARTTLS are refused."""
    ReceiverSpec(id="ok", proxy={"vector": "strip-starttls"})
    with pytest.raises(ValidationError, match="vector"):
        ReceiverSpec(id="bad", proxy={"vector": "strip-everything"})
    with pytest.raises(ValidationError, match="starttls: true"):
        ReceiverSpec(id="bad", starttls=False, proxy={"vector": "starttls-454"})
    with pytest.raises(ValidationError, match="extra"):
        ReceiverSpec(id="bad", proxy={"vector": "none", "port": 1})


def test_shipped_downgrade_states_front_a_healthy_tls13_receiver(
    receiver_specs: dict[str, ReceiverSpec],
) -> None:
    """Each downgrade state is its vector before a TLS 1.3 receiver with a valid certificate."""
    for state in DOWNGRADE_STATES:
        spec = receiver_specs[state]
        assert spec.proxy is not None
        assert spec.proxy.vector.value == state
        assert (spec.tls_min.value, spec.tls_max.value, spec.certificate.value) == (
            "TLSv1.3", "TLSv1.3", "valid",
        )  # fmt: skip


@integration
def test_cell_detail_shows_the_proxy_record(tmp_path: Path) -> None:
    """A proxied cell's detail carries the proxy's record and the receiver's session behind it."""
    loaded = load_suite("beyond", ROOT / "scenarios")
    with open_run(loaded, LocalBackend(), tmp_path / "certs", tmp_path / "reports") as run:
        result = run.run_cell("strip-starttls", "ses-default")
    assert "proxy (strip-starttls): connection 1: removed STARTTLS" in result.detail
    assert "message data crossed in plaintext" in result.detail
    assert "receiver recorded" not in result.detail, "the session behind the proxy was found"
    assert len(result.sessions) == 1
    assert result.sessions[0].starttls is False


def test_front_connections_maps_sender_peers_through_the_proxy(tmp_path: Path) -> None:
    """With proxy records, a client's connections are the proxy's; without, the receiver's own."""
    stored = {"queue_id": "0123456789AB", "message_id": "<m>", "size": 1, "accepted": 1.0,
              "eml": "0123456789AB.eml", "received": "x"}  # fmt: skip
    session = {"receiver": "r", "session_id": "s", "peer_ip": "127.0.0.1", "peer_port": 4000,
               "started": 1.0, "ended": 2.0, "starttls_offered": True, "ended_by": "quit",
               "messages": [stored]}  # fmt: skip
    JsonLines(tmp_path / "sessions.jsonl").append(session)
    assert front_connections(tmp_path, "127.0.0.1") == [(("127.0.0.1", 4000), {"<m>"})]
    record = ProxyRecord(
        receiver="r", vector=ProxyVector.NONE, peer_ip="10.0.0.9", peer_port=5000,
        upstream_ip="127.0.0.1", upstream_port=4000, started=1.0, ended=2.0,
    )  # fmt: skip
    JsonLines(tmp_path / PROXY_FILE).append(record.model_dump(mode="json"))
    assert front_connections(tmp_path, "10.0.0.9") == [(("10.0.0.9", 5000), {"<m>"})]
    assert front_connections(tmp_path, "127.0.0.1") == []


@integration
def test_on_docker_the_mx_host_name_resolves_to_the_proxy(
    docker_engine: object, lab_pki: LabPki, tmp_path: Path
) -> None:
    """The sender container reaches the proxy by the MX name; the receiver sees only the proxy."""
    loaded = load_suite("beyond", ROOT / "scenarios")
    backend = DockerBackend(say=lambda _: None)
    with open_run(loaded, backend, lab_pki.root, tmp_path / "reports") as run:
        result = run.run_cell("strip-starttls", "ses-default")
        directory = run.lab.endpoint("strip-starttls").evidence_dir
    assert result.verdict.value == "pass", result.detail
    attempts = [r for r in read_proxy_records(directory) if r.data_in_plaintext]
    assert len(attempts) == 1, "one sender connection carried the message, through the proxy"
    assert not attempts[0].peer_ip.startswith("127."), "the sender connects from its container"
    assert [s.peer.split(":")[0] for s in result.sessions] == ["127.0.0.1"], "behind the proxy"
