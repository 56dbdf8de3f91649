"""`tlslab list`: the suites, receivers and senders a scenarios folder holds, with descriptions."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.scenarios import ScenarioError, load_receiver, load_sender, read_yaml, scenarios_root

SubParsers = argparse._SubParsersAction  # argparse has no public name for it


def add_list_command(sub: SubParsers[argparse.ArgumentParser]) -> None:
    """Add `tlslab list` to the parser."""
    listing = sub.add_parser("list", help="list suites, receivers and senders with descriptions")
    listing.add_argument("--scenarios", type=Path, help="scenarios folder (default: the project's)")
    listing.set_defaults(handler=cmd_list)


def _one_line(text: str, width: int = 90) -> str:
    """Return text on one line, cut at `width` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def describe(root: Path) -> dict[str, list[tuple[str, str]]]:
    """Return {"suites"|"receivers"|"senders": [(id, description)]} for a scenarios folder."""
    if not root.is_dir():
        raise ScenarioError(
            root, "--scenarios", "the scenarios folder does not exist",
            "pass a folder holding receivers/, senders/ and suites/",
        )  # fmt: skip
    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((root / "suites").glob("*.yaml")):
        data = read_yaml(path)
        text = str(data.get("title") or data.get("description") or "")
        found.setdefault("suites", []).append((path.stem, text))
    for path in sorted((root / "receivers").glob("*.yaml")):
        found.setdefault("receivers", []).append((path.stem, load_receiver(path).description))
    for path in sorted((root / "senders").glob("*.yaml")):
        profile = load_sender(path)
        text = profile.models or profile.description
        found.setdefault("senders", []).append((path.stem, f"[{profile.driver}] {text}"))
    return found


def cmd_list(args: argparse.Namespace) -> int:
    """Print every suite, receiver and sender with its description."""
    root = scenarios_root(args.scenarios)
    found = describe(root)
    for kind in ("suites", "receivers", "senders"):
        items = found.get(kind, [])
        print(f"{kind} ({len(items)}) in {root / kind}:")
        width = max((len(name) for name, _ in items), default=0)
        for name, text in items:
            print(f"  {name:<{width}}  {_one_line(text)}".rstrip())
    return 0


__all__ = ["add_list_command", "cmd_list", "describe"]
