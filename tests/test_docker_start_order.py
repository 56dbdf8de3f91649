"""The Docker backend checks its images while the engine creates the run's network.

A unit test: a stand-in image check (and run id) in front of a real engine.
"""

from __future__ import annotations

import secrets
import time
import types
from pathlib import Path
from typing import Any

import pytest

import lab.backends.docker as docker_backend
from lab.backends.base import BackendError
from lab.backends.docker import RUN_LABEL, DockerBackend
from lab.pki import LabPki
from lab.spec import ReceiverSpec

PATIENCE = 10.0  # seconds the image check waits to see the run's network


def run_resources(client: Any, run: str) -> tuple[list[str], list[str]]:
    """Return the names of the containers and networks labelled with this run."""
    label = {"label": f"{RUN_LABEL}={run}"}
    containers = [c.name for c in client.containers.list(all=True, filters=label)]
    return containers, [n.name for n in client.networks.list(filters=label)]


def test_a_failed_image_check_seen_beside_the_network_leaves_nothing(
    docker_engine: Any,
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = secrets.token_hex(4)
    monkeypatch.setattr(docker_backend, "secrets", types.SimpleNamespace(token_hex=lambda _: run))
    seen: list[str] = []

    def failing_check(_client: Any, _say: Any) -> dict[str, str]:
        deadline = time.monotonic() + PATIENCE  # checked first, then networked: never seen
        while not seen and time.monotonic() < deadline:
            seen.extend(run_resources(docker_engine, run)[1])
            time.sleep(0.02)
        raise BackendError("image build failed", "the test's")

    monkeypatch.setattr(docker_backend, "ensure_images", failing_check)
    assert run_resources(docker_engine, run) == ([], [])  # control: nothing of this run before
    with (
        pytest.raises(BackendError, match="image build failed"),
        DockerBackend(say=lambda _: None).start([receiver_specs["tls12"]], lab_pki, tmp_path),
    ):
        pytest.fail("the lab started without its images")
    assert seen == [f"tlslab-{run}"]  # the network existed while the images were checked
    assert run_resources(docker_engine, run) == ([], [])  # and the failed check removed it
