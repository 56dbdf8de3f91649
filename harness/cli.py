"""The `tlslab` command: run a suite, keep receivers up, re-render reports, make certificates.

Only the chosen sub-command's modules are imported: its parser is built alone (every parser for
`tlslab --help` or a command it does not know) and its handler is imported once parsed.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from harness.interrupts import Terminated, interrupt

# the lab's bad-input errors, each where it is defined: (module, class)
USAGE_ERRORS = (
    ("harness.scenario_files", "ScenarioError"),
    ("lab.cert_error", "CertificateError"),
    ("harness.report_files", "ReportError"),
    ("lab.backends.base", "BackendError"),
    ("harness.commands", "EvidenceFileError"),
)
EXIT_USAGE = 2
BACKEND_HELP = "where receivers run (default: local)"
EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + the signal number, as shells report it
# sub-commands registered by other modules: command -> (module, function adding it)
ADDED_COMMANDS = {
    "diff": ("harness.commands", "add_commands"),
    "evidence": ("harness.commands", "add_commands"),
    "list": ("harness.listing", "add_list_command"),
    "prune": ("harness.prune", "add_prune_command"),
    "ses": ("harness.ses_setup", "register"),
    "scoreboard": ("harness.scoreboard.run", "add_scoreboard_command"),
}
OWN_COMMANDS = ("run", "up", "report", "certs", "down")
# the handlers of local-backend commands that start receivers at once
PRESTARTED = ("harness.run_command:cmd_run", "harness.lab_commands:cmd_up")
BACKEND_NAMES = ("attached", "docker", "local")  # lab.backends.BACKENDS (not imported to parse)
Handler = Callable[[argparse.Namespace], int]

__all__ = ["Terminated", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the sub-command, map known errors to exit status 2."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_of(arguments)).parse_args(arguments)
    prestarted = _prestart_receivers(args)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        return _handler(args.handler)(args)
    except KeyboardInterrupt as stop:
        print("tlslab: interrupted; evidence recorded so far stays on disk", file=sys.stderr)
        return EXIT_SIGTERM if isinstance(stop, Terminated) else EXIT_SIGINT
    except BrokenPipeError:  # e.g. `tlslab evidence x.eml | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as error:
        if not _usage_error(error):
            raise
        print(f"tlslab: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if prestarted:
            from lab.prestart import discard

            discard()  # a receiver child the command did not take (bad input, an early stop)


def script() -> int:
    """Run main() for the `tlslab` script, the collector never walking start-up's objects.

    Imports allocate a few hundred thousand long-lived objects (classes, schemas, functions):
    the cyclic collector is paused while they load, then they are frozen out of its generations.
    When main() returns, the exit does what the interpreter's would that anyone can observe
    (non-daemon threads joined, atexit handlers run, standard streams flushed) and then ends the
    process without freeing those objects one by one. An exception leaves the normal way.
    """
    gc.disable()
    try:
        status = main()
    finally:
        gc.freeze()
    _exit_without_teardown(status)


def _exit_without_teardown(status: int) -> NoReturn:
    """Join threads, run atexit handlers, flush the standard streams, then `os._exit(status)`."""
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)


def _command_of(arguments: Sequence[str]) -> str | None:
    """Return the sub-command named on the command line, or None for none or an unknown one."""
    for argument in arguments:
        if not argument.startswith("-"):
            known = argument in OWN_COMMANDS or argument in ADDED_COMMANDS
            return argument if known else None
        if argument == "--":
            return None
    return None


def _prestart_receivers(args: argparse.Namespace) -> bool:
    """Fork the local receiver child now for `run`/`up`, to import its code beside the harness."""
    if args.handler not in PRESTARTED or getattr(args, "backend", None) != "local":
        return False
    from lab.prestart import prestart

    return prestart() is not None


def _handler(handler: Handler | str) -> Handler:
    """Return a sub-command's handler, importing `module:function` ones; resume the collector."""
    if isinstance(handler, str):
        module, name = handler.split(":")
        handler = getattr(importlib.import_module(module), name)
        assert callable(handler), handler
    if not gc.isenabled():  # script(): start-up's imports are done, freeze what they made
        gc.freeze()
        gc.enable()
    return handler


