"""The scoreboard refuses to start when the kernel's neighbour table cannot hold its entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.scenarios import scenarios_root
from harness.scoreboard.plan import build_plan
from harness.scoreboard.run import check_neighbour_room, neighbour_entries
from lab.backends.base import BackendError


def test_a_whole_board_needs_more_than_the_kernel_default(tmp_path: Path) -> None:
    """The default limit (1024) is refused with the fix; a raised limit passes (the control)."""
    plan = build_plan(scenarios_root(None), None, None, None)
    assert neighbour_entries(plan) > 1024
    limit = tmp_path / "gc_thresh3"
    limit.write_text("1024\n")
    with pytest.raises(BackendError, match=r"holds 1024 entries.*gc_thresh3=16384"):
        check_neighbour_room(plan, limit)
    limit.write_text("16384\n")
    check_neighbour_room(plan, limit)


def test_a_small_subset_fits_the_default_and_an_unreadable_limit_is_not_judged(
    tmp_path: Path,
) -> None:
    """Three receivers x two senders fit in 1024; no limit file means nothing to judge."""
    plan = build_plan(scenarios_root(None), "tls13,no-starttls,no-shared-cipher",
                      "postfix-may,paubox", None)  # fmt: skip
    limit = tmp_path / "gc_thresh3"
    limit.write_text("1024\n")
    check_neighbour_room(plan, limit)
    check_neighbour_room(build_plan(scenarios_root(None), None, None, None), tmp_path / "none")
