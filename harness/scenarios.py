"""Load receivers, senders and suites from YAML into frozen models, with errors that help."""

from __future__ import annotations

import dataclasses
import difflib
import errno
import os
import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from harness.expectations import policy_expectation
from harness.model import ID_MAX_LENGTH, ID_PATTERN, CellExpectation, Suite
from harness.scenario_files import ScenarioError as ScenarioError
from harness.scenario_files import escaped
from harness.scenario_files import read_yaml as read_yaml
from harness.senders.registry import SenderProfile
from lab.spec import ReceiverSpec

ModelT = TypeVar("ModelT", bound=BaseModel)
DEFAULT_ROOT = Path(__file__).resolve().parents[1] / "scenarios"
SENDER_ADAPTER: TypeAdapter[SenderProfile] = TypeAdapter(SenderProfile)
# one adapter per type, built on first use: a new TypeAdapter per file generated its schema again
RECEIVER_ADAPTER: TypeAdapter[ReceiverSpec] = TypeAdapter(ReceiverSpec)
SUITE_ADAPTER: TypeAdapter[Suite] = TypeAdapter(Suite)


def scenarios_root(explicit: Path | None = None) -> Path:
    """Return the scenarios folder: explicit, then $TLSLAB_SCENARIOS, then the project's own."""
    if explicit is not None:
        return explicit
    env = os.environ.get("TLSLAB_SCENARIOS")
    return Path(env) if env else DEFAULT_ROOT


