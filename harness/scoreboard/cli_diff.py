"""`tlslab diff` on two scoreboards: what changed, e.g. after a Postfix or Exim upgrade."""

from __future__ import annotations

import argparse
import json

from harness.scoreboard import diff
from harness.scoreboard.files import load_board


def board_diff(args: argparse.Namespace) -> int:
    """Print the versions and cells that changed between two scoreboards; exit 1 on any cell."""
    old, new = load_board(args.old), load_board(args.new)
    changes = diff.diff_boards(old, new)
    total, versions = diff.compared(old, new), diff.version_changes(old, new)
    if args.json:
        document = diff.document(changes, str(args.old), str(args.new), total, versions)
        print(json.dumps(document, indent=2))
        return 1 if changes else 0
    print(f"old: {args.old} (scoreboard, run {old.run_id})")
    print(f"new: {args.new} (scoreboard, run {new.run_id})")
    print(diff.render(changes, total, versions))
    return 1 if changes else 0


__all__ = ["board_diff"]
