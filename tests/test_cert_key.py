"""Tests of lab.cert_key: the receiver names its key from the DER exactly as cryptography would."""

from __future__ import annotations

import datetime
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from lab import cert_key
from lab.cert_key import UnknownKey, name_key, postfix_server_key

KEYS: dict[str, Callable[[], Any]] = {
    "rsa-1024": lambda: rsa.generate_private_key(65537, 1024),
    "rsa-2048": lambda: rsa.generate_private_key(65537, 2048),
    "rsa-3072": lambda: rsa.generate_private_key(65537, 3072),
    "p-256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "p-384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "p-521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "secp256k1": lambda: ec.generate_private_key(ec.SECP256K1()),  # not in the reader's table
    "brainpool": lambda: ec.generate_private_key(ec.BrainpoolP256R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate,
    "ed448": ed448.Ed448PrivateKey.generate,
    "dsa": lambda: dsa.generate_private_key(2048),
}
EXPECTED = {
    "rsa-1024": "RSA-PSS (1024 bits)", "rsa-2048": "RSA-PSS (2048 bits)",
    "rsa-3072": "RSA-PSS (3072 bits)", "p-256": "ECDSA (prime256v1)", "p-384": "ECDSA (secp384r1)",
    "p-521": "ECDSA (secp521r1)", "secp256k1": "ECDSA (secp256k1)",
    "brainpool": "ECDSA (brainpoolP256r1)", "ed25519": "ED25519", "ed448": "ED448", "dsa": None,
}  # fmt: skip
READ_FROM_DER = {"rsa-1024", "rsa-2048", "rsa-3072", "p-256", "p-384", "p-521", "ed25519", "ed448"}


def certificate(tmp_path: Path, kind: str, *, version_field: bool = True) -> Path:
    """Write a self-signed certificate with a key of `kind` (a chain's leaf first) and return it."""
    key = KEYS[kind]()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.lab.test")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
    )  # fmt: skip
    digest = None if kind in ("ed25519", "ed448") else hashes.SHA256()
    cert = builder.sign(key, digest)
    path = tmp_path / f"{kind}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) * 2)  # leaf + "chain"
    return path


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_every_key_is_named_as_postfix_does(tmp_path: Path, kind: str) -> None:
    assert postfix_server_key(certificate(tmp_path, kind)) == EXPECTED[kind]


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_the_der_reader_names_its_keys_and_hands_the_rest_over(tmp_path: Path, kind: str) -> None:
    der = x509.load_pem_x509_certificate(certificate(tmp_path, kind).read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    if kind in READ_FROM_DER:
        assert name_key(der) == EXPECTED[kind]
        assert (
            cert_key._named_by_cryptography(certificate(tmp_path, kind).read_bytes())
            == (EXPECTED[kind])
        )  # the reference agrees
    else:  # control: what the reader does not know is refused, never guessed
        with pytest.raises(UnknownKey):
            name_key(der)


@pytest.mark.parametrize("cut", [0, 1, 10, 200, -1])
def test_broken_der_is_refused_not_misread(tmp_path: Path, cut: int) -> None:
    der = x509.load_pem_x509_certificate(certificate(tmp_path, "rsa-2048").read_bytes())
    data = der.public_bytes(serialization.Encoding.DER)
    with pytest.raises(UnknownKey):
        name_key(data[:cut])
    assert name_key(data) == "RSA-PSS (2048 bits)"  # control: the whole DER


def test_a_file_without_a_pem_certificate_falls_back_to_cryptography_and_its_error(
    tmp_path: Path,
) -> None:
    path = tmp_path / "not.pem"
    path.write_bytes(b"no certificate here\n")
    with pytest.raises(ValueError, match="PEM"):
        postfix_server_key(path)


def test_a_receiver_process_names_lab_keys_without_loading_cryptography(tmp_path: Path) -> None:
    path = certificate(tmp_path, "rsa-2048")
    code = (
        "import sys; from pathlib import Path; from lab.cert_key import postfix_server_key;"
        f"print(postfix_server_key(Path({str(path)!r})), 'cryptography' in sys.modules)"
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.split() == ["RSA-PSS", "(2048", "bits)", "False"]
    other = certificate(tmp_path, "brainpool")  # control: a key the reader hands over
    code = code.replace(repr(str(path)), repr(str(other)))
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.split() == ["ECDSA", "(brainpoolP256r1)", "True"]
