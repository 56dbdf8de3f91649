"""A receiver child forked before the parent's own imports, importing the receivers' code meanwhile.

`tlslab run` and `tlslab up` on the local backend call `prestart()` as soon as their command line
is parsed. It imports the modules both sides need (SHARED: the models, the evidence store, the
PKI), then forks: the child imports the rest of `lab.serve` on the second core while the parent
imports the harness, then waits for its argv and its log descriptor (one message on a Unix
socket). `take()` hands them over when the lab starts; from then on the child is exactly the
`lab.forked` child (the socket is its standard input: EOF = parent gone, as with the pipe). A
child never handed over ends at EOF, and `discard()` (or the parent's exit) ends it; it never ran
a receiver, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Sequence

from lab.forked import _PARENT_ENDS, CRASH_STATUS, ForkedServe, _become_child, exit_status_of

# imported before the fork, once for both processes: what the harness and the receivers share
SHARED = (
    "concurrent.futures", "subprocess", "lab.client_offer", "lab.endpoints",
    "lab.evidence_index", "lab.evidence_store", "lab.message_record", "lab.pki",
    "lab.session_facts",
)  # fmt: skip
HANDOFF_BYTES = 1 << 20  # the argv message's bound (the receivers' specs travel in a file)
_WAITING: dict[int, tuple[int, socket.socket, int]] = {}  # parent pid -> (child, socket, stdout)


def prestart() -> int | None:
    """Fork a child that imports `lab.serve` and waits for `take()`; return its pid, or None."""
    if threading.current_thread() is not threading.main_thread() or os.getpid() in _WAITING:
        return None  # PR_SET_PDEATHSIG follows the forking thread: only the main thread forks
    for name in SHARED:
        importlib.import_module(name)
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    stdout_read, stdout_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the parent's code
        parent_end.close()
        os.close(stdout_read)
        os._exit(_child(child_end, stdout_write))
    child_end.close()
    os.close(stdout_write)
    _PARENT_ENDS.add(parent_end.fileno())  # later children close it: EOF must mean this parent
    _WAITING[os.getpid()] = (pid, parent_end, stdout_read)
    return pid


def take(argv: Sequence[str], log_fd: int) -> ForkedServe | None:
    """Hand `argv` and `log_fd` to this process's waiting child; None if there is none."""
    waiting = _WAITING.pop(os.getpid(), None)
    if waiting is None:
        return None
    pid, parent_end, stdout_read = waiting
    try:
        socket.send_fds(parent_end, [json.dumps(list(argv)).encode("utf-8")], [log_fd])
    except OSError:  # the child is gone (killed, or it failed to start): fork a fresh one
        _end(pid, parent_end, stdout_read)
        return None
    return ForkedServe(pid, parent_end.detach(), stdout_read)


def discard() -> None:
    """End this process's waiting child, if any (it never ran a receiver): kill and reap it."""
    waiting = _WAITING.pop(os.getpid(), None)
    if waiting is not None:
        _end(*waiting)


def _end(pid: int, parent_end: socket.socket, stdout_read: int) -> None:
    """Kill and reap a child that was never handed over, and close the parent's ends."""
    _PARENT_ENDS.discard(parent_end.fileno())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    parent_end.close()
    os.close(stdout_read)


def _child(child_end: socket.socket, stdout_fd: int) -> int:
    """Import `lab.serve`, wait for argv and log descriptor, run it; return the exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a ^C before the handover is the parent's
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler
    failure = ""
    try:
        from lab import serve

        serve.event_loop_module()  # before the hand-over, not after it
        _build_deferred_models()
    except BaseException:
        failure = traceback.format_exc()
    if not gc.isenabled():  # forked during the parent's start-up, its collector paused
        gc.freeze()
        gc.enable()
    try:
        message, fds, _, _ = socket.recv_fds(child_end, HANDOFF_BYTES, 1)
    except OSError:
        return 0
    if not message or len(fds) != 1:
        return 0  # EOF: the parent never started a local lab
    _become_child(child_end.detach(), stdout_fd, fds[0], ())
    if fds[0] > 2:
        os.close(fds[0])  # now descriptor 2

    def serve_argv() -> int:
        if failure:
            sys.stderr.write(failure)
            return CRASH_STATUS
        return serve.main(json.loads(message.decode("utf-8")))

    return exit_status_of(serve_argv)


def _build_deferred_models() -> None:
    """Build the lab's models that wait for their first use (defer_build) now, not in a session."""
    from pydantic import BaseModel

    classes = list(BaseModel.__subclasses__())
    while classes:
        model = classes.pop()
        classes.extend(model.__subclasses__())
        if model.__module__.startswith(("lab.", "harness.")) and not model.__pydantic_complete__:
            model.model_rebuild()
