"""Build the policy host's sites from receiver specs: certificates, bodies and DNS records."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from lab.pki import LabPki
from lab.pki_issue import issue_leaf, issuer_from_pem
from lab.spec import CertState, ReceiverSpec
from lab.sts_host import SITES, PolicySite
from lab.sts_spec import PolicyHostDefect, policy_host, policy_text, tlsrpt_record, txt_record

CA_KEY = "ca/lab-ca-key.pem"  # where lab.pki keeps the lab CA's key, beside ca/lab-ca.pem


@dataclasses.dataclass(frozen=True)
class TxtRecord:
    """One TXT record the lab DNS publishes."""

    owner: str
    text: str


def sts_specs(specs: Sequence[ReceiverSpec]) -> list[ReceiverSpec]:
    """Return the specs whose domain publishes MTA-STS."""
    return [spec for spec in specs if spec.sts is not None]


def txt_records(specs: Sequence[ReceiverSpec]) -> list[TxtRecord]:
    """Return the `_mta-sts` and `_smtp._tls` TXT records of every MTA-STS domain."""
    records: list[TxtRecord] = []
    for spec in sts_specs(specs):
        assert spec.sts is not None
        records.append(TxtRecord(f"_mta-sts.{spec.domain}", txt_record(spec.sts)))
        rua = tlsrpt_record(spec.sts)
        if rua is not None:
            records.append(TxtRecord(f"_smtp._tls.{spec.domain}", rua))
    return records


def build_sites(
    specs: Sequence[ReceiverSpec], pki: LabPki, folder: Path, now: datetime | None = None
) -> list[PolicySite]:
    """Issue each policy host's certificate into `folder` and return the sites (lab CA signs).

    A `bad-cert` site gets a self-signed certificate for its own name. Certificate and key
    paths are relative to `folder` (where the sites file goes), so a container can mount it.
    """
    when = now or datetime.now(UTC)
    issuer = issuer_from_pem(pki.ca_cert_path.read_bytes(), (pki.root / CA_KEY).read_bytes())
    folder.mkdir(parents=True, exist_ok=True)
    sites = []
    for spec in sts_specs(specs):
        assert spec.sts is not None
        host = policy_host(spec.domain)
        bad = spec.sts.policy_host is PolicyHostDefect.BAD_CERT
        state = CertState.SELF_SIGNED if bad else CertState.VALID
        cert_pem, key_pem = issue_leaf(state, host, None if bad else issuer, when)
        cert_path, key_path = folder / f"{host}.pem", folder / f"{host}-key.pem"
        cert_path.write_bytes(cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(key_pem)
        body = policy_text(spec.sts, spec.mx_host)
        sites.append(PolicySite(host=host, cert_path=Path(cert_path.name),
                                key_path=Path(key_path.name), defect=spec.sts.policy_host,
                                body=body))  # fmt: skip
    return sites


def write_sites_file(sites: Sequence[PolicySite], path: Path) -> Path:
    """Write the sites as JSON for `python -m lab.sts_host --sites-file`; return the path."""
    path.write_bytes(SITES.dump_json(list(sites)))
    os.chmod(path, 0o644)
    return path
