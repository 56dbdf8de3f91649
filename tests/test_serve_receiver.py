"""`lab.serve --receiver`: one receiver of a whole specs file, its certificates' check recorded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.scenarios import load_suite
from lab.endpoints import write_specs_file
from lab.pki import ensure_certs

PROJECT = Path(__file__).resolve().parents[1]
# runs lab.serve until its ready line, then prints what it served and whether it loaded cryptography
UNTIL_READY = """
import json, os, sys
served = []
class Out:
    def write(self, text):
        for line in text.splitlines():
            if line.startswith("{"):
                served.append(json.loads(line))
        if '"ready"' in text:
            sys.__stdout__.write(json.dumps([served[:-1], "cryptography" in sys.modules]) + "\\n")
            sys.__stdout__.flush()
            os._exit(0)
        return len(text)
    def flush(self):
        pass
sys.stdout = Out()
import lab.serve
sys.exit(lab.serve.main(sys.argv[1:]))
"""


def serve(specs_file: Path, certs: Path, evidence: Path, *extra: str) -> tuple[int, str]:
    """Run lab.serve on loopback until ready; return its status and its standard output."""
    argv = [sys.executable, "-c", UNTIL_READY, "--specs-file", str(specs_file), "--certs-dir",
            str(certs), "--evidence-dir", str(evidence), "--port", "0", *extra]  # fmt: skip
    done = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def suite_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Certificates checked for ses-2025's receivers; a file of all of them and one of tls12."""
    root = tmp_path_factory.mktemp("serve-receiver")
    specs = list(load_suite("ses-2025").receivers.values())
    ensure_certs(specs, root / "certs")
    (root / "evidence").mkdir()
    whole = write_specs_file(specs, root)
    alone = write_specs_file([s for s in specs if s.id == "tls12"], root)
    return root, whole, alone


@pytest.mark.integration
def test_one_receiver_of_the_checked_set_serves_alone_without_loading_cryptography(
    suite_files: tuple[Path, Path, Path],
) -> None:
    root, whole, alone = suite_files
    status, out = serve(whole, root / "certs", root / "evidence", "--receiver", "tls12")
    assert status == 0, out
    served, loaded_cryptography = json.loads(out.splitlines()[0])
    assert [(e["receiver"], e["mx_host"]) for e in served] == [("tls12", "mx.tls12.lab.test")]
    assert loaded_cryptography is False  # the harness's recorded pass covers this set
    # control: a file of that receiver alone is another set, checked in full with cryptography
    status, out = serve(alone, root / "certs", root / "evidence")
    assert status == 0, out
    served, loaded_cryptography = json.loads(out.splitlines()[0])
    assert [e["receiver"] for e in served] == ["tls12"]
    assert loaded_cryptography is True


@pytest.mark.integration
def test_a_receiver_not_in_the_file_is_refused(suite_files: tuple[Path, Path, Path]) -> None:
    root, whole, _ = suite_files
    status, out = serve(whole, root / "certs", root / "evidence", "--receiver", "nosuch")
    assert status == 2
    assert "no receiver 'nosuch'" in out
    status, out = serve(whole, root / "certs", root / "evidence", "--receiver", "tls13")
    assert status == 0, out  # control: one that is in the file serves


@pytest.mark.integration
def test_without_a_recorded_pass_only_the_served_receiver_is_checked(
    suite_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, whole, _ = suite_files
    certs = tmp_path / "certs"
    shutil.copytree(root / "certs", certs)
    (certs / ".checked.json").unlink()  # no record: a full check, of the served receiver alone
    (certs / "tls13" / "cert.pem").write_text("not a certificate\n")
    status, out = serve(whole, certs, root / "evidence", "--receiver", "tls12")
    assert status == 0, out
    assert json.loads(out.splitlines()[0])[1] is True  # checked in full, with cryptography
    status, out = serve(whole, certs, root / "evidence", "--receiver", "tls13")
    assert status == 2  # control: the broken receiver's own check refuses it
    assert "lab.serve:" in out
