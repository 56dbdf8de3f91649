"""Shared fixtures: the shipped receiver states and one lab PKI generated per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tools import missing

from harness import evidence
from harness.scenarios import load_receiver
from lab.backends import BackendError
from lab.backends.docker import docker_client
from lab.pki import LabPki, ensure_certs
from lab.spec import ReceiverSpec

RECEIVERS_DIR = Path(__file__).resolve().parents[1] / "scenarios" / "receivers"


@pytest.fixture(scope="session")
def receiver_specs() -> dict[str, ReceiverSpec]:
    """Return every shipped receiver state from scenarios/receivers/, keyed by id."""
    return {path.stem: load_receiver(path) for path in sorted(RECEIVERS_DIR.glob("*.yaml"))}


@pytest.fixture(scope="session")
def lab_pki(
    tmp_path_factory: pytest.TempPathFactory, receiver_specs: dict[str, ReceiverSpec]
) -> LabPki:
    """Generate the lab CA, the untrusted CA and one leaf per shipped receiver, once per session."""
    return ensure_certs(receiver_specs.values(), tmp_path_factory.mktemp("lab-certs"))


@pytest.fixture(scope="session")
def docker_engine() -> Any:
    """Return a docker client; without an engine skip, or fail when Docker is required."""
    try:
        return docker_client()
    except BackendError as error:
        missing(f"no Docker engine: {error}", "make docker-ready", docker=True)


@pytest.fixture(autouse=True)
def _no_evidence_parser_crash() -> Iterator[None]:
    """Fail any test during which a guarded evidence parser crashed (it returns None, logged)."""
    before = evidence.parser_crashes()
    yield
    after = evidence.parser_crashes()
    assert after == before, f"an evidence parser crashed (see the log): {before} -> {after}"