def _usage_error(error: Exception) -> bool:
    """Return True for the lab's bad-input errors (a class can only be raised once loaded)."""
    for module, name in USAGE_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(error, getattr(loaded, name)):
            return True
    return False


def _positive(text: str) -> int:
    """Parse a positive whole number; the error names the value (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


class _Version(argparse.Action):
    """`--version`: print the installed lab's version and exit (looked up only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        """Take no value, like argparse's own version action."""
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show program's version number and exit")  # fmt: skip

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        """Print `tlslab <version>` on standard output and exit 0."""
        from harness.provenance import package_version

        print(f"{parser.prog} {package_version('sender-tls-lab')}")
        parser.exit()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Return the argument parser with one sub-command per verb (just `only`, when given)."""
    parser = argparse.ArgumentParser(prog="tlslab", description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--scenarios", type=Path, help="scenarios folder (default: the project's)")
    common.add_argument("--certs", type=Path, help="certificate folder (default: certs/)")

    def wanted(name: str) -> bool:
        return only is None or only == name

    if wanted("run"):
        run = sub.add_parser("run", parents=[common], help="run a suite and write its report")
        run.add_argument("--suite", default="ses-2025", help="suite id or path (default: ses-2025)")
        run.add_argument(
            "--backend", default="local", metavar=_backend_choices(), help=BACKEND_HELP
        )
        run.add_argument("--reports", type=Path, help="reports folder (default: reports/)")
        run.add_argument(
            "--baseline",
            type=Path,
            help="a stored run (results.json or folder); exit 1 on any change",
        )
        run.add_argument(
            "--receivers", help="comma-separated receiver ids: run only their rows (default: all)"
        )
        run.add_argument(
            "--jobs", type=_positive, default=4, help="cells run at once (default: 4; 1 = in order)"
        )
        run.set_defaults(handler="harness.run_command:cmd_run")

    if wanted("up"):
        from harness import up_public

        up = sub.add_parser("up", parents=[common], help="start receivers until Ctrl-C")
        up.add_argument("--backend", default="local", metavar=_backend_choices(), help=BACKEND_HELP)
        up.add_argument("--receivers", help="comma-separated receiver ids (default: all)")
        up.add_argument("--evidence-dir", type=Path, default=Path("evidence"))
        up.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
        up.add_argument("--json", action="store_true", help="print endpoints as JSON lines")
        up_public.add_options(up)
        up.set_defaults(handler="harness.lab_commands:cmd_up")

    if wanted("report"):
        report = sub.add_parser("report", help="re-render a results.json (file or run folder)")
        report.add_argument("path", type=Path)
        report.set_defaults(handler="harness.lab_commands:cmd_report")

    if wanted("certs"):
        certs = sub.add_parser("certs", parents=[common], help="generate the lab certificates")
        certs.set_defaults(handler="harness.lab_commands:cmd_certs")

    if wanted("down"):
        down = sub.add_parser("down", help="remove Docker containers and networks a lab run left")
        down.add_argument("--run", help="only this run id (default: every lab run)")
        down.set_defaults(handler="harness.lab_commands:cmd_down")

    added: set[tuple[str, str]] = set()
    for command, where in ADDED_COMMANDS.items():
        if wanted(command) and where not in added:
            added.add(where)
            getattr(importlib.import_module(where[0]), where[1])(sub)
    return parser


def _backend_choices() -> str:
    """Return the backend names as argparse shows choices: `{attached,docker,local}`."""
    return "{" + ",".join(BACKEND_NAMES) + "}"


if __name__ == "__main__":
    sys.exit(script())
