"""The scoreboard: every receiver state x every real sender and policy model, in one run."""

from harness.scoreboard.model import Scoreboard
from harness.scoreboard.plan import build_plan

__all__ = ["Scoreboard", "build_plan"]
