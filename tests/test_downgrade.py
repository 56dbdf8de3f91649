"""Downgrades: a failed TLS attempt, then the same message in plaintext, linked and reported.

The reference driver with an opportunistic TLS >= 1.2 profile that retries in plaintext when
its policy is not met (as Exim does within milliseconds) runs against the shipped tls10 state:
the handshake fails (protocol_version), the message then arrives in plaintext. Controls: the
same sender against tls12 (TLS, no downgrade) and against no-starttls (plaintext without any
TLS attempt: not a downgrade either). Everything on loopback.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from harness.downgrade import DOWNGRADE_NOTE
from harness.report import render_summary, results_document
from harness.run_start import open_run
from harness.runner import LabRun
from harness.scenarios import DEFAULT_ROOT, load_suite
from lab.backends.local import LocalBackend

pytestmark = pytest.mark.integration

SENDER = """\
description: opportunistic TLS 1.2 and up, no verification, plaintext when TLS fails
driver: reference
tls: opportunistic
min_version: TLSv1.2
verify: false
on_policy_unmet: plaintext
"""
SUITE = """\
title: downgrade linkage
receivers: [tls10, tls12, no-starttls]
senders: [retry-plain]
cells:
  tls10: {retry-plain: {outcome: delivered, tls: plaintext}}
  tls12: {retry-plain: {outcome: delivered, tls: TLSv1.2}}
  no-starttls: {retry-plain: {outcome: delivered, tls: plaintext}}
"""


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory: pytest.TempPathFactory, lab_pki: Any) -> Iterator[LabRun]:
    """Start the three receivers for a one-column suite."""
    base = tmp_path_factory.mktemp("downgrade")
    root = base / "scenarios"
    shutil.copytree(DEFAULT_ROOT / "receivers", root / "receivers")
    (root / "senders").mkdir()
    (root / "senders" / "retry-plain.yaml").write_text(SENDER)
    (root / "suites").mkdir()
    (root / "suites" / "downgrade.yaml").write_text(SUITE)
    loaded = load_suite(root / "suites" / "downgrade.yaml")
    with open_run(loaded, LocalBackend(), lab_pki.root, base / "reports") as run:
        yield run


def test_plaintext_after_a_failed_handshake_is_a_linked_downgrade(lab_run: LabRun) -> None:
    result = lab_run.run_cell("tls10", "retry-plain")
    assert (result.outcome.value, result.tls) == ("delivered", None)
    assert result.downgraded
    assert DOWNGRADE_NOTE.removeprefix("; ") in result.detail
    link = result.downgrade
    assert link is not None
    by_id = {s.session_id: s for s in result.sessions}
    failed, plain = by_id[link.failed_session], by_id[link.plaintext_session]
    assert (failed.handshake, failed.alert_sent) == ("failed", "protocol_version")
    assert link.failure == failed.alert  # the receiver's account: unsupported protocol
    assert "TLSv1.0" not in failed.offered_versions  # the sender offered 1.2+ only
    assert (plain.handshake, plain.message_ids) == ("none", (result.message_id,))
    row = json.loads(json.dumps(results_document(lab_run.report())))["results"][0]
    assert row["downgraded"] is True
    assert row["downgrade"]["plaintext_session"] == link.plaintext_session
    assert "downgraded: session" in render_summary(lab_run.report())


def test_tls_delivery_is_not_a_downgrade(lab_run: LabRun) -> None:
    result = lab_run.run_cell("tls12", "retry-plain")
    assert result.tls is not None
    assert (result.downgraded, result.downgrade) == (False, None)
    assert DOWNGRADE_NOTE.removeprefix("; ") not in result.detail


def test_plaintext_without_a_tls_attempt_is_not_a_downgrade(lab_run: LabRun) -> None:
    result = lab_run.run_cell("no-starttls", "retry-plain")
    assert (result.outcome.value, result.tls) == ("delivered", None)
    assert (result.downgraded, result.downgrade) == (False, None)
    assert [s.ended_by for s in result.sessions] == ["quit"]
