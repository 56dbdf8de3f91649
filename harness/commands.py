"""The `tlslab diff` and `tlslab evidence` verbs; hops live in harness.evidence, drift in diff."""

from __future__ import annotations

import argparse
import errno
import json
import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO

from harness.diff import (
    cells_compared,
    diff_document,
    diff_runs,
    render_table,
    report_drift,
    summary_line,
)
from harness.evidence import by_host, message_hops
from harness.labels import facts_text
from harness.report import load_results
from harness.scoreboard.cli_diff import board_diff
from harness.scoreboard.files import is_board

STDIN = "-"
MAX_MESSAGE_FILE_BYTES = 64 * 2**20  # far above any receiver's message size limit
UNKNOWN_HOST = "(unknown)"
EVIDENCE_FIX = "pass a saved message (.eml file), or - to read one from stdin"

SubParsers = argparse._SubParsersAction  # argparse has no public name for it


class EvidenceFileError(Exception):
    """A message file that cannot be read: names the file, the field and the fix."""

    def __init__(self, path: str, problem: str, fix: str = EVIDENCE_FIX) -> None:
        """Keep the parts and format them as the one-line error every command prints."""
        self.path, self.problem, self.fix = path, problem, fix
        super().__init__(f"{path}: field '(file)': {problem}; fix: {fix}")


def add_commands(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Add the `diff` and `evidence` sub-commands to the `tlslab` parser."""
    diff = sub.add_parser(
        "diff", help="compare two runs cell by cell; exit 1 when any cell changed"
    )
    diff.add_argument(
        "old", type=Path, help="the earlier run: results.json, scoreboard.json or a run folder"
    )
    diff.add_argument(
        "new", type=Path, help="the later run: results.json, scoreboard.json or a run folder"
    )
    diff.add_argument("--json", action="store_true", help="print the changes as one JSON object")
    diff.set_defaults(handler=cmd_diff)

    evidence = sub.add_parser(
        "evidence", help="print the TLS facts of every Received hop of saved messages"
    )
    evidence.add_argument("files", nargs="+", metavar="FILE", help="an .eml file, or - for stdin")
    evidence.add_argument("--json", action="store_true", help="print the hops as a JSON list")
    evidence.set_defaults(handler=cmd_evidence)


def cmd_diff(args: argparse.Namespace) -> int:
    """Print the cells that changed between two runs; exit 1 when any did, 0 otherwise."""
    if is_board(args.old) or is_board(args.new):
        return board_diff(args)
    old, new = load_results(args.old), load_results(args.new)
    changes = diff_runs(old, new)
    compared = cells_compared(old, new)
    if args.json:
        print(json.dumps(diff_document(changes, str(args.old), str(args.new), compared), indent=2))
        return 1 if changes else 0
    print(f"old: {args.old} (suite {old.suite}, run {old.run_id})")
    print(f"new: {args.new} (suite {new.suite}, run {new.run_id})")
    if changes:
        print(render_table(changes))
    print(summary_line(changes, compared))
    return 1 if changes else 0


def _read(name: str) -> bytes:
    """Return the bytes of a message file, or of stdin for `-`; raise EvidenceFileError."""
    if name == STDIN:
        return _bounded(name, sys.stdin.buffer)
    try:
        with open(name, "rb", opener=_open_regular) as handle:
            return _bounded(name, handle)
    except FileNotFoundError:
        raise EvidenceFileError(name, "file not found") from None
    except IsADirectoryError:
        raise EvidenceFileError(name, "is a folder, not a message file") from None
    except OSError as error:
        raise EvidenceFileError(name, f"cannot read it ({error.strerror or error})") from None


def _open_regular(path: str, flags: int) -> int:
    """Open `path` without blocking on a FIFO; raise IsADirectoryError or OSError if not a file."""
    fd = os.open(path, flags | os.O_NONBLOCK)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "is a folder", path)
        raise OSError(errno.EINVAL, "not a regular file (a device, FIFO or socket)", path)
    os.set_blocking(fd, True)
    return fd


def _bounded(name: str, handle: BinaryIO) -> bytes:
    """Read at most MAX_MESSAGE_FILE_BYTES from `handle`; raise EvidenceFileError past that."""
    data = handle.read(MAX_MESSAGE_FILE_BYTES + 1)
    if len(data) > MAX_MESSAGE_FILE_BYTES:
        raise EvidenceFileError(
            name, f"larger than {MAX_MESSAGE_FILE_BYTES // 2**20} MiB, not a saved message"
        )
    return data


def cmd_evidence(args: argparse.Namespace) -> int:
    """Print every Received hop of each message, newest first, with its TLS facts."""
    messages = [(name, message_hops(name, _read(name))) for name in args.files]
    if args.json:
        print(json.dumps([hop.as_json() for _, found in messages for hop in found], indent=2))
        return 0
    for name, found in messages:
        if not found:
            print(f"{name}: no Received headers")
            continue
        print(f"{name}: {len(found)} hop{'s' if len(found) > 1 else ''}, newest first")
        width = max(len(hop.by or UNKNOWN_HOST) for hop in found)
        for hop in found:
            by = hop.by or UNKNOWN_HOST
            print(f"  {hop.number:>2}  by {by:<{width}}  {facts_text(hop.facts)}")
    return 0


__all__ = ["EvidenceFileError", "add_commands", "by_host", "facts_text", "report_drift"]
