"""Runs and `up` processes sharing one certs folder never invalidate each other's certificates."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from pki_helpers import SPECS, fingerprints
from waiting import eventually

from lab.pki import CertificateError, LabPki, ensure_certs, load_certs
from lab.pki_files import locked
from lab.spec import CertState, ReceiverSpec

PROJECT = Path(__file__).resolve().parents[1]
WORKERS = 10
DEADLINE = 120.0  # seconds for a whole group of workers, under a loaded machine
STATES = list(CertState)

# One process of a run (or of `tlslab up`): make sure its receivers have certificates, then,
# once every worker has done so, load them as the receiver child `lab.serve` does. The parent
# opens both gates, so every load happens after every other process has written.
WORKER = """
import json, sys
from pathlib import Path
from pydantic import TypeAdapter
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from lab.pki import ensure_certs, load_certs
from lab.spec import ReceiverSpec

def fingerprint(path):
    return x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()

root = Path(sys.argv[1])
specs = TypeAdapter(list[ReceiverSpec]).validate_json(sys.argv[2])
print("ready", flush=True)
sys.stdin.readline()
ensure_certs(specs, root)
print("ensured", flush=True)
sys.stdin.readline()
pki = load_certs(specs, root)
leaves = {name: fingerprint(bundle.cert_path) for name, bundle in pki.bundles.items()}
print(json.dumps({"ca": fingerprint(pki.ca_cert_path), "leaves": leaves}), flush=True)
"""


def worker_specs(index: int) -> list[ReceiverSpec]:
    """Return worker `index`'s receivers: two of its own (varied states) and one every run has."""
    own = [
        ReceiverSpec(id=f"w{index}-{n}", certificate=STATES[(index + n) % len(STATES)])
        for n in range(2)
    ]
    return [*own, ReceiverSpec(id="shared")]


def run_workers(root: Path, groups: list[list[ReceiverSpec]]) -> list[tuple[int, str, str]]:
    """Run one worker per group in lockstep (start, ensure, load); return (status, out, err)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(root), json.dumps([s.model_dump() for s in g])],
            cwd=PROJECT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for g in groups
    ]

    def kill_all() -> None:
        for proc in procs:
            proc.kill()

    watchdog = threading.Timer(DEADLINE, kill_all)
    watchdog.start()
    try:
        for step in ("ready", "ensured"):  # a gate: every live worker reached `step` ...
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline().strip() if proc.poll() is None else ""
                assert line in (step, ""), line  # "" is a worker that died; its stderr says why
            for proc in procs:  # ... then all of them go on at once
                if proc.poll() is None:
                    assert proc.stdin is not None
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=DEADLINE)
            results.append((proc.returncode, out, err))
    finally:
        watchdog.cancel()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def test_concurrent_runs_with_different_receivers_keep_one_ca_and_every_entry(
    tmp_path: Path,
) -> None:
    groups = [worker_specs(index) for index in range(WORKERS)]
    results = run_workers(tmp_path, groups)
    failures = [err.strip().splitlines()[-1:] for status, _, err in results if status != 0]
    assert not failures, failures
    views = [json.loads(out.splitlines()[-1]) for _, out, _ in results]
    union = {spec.id: spec for group in groups for spec in group}
    final = load_certs(union.values(), tmp_path)
    now = fingerprints(final)
    assert {view["ca"] for view in views} == {now["lab-ca"]}  # one CA, never rotated
    manifest = json.loads(final.manifest_path.read_text())
    assert set(manifest["receivers"]) == set(union)  # every run's entries survived
    for view in views:  # and what each process loaded is still what is on disk
        assert view["leaves"] == {name: now[name] for name in view["leaves"]}


def test_control_runs_that_disagree_about_one_receiver_do_invalidate_each_other(
    tmp_path: Path,
) -> None:
    """The harness above catches invalidation: one id wanted in different states must fail."""
    groups = [[ReceiverSpec(id="contested", certificate=state)] for state in STATES]
    results = run_workers(tmp_path, groups)
    failed = [err for status, _, err in results if status != 0]
    assert len(failed) == len(groups) - 1  # the last writer's state wins; no other loads
    assert all("spec wants" in err for err in failed), failed


def blocked_on_flock(inode: int) -> bool:
    """Return whether /proc/locks lists a process waiting for a flock on the file `inode`."""
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields and "FLOCK" in fields and any(f.endswith(f":{inode}") for f in fields):
            return True
    return False


def test_a_reader_waits_for_a_writer_instead_of_reading_half_an_update(tmp_path: Path) -> None:
    pki = ensure_certs(SPECS, tmp_path)
    manifest = pki.manifest_path
    saved = manifest.read_bytes()
    inode = (tmp_path / ".lock").stat().st_ino
    outcome: list[LabPki | CertificateError] = []
    reader = threading.Thread(target=_capture(outcome, lambda: load_certs(SPECS, tmp_path)))
    with locked(tmp_path, exclusive=True):  # a writer in the middle of an update ...
        manifest.unlink()
        reader.start()
        eventually(
            lambda: True if not reader.is_alive() or blocked_on_flock(inode) else None,
            "the reader to finish or to wait for the lock",
            10.0,
        )
        manifest.write_bytes(saved)  # ... that completes before it lets go
    reader.join(10.0)
    assert outcome == [pki]


def test_control_the_reader_sees_a_broken_set_once_the_writer_is_gone(tmp_path: Path) -> None:
    pki = ensure_certs(SPECS, tmp_path)
    pki.manifest_path.unlink()
    outcome: list[LabPki | CertificateError] = []
    _capture(outcome, lambda: load_certs(SPECS, tmp_path))()
    assert len(outcome) == 1
    assert isinstance(outcome[0], CertificateError)
    assert outcome[0].path == pki.manifest_path


def _capture(
    outcome: list[LabPki | CertificateError], load: Callable[[], LabPki]
) -> Callable[[], None]:
    """Return a function that appends load()'s result, or its CertificateError, to outcome."""

    def run() -> None:
        try:
            outcome.append(load())
        except CertificateError as error:
            outcome.append(error)

    return run
