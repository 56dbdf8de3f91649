"""The receiver child forked before the harness's imports: handed its argv, or ended unused."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from receiver_procs import lab_serve_pids
from test_local_backend import banner, refuses
from waiting import eventually

from lab.pki import LabPki
from lab.prestart import discard, prestart
from lab.spec import ReceiverSpec

pytestmark = pytest.mark.integration

PROJECT = Path(__file__).resolve().parents[1]
GONE_WITHIN = 15.0
HOLDER = """
import json, sys
from pathlib import Path
{before}
from lab.prestart import prestart
child = prestart() if sys.argv[4] == "prestart" else None
from lab.backends.base import BackendError
from lab.backends.local import LocalBackend
from lab.pki import load_certs
from lab.spec import ReceiverSpec
spec = ReceiverSpec.model_validate_json(Path(sys.argv[1]).read_text())
pki = load_certs([spec], Path(sys.argv[2]))
try:
    with LocalBackend().start([spec], pki, Path(sys.argv[3])) as lab:
        facts = {{"child": child, "port": lab.endpoints[spec.id].port,
                  "serve_imported_here": "lab.serve" in sys.modules}}
        print(json.dumps(facts), flush=True)
        sys.stdin.read()  # until the test closes it
except BackendError as error:
    print(json.dumps({{"child": child, "error": str(error)}}), flush=True)
"""


def hold(
    spec: ReceiverSpec, pki: LabPki, evidence: Path, how: str, before: str = ""
) -> tuple[subprocess.Popen[str], dict[str, object]]:
    """Start a process holding a one-receiver local lab; return it and what it printed first."""
    spec_file = evidence.parent / f"spec-{how}.json"
    spec_file.write_text(spec.model_dump_json())
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER.format(before=before), str(spec_file), str(pki.root),
         str(evidence), how],
        cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line, f"the holder exited with {process.wait(30)} before printing"
    facts: dict[str, object] = json.loads(line)
    return process, facts


def release(process: subprocess.Popen[str]) -> None:
    """Close the holder's input (it leaves the lab and exits) and wait for it."""
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.close()
    process.wait(GONE_WITHIN)
    process.stdout.close()


def alive(pid: int) -> bool:
    """Return True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", ["prestart", "control"])
def test_the_lab_takes_the_prestarted_child_and_the_parent_never_imports_the_receivers(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path, how: str
) -> None:
    evidence = tmp_path / "evidence"
    process, facts = hold(receiver_specs["tls12"], lab_pki, evidence, how)
    try:
        port = int(str(facts["port"]))
        assert banner(port).startswith(b"220")
        (serving,) = lab_serve_pids(evidence)
        if how == "prestart":
            assert serving == facts["child"], "the receivers run in the prestarted child"
            assert facts["serve_imported_here"] is False
        else:
            assert facts["child"] is None
            assert facts["serve_imported_here"] is True  # fork_serve imports it before forking
    finally:
        release(process)
    assert refuses(port)
    eventually(lambda: not lab_serve_pids(evidence) or None, "the child to exit", GONE_WITHIN)


def test_an_unused_prestarted_child_is_ended_by_discard() -> None:
    child = prestart()
    assert child is not None
    try:
        assert alive(child)  # control: it waits for its argv
        assert prestart() is None, "one waiting child per process"
    finally:
        discard()
    assert not alive(child)
    discard()  # nothing left to end: a no-op


def test_a_prestarted_child_ends_when_its_parent_dies_before_the_handover() -> None:
    code = "import sys; from lab.prestart import prestart; print(prestart(), flush=True); input()"
    parent = subprocess.Popen(
        [sys.executable, "-c", code], cwd=PROJECT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)  # control: alive while its parent is
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(GONE_WITHIN)
        for pipe in (parent.stdin, parent.stdout):
            if pipe is not None:
                pipe.close()
    eventually(lambda: not alive(child) or None, "the orphaned child to exit", GONE_WITHIN)


def test_a_child_that_could_not_import_the_receivers_is_a_lab_error_with_its_traceback(
    receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    evidence = tmp_path / "evidence"
    broken = "sys.modules['lab.serve'] = None  # the child's `from lab import serve` fails"
    process, facts = hold(receiver_specs["tls12"], lab_pki, evidence, "prestart", broken)
    release(process)
    assert "receiver process exited with status 70" in str(facts["error"])
    log = (evidence / "receivers.log").read_text()
    assert "ModuleNotFoundError: import of lab.serve halted" in log
    assert not alive(int(str(facts["child"])))
