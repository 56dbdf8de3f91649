"""The bench's scoreboard section: its Markdown judges only the whole board against the target."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
if str(PROJECT) not in sys.path:  # bench/ is a top-level folder, not an installed package
    sys.path.insert(0, str(PROJECT))

from bench.scoreboard_bench import render_section  # noqa: E402


def run(seconds: float, built: bool = False) -> dict[str, Any]:
    return {
        "seconds": seconds, "start_s": 2.0, "cells_s": seconds - 4, "serial_cells_s": 300.0,
        "harness_cpu_s": 9.0, "built_images": built, "cells": 156, "receivers": 26, "senders": 6,
        "families": [{"family": "downgrade", "cells": 36, "wall_seconds": 40.0,
                      "cell_seconds": 60.0}],
    }  # fmt: skip


def section(subset: list[str], warm: float) -> dict[str, Any]:
    return {
        "subset": subset, "target_s": 180.0, "cold": run(150.0, built=True),
        "warm": [run(warm)], "warm_s": {"median": warm}, "concurrency_ratio": 3.1,
        "meets_target": not subset and warm <= 180.0,
    }  # fmt: skip


def test_whole_board_within_target_says_it_meets_it() -> None:
    text = "\n".join(render_section(section([], 100.0)))
    assert "Warm median 100.0 s: meets the target of 180 s for the whole board" in text
    assert "| first (fresh certs) | 150.0 |" in text
    assert "images built" in text
    assert "| downgrade | 36 | 40.0 | 60.0 |" in text


def test_a_slow_board_and_a_subset_are_not_called_within_target() -> None:
    slow = "\n".join(render_section(section([], 200.0)))
    assert "does not meet the target of 180 s" in slow
    subset = "\n".join(render_section(section(["--receivers", "tls13"], 9.0)))
    assert "a subset, so not judged against the 180 s target" in subset
    assert "meets the target" not in subset
