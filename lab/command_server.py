"""Container side: run the harness's bounded commands one per line, without a `docker exec` each.

A real MTA's sender container (Postfix, Exim) is driven through its `ctl.sh`; starting every one
of those commands with `docker exec` costs the engine (dockerd, containerd, runc) far more than
the command itself. This server is started once per concurrent lane with `docker exec -i` and
speaks the worker protocol of harness.senders.worker_pool: the first line `{"hello": 1}` is
answered `{"ready": true, "pid": N}`; each job `{"seq": n, "job": {"argv": [...], "env": {...},
"seconds": s}}` runs `argv` (standard input empty, output and errors together), killed after
`s` seconds, and is answered `{"seq": n, "report": {"status": code, "output": text}}`, or
`{"seq": n, "error": "..."}` when it could not run. EOF on standard input ends the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import IO, Any

KILLED = 124  # the status coreutils' timeout gives a command it had to stop: the same here
MAX_SECONDS = 600.0


def _env(extra: object) -> dict[str, str]:
    """Return the server's environment plus the job's string variables."""
    env = dict(os.environ)
    if isinstance(extra, dict):
        env.update({str(k): str(v) for k, v in extra.items()})
    return env


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one command to its end or its bound; return its exit status and combined output."""
    argv = job["argv"]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    seconds = min(float(job.get("seconds", MAX_SECONDS)), MAX_SECONDS)
    try:
        done = subprocess.run(
            argv, env=_env(job.get("env")), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, timeout=seconds, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as late:
        output = late.output or b""
        return {"status": KILLED, "output": output.decode("utf-8", "replace")}
    except OSError as error:  # not found, not executable: what a shell would say, status 127
        return {"status": 127, "output": f"{argv[0]}: {error.strerror}"}
    return {"status": done.returncode, "output": done.stdout.decode("utf-8", "replace")}


def serve(jobs: IO[str], replies: IO[str]) -> int:
    """Answer the hello and each job line to EOF; a job's failure is its own error reply."""
    for line in jobs:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("a request is a JSON object")
        except ValueError as error:
            reply: dict[str, Any] = {"seq": None, "error": f"bad request line: {error}"}
        else:
            if "hello" in request:
                reply = {"ready": True, "pid": os.getpid()}
            else:
                try:
                    reply = {"seq": request.get("seq"), "report": run_job(request["job"])}
                except Exception as error:  # this job's failure; the server takes the next one
                    reply = {"seq": request.get("seq"), "error": f"{type(error).__name__}: {error}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


def main() -> int:
    """Serve jobs on standard input until EOF."""
    return serve(sys.stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
