"""Read one scenario YAML file safely: a bounded regular file, strict YAML, errors leak nothing."""

from __future__ import annotations

import errno
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml._yaml import CParser  # libyaml: the pure-Python parser cost ~30 ms of every run's start
from yaml.constructor import SafeConstructor
from yaml.events import CollectionEndEvent, CollectionStartEvent, NodeEvent, StreamEndEvent
from yaml.nodes import MappingNode, ScalarNode
from yaml.resolver import Resolver

MAX_FILE_BYTES = 64 * 1024  # the largest shipped file is ~2 KB
MAX_DEPTH = 20  # nested mappings/sequences; a suite needs 5
FIELD_MAX_LENGTH = 60
PATH_MAX_LENGTH = 300
YAML_BOOL_TAG = "tag:yaml.org,2002:bool"
YAML_MERGE_TAG = "tag:yaml.org,2002:merge"
QUOTED = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\"""")


class ScenarioError(Exception):
    """A scenario file is wrong; names the file, the field and the fix."""

    def __init__(self, path: Path, field: str, problem: str, fix: str) -> None:
        """Keep the parts (control characters escaped, the field name cut short) for tools."""
        self.path = path
        self.field = escaped(field, FIELD_MAX_LENGTH)
        self.problem, self.fix = escaped(problem), escaped(fix)
        where = escaped(str(path), PATH_MAX_LENGTH)
        message = f"{where}: field '{self.field}': {self.problem}; fix: {self.fix}"
        super().__init__(_one_line(message))


def escaped(text: str, limit: int | None = None) -> str:
    """Return `text` with control and non-ASCII characters backslash-escaped, cut to `limit`."""
    safe = text.encode("unicode_escape").decode("ascii")
    if limit is not None and len(safe) > limit:
        return safe[:limit] + "..."
    return safe


def _one_line(text: str) -> str:
    """Collapse every run of whitespace (including newlines) to one space."""
    return " ".join(text.split())


def read_yaml(path: Path, root: Path | None = None) -> dict[str, Any]:
    """Parse a YAML file that must hold a mapping (inside `root` when given); else ScenarioError."""
    data = parse_yaml(path, read_text(path, root))
    if not isinstance(data, dict):
        raise ScenarioError(
            path, "(document)", f"expected a mapping, got {type(data).__name__}",
            "write `key: value` pairs at the top level",
        )  # fmt: skip
    return data


def read_text(path: Path, root: Path | None = None) -> str:
    """Return the UTF-8 text of a regular file of at most MAX_FILE_BYTES (inside `root`)."""
    real = Path(os.path.realpath(path))
    if root is not None and not real.is_relative_to(os.path.realpath(root)):
        raise ScenarioError(
            path, "(file)", f"resolves outside the scenarios folder {root}",
            "keep named scenario files, and what their links point to, inside that folder",
        )  # fmt: skip
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_NOFOLLOW)
    except OSError as error:
        raise _open_error(path, error) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ScenarioError(
                path, "(file)", f"not a regular file (a {_kind(mode)})",
                "point it at a regular YAML file",
            )  # fmt: skip
        data = _read_at_most(fd, MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(
            path, "(file)", f"larger than {MAX_FILE_BYTES} bytes",
            "scenario files are short: shorten it or split it",
        )  # fmt: skip
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ScenarioError(
            path, "(file)", f"cannot read: not UTF-8 text (byte offset {error.start})",
            "make it UTF-8",
        ) from None  # fmt: skip


def _read_at_most(fd: int, limit: int) -> bytes:
    """Read from `fd` until EOF or `limit` bytes."""
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _open_error(path: Path, error: OSError) -> ScenarioError:
    """Return the ScenarioError that says why `path` could not be opened."""
    if error.errno == errno.ENOENT and os.path.islink(path):
        return ScenarioError(path, "(file)", "a symbolic link to a missing file",
                             "point the link at an existing file or remove it")  # fmt: skip
    if error.errno == errno.ENOENT:
        return ScenarioError(path, "(file)", "file not found", "check the path or id")
    if error.errno == errno.ELOOP:
        return ScenarioError(path, "(file)", "a symbolic link loop",
                             "point the link at a regular file, not back at a link")  # fmt: skip
    if error.errno == errno.EACCES:
        return ScenarioError(path, "(file)", "cannot read: permission denied", "make it readable")
    reason = os.strerror(error.errno) if error.errno else type(error).__name__
    return ScenarioError(path, "(file)", f"cannot read: {reason}", "check the file")


def _kind(mode: int) -> str:
    """Name the kind of a file that is not a regular file."""
    kinds = [(stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "named pipe"),
             (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
             (stat.S_ISSOCK, "socket")]  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "special file")


def parse_yaml(path: Path, text: str) -> Any:
    """Parse one YAML document with ScenarioLoader; syntax errors name line and column only."""
    loader: ScenarioLoader | None = None
    try:
        _check_depth(path, text)  # checks the characters first, then every node's depth
        loader = ScenarioLoader(text, path)
        return loader.get_single_data()
    except (ValueError, OverflowError) as error:  # e.g. an impossible date like 2020-13-45
        raise ScenarioError(
            path, "(document)", f"invalid YAML value: {_without_input(str(error))}",
            "quote the value as a string",
        ) from None  # fmt: skip
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        if mark and "nesting depth" in str(getattr(error, "problem", "")):
            raise _too_deep(path, mark.line) from None  # libyaml's scanner looks ahead 1000 levels
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(document)"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        fix = "fix the YAML syntax"
        if "block scalar" in f"{problem} {getattr(error, 'context', None)}":
            fix = "quote the value, e.g. tls: '>=TLSv1.2' (an unquoted > or | starts a YAML block)"
        raise ScenarioError(path, where, f"invalid YAML: {_without_input(problem)}", fix) from None
    finally:
        if loader is not None:
            loader.dispose()


def _without_input(problem: str) -> str:
    """Drop the quoted input PyYAML puts in its messages, keeping what kind of problem it is."""
    return escaped(_one_line(QUOTED.sub("", problem)), 120) or "unreadable"


def _check_depth(path: Path, text: str) -> None:
    """Refuse a node nested deeper than MAX_DEPTH, reading events only as far as that node."""
    events = CParser(text)
    try:
        open_collections = 0
        while not isinstance(event := events.get_event(), StreamEndEvent):
            if isinstance(event, CollectionEndEvent):
                open_collections -= 1
            elif isinstance(event, NodeEvent):  # scalars, aliases and collections are nodes
                if open_collections + 1 > MAX_DEPTH:
                    raise _too_deep(path, getattr(event.start_mark, "line", 0))
                open_collections += isinstance(event, CollectionStartEvent)
    finally:
        events.dispose()


def _too_deep(path: Path, line_index: int) -> ScenarioError:
    """Return the error for nesting deeper than MAX_DEPTH at a 0-based line."""
    return ScenarioError(
        path, f"line {line_index + 1}", f"nested deeper than {MAX_DEPTH} levels",
        "flatten it: scenario files need at most 5 levels",
    )  # fmt: skip


class ScenarioLoader(CParser, SafeConstructor, Resolver):
    """libyaml's safe loader with YAML 1.2 booleans and duplicate keys refused."""

    def __init__(self, text: str, path: Path) -> None:
        """Read `text`, naming `path` in errors."""
        CParser.__init__(self, text)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.path = path

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Construct a mapping, refusing a key that appears twice (merge keys `<<` may override)."""
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == YAML_MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                name = str(key)
                raise ScenarioError(
                    self.path, name, f"duplicate key on line {line} (first on line {seen[key]})",
                    f"keep one `{escaped(name, FIELD_MAX_LENGTH)}:` entry in that mapping",
                )  # fmt: skip
            seen[key] = line
        return super().construct_mapping(node, deep)


ScenarioLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != YAML_BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ScenarioLoader.add_implicit_resolver(  # YAML 1.2: `yes`, `no`, `on`, `off` stay strings
    YAML_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