def _with_id(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Inject the file stem as `id`; reject an `id` field that disagrees with it."""
    if "id" in data and data["id"] != path.stem:
        raise ScenarioError(
            path, "id", "differs from the file name (the file name is the id)",
            "remove the field, or rename the file to the id it states",
        )  # fmt: skip
    return {**data, "id": path.stem}


def _validate(path: Path, adapter: TypeAdapter[Any], data: dict[str, Any]) -> Any:
    """Validate data, turning the first pydantic error into a ScenarioError."""
    try:
        return adapter.validate_python(data)
    except ValidationError as error:
        first = _first_error(error.errors())
        if first["type"] == "extra_forbidden":
            raise _unknown_field(path, first, error.errors()) from None
        loc = [f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"]]
        message, fix = str(first["msg"]), _fix_for(first["type"])
        if not loc and first["type"] == "value_error":
            # a model-level rule: its message names the field first and the fix after "; "
            message = message.removeprefix("Value error, ")
            message, _, fix = message.partition("; ")
            loc = [word for word in message.split() if word in data][:1]
        field = ".".join(loc).replace(".[", "[") or "(document)"
        raise ScenarioError(path, field, message, fix) from None


def _first_error(errors: list[Any]) -> Any:
    """Return the error to show: an unknown field before the `missing` error its typo causes."""
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    return extra[0] if extra else errors[0]


def _unknown_field(path: Path, error: Any, errors: list[Any]) -> ScenarioError:
    """Return the error for an unknown field, naming the field it is probably a typo of."""
    loc = [f"[{p}]" if isinstance(p, int) else str(p) for p in error["loc"]]
    field = ".".join(loc).replace(".[", "[") or "(document)"
    parent = error["loc"][:-1]
    missing = [
        str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"][:-1] == parent
    ]
    close = difflib.get_close_matches(str(error["loc"][-1]), missing, n=1)
    fix = f"did you mean `{close[0]}`? rename it" if close else _fix_for("extra_forbidden")
    return ScenarioError(path, field, "unknown field", fix)  # the field names it, cut short


def _fix_for(error_type: str) -> str:
    """Return a fix suggestion for a pydantic error type."""
    if error_type == "extra_forbidden":
        return "remove the field (check its spelling against the README's scenario reference)"
    if error_type == "missing":
        return "add the field"
    if error_type in ("enum", "literal_error"):
        return "use one of the allowed values listed"
    if error_type == "bool_type":
        return "correct the value's type: write true or false, unquoted (yes/no/on/off are text)"
    if error_type in ("int_type", "float_type"):
        return "correct the value's type: write a number, unquoted"
    if error_type == "out_of_range":
        return "use a value in the range stated"
    if error_type == "string_too_long":
        return "shorten the text"
    if error_type == "cipher_string":
        return "name TLS 1.2-and-older suites that `openssl ciphers -v` lists"
    return "correct the value's type or format"


def load_receiver(path: Path, root: Path | None = None) -> ReceiverSpec:
    """Load one receiver state (a file inside `root` when given); its id is the file name."""
    data = _with_id(path, read_yaml(path, root))
    spec: ReceiverSpec = _validate(path, RECEIVER_ADAPTER, data)
    return spec


def load_sender(path: Path, root: Path | None = None) -> SenderProfile:
    """Load one sender profile (a file inside `root` when given); its id is the file name."""
    data = _with_id(path, read_yaml(path, root))
    data.setdefault("driver", "reference")
    profile: SenderProfile = _validate(path, SENDER_ADAPTER, data)
    return profile


@dataclasses.dataclass(frozen=True)
class LoadedSuite:
    """A validated suite with the receiver and sender definitions it refers to."""

    suite: Suite
    path: Path
    receivers: dict[str, ReceiverSpec]
    senders: dict[str, SenderProfile]

    def expectation(self, receiver: str, sender: str) -> CellExpectation:
        """Return a cell's expectation: its `cells` entry, else the one the suite's policy sets."""
        stated = self.suite.cells.get(receiver, {}).get(sender)
        if stated is not None or self.suite.policy is None:
            return stated or self.suite.expectation(receiver, sender)
        return policy_expectation(self.suite.policy, self.receivers[receiver])


def _is_suite_path(name: str) -> bool:
    """Return True when a suite argument is a file path rather than an id."""
    return Path(name).suffix in (".yaml", ".yml") or os.sep in name


def resolve_suite_path(name: str, root: Path) -> Path:
    """Return the file for a suite given as an id or a path."""
    if _is_suite_path(name):
        return Path(name)
    if not re.fullmatch(ID_PATTERN, name) or len(name) > ID_MAX_LENGTH:
        raise ScenarioError(
            Path(name[:80]), "suite", "not a suite id or a .yaml path",
            f"give an id matching {ID_PATTERN} (at most {ID_MAX_LENGTH} characters) or a path",
        )  # fmt: skip
    path = root / "suites" / f"{name}.yaml"
    if not root.is_dir():
        raise ScenarioError(
            root, "--scenarios", "the scenarios folder does not exist",
            "pass a folder holding receivers/, senders/ and suites/ (or leave --scenarios out)",
        )  # fmt: skip
    if not any((root / "suites").glob("*.yaml")):
        raise ScenarioError(
            root / "suites", "--scenarios", "the scenarios folder has no suites",
            "add suites/<id>.yaml to it, or pass the folder that has them",
        )  # fmt: skip
    if not os.path.lexists(path):  # a broken link is not unknown: reading it says what is wrong
        known = sorted(escaped(p.stem) for p in (root / "suites").glob("*.yaml"))
        raise ScenarioError(path, "suite", f"unknown suite '{name}'", f"use one of {known}")
    return path


def load_suite(name_or_path: str | Path, root: Path | None = None) -> LoadedSuite:
    """Load a suite and every receiver and sender it names, cross-checking ids and cells.

    A suite named by id, and every receiver and sender a suite names, must be a regular file
    inside the scenarios root (after following links); a suite given as a path may be anywhere.
    """
    named = isinstance(name_or_path, str) and not _is_suite_path(name_or_path)
    base: Path | None = root
    if isinstance(name_or_path, Path):
        path = name_or_path
    else:
        base = scenarios_root(root)
        path = resolve_suite_path(name_or_path, base)
        if root is None and not named and path.parent.name == "suites":
            base = None  # a suite file inside a scenarios tree: that tree holds its receivers
    data = read_yaml(path, base if named else None)
    if base is None:
        base = Path(os.path.realpath(path)).parent.parent
    suite: Suite = _validate(path, SUITE_ADAPTER, _with_id(path, data))
    receivers = _load_named(path, "receivers", suite.receivers, base, load_receiver)
    senders = _load_named(path, "senders", suite.senders, base, load_sender)
    _check_cells(path, suite)
    return LoadedSuite(suite, path, receivers, senders)


def _load_named(suite_path: Path, field: str, ids: tuple[str, ...], root: Path, loader: Any) -> Any:
    """Load each named definition from `root/field/<id>.yaml`, rejecting unknown, repeated ids."""
    folder = root / field
    loaded: dict[str, Any] = {}
    for index, item in enumerate(ids):
        if item in loaded:
            raise ScenarioError(suite_path, f"{field}[{index}]", f"'{item}' is listed twice",
                                "list each id once")  # fmt: skip
        file = folder / f"{item}.yaml"
        if file.is_symlink() and not file.exists():
            raise _unreachable_link(file, f"{field}[{index}] of {suite_path.name}")
        if not os.path.lexists(file):
            known = sorted(escaped(p.stem) for p in folder.glob("*.yaml") if p.exists())
            raise ScenarioError(suite_path, f"{field}[{index}]", f"unknown id '{item}'",
                                f"use one of {known} or add {file}")  # fmt: skip
        loaded[item] = loader(file, root)
    return loaded


def _unreachable_link(file: Path, listed_as: str) -> ScenarioError:
    """Return the error for a symbolic link that loops or whose target is missing."""
    try:
        file.stat()
        what = "a symbolic link that cannot be followed"
    except OSError as error:
        loops = error.errno == errno.ELOOP
        what = "a symbolic link loop" if loops else "a symbolic link to a missing file"
    problem = f"{what} (listed as {listed_as})"
    return ScenarioError(file, "(file)", problem, "point the link at a real file or replace it")


def _check_cells(path: Path, suite: Suite) -> None:
    """Require one expectation per receiver x sender: stated in `cells`, or set by `policy`."""
    if suite.policy is None and not suite.cells:
        raise ScenarioError(
            path, "cells", "the suite states no expectations",
            "add `policy: strict` or a `cells:` entry for every receiver x sender",
        )  # fmt: skip
    for receiver in suite.cells:
        if receiver not in suite.receivers:
            raise ScenarioError(
                path, f"cells.{receiver}", "not a receiver of this suite",
                f"add it to receivers or remove it; receivers: {list(suite.receivers)}",
            )  # fmt: skip
    for receiver in suite.receivers:
        row = suite.cells.get(receiver, {})
        for sender in row:
            if sender not in suite.senders:
                raise ScenarioError(
                    path, f"cells.{receiver}.{sender}", "not a sender of this suite",
                    f"add it to senders or remove it; senders: {list(suite.senders)}",
                )  # fmt: skip
        for sender in suite.senders:
            if sender not in row and suite.policy is None:
                raise ScenarioError(
                    path, f"cells.{receiver}.{sender}", "missing expectation",
                    "add `{outcome: ...}` for this cell or set `policy: strict` for the suite",
                )  # fmt: skip
