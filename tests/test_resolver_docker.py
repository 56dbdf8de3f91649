"""The Docker run's validating resolver (Debian's unbound): AD when secure, SERVFAIL when bogus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from lab.backends.base import RunningLab
from lab.backends.docker import RUN_LABEL, DockerBackend
from lab.pki import LabPki, ensure_certs
from lab.spec import ReceiverSpec

pytestmark = pytest.mark.integration
STATES = [
    "dane-ee",
    "dane-bogus",
    "dane-expired-rrsig",
    "dane-insecure",
    "dane-tlsa-servfail",
    "tls13",
]


@pytest.fixture(scope="module")
def docker_lab(
    docker_engine: Any,
    receiver_specs: dict[str, ReceiverSpec],
    lab_pki: LabPki,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningLab]:
    """Run a few DANE states on Docker with the signed DNS and the resolver."""
    specs = [receiver_specs[s] for s in STATES]
    pki = ensure_certs(specs, lab_pki.root)
    with DockerBackend(say=lambda _line: None).start(
        specs, pki, tmp_path_factory.mktemp("res")
    ) as lab:
        yield lab


def ask(lab: RunningLab, name: str, rdtype: str, *, cd: bool = False) -> dns.message.Message:
    """Ask the run's resolver with DO (and CD when asked) over UDP."""
    assert lab.dns is not None
    assert lab.dns.resolver is not None
    query = dns.message.make_query(name, rdtype, want_dnssec=True)
    query.flags |= dns.flags.AD | (dns.flags.CD if cd else 0)
    return dns.query.udp(query, lab.dns.resolver, timeout=5)


def tlsa(state: str) -> str:
    return f"_25._tcp.mx.{state}.lab.test"


def test_secure_answers_carry_the_ad_bit(docker_lab: RunningLab) -> None:
    for name, rdtype in (
        ("dane-ee.lab.test", "MX"),
        (tlsa("dane-ee"), "TLSA"),
        ("mx.tls13.lab.test", "A"),
    ):
        reply = ask(docker_lab, name, rdtype)
        assert reply.rcode() == dns.rcode.NOERROR, name
        assert reply.flags & dns.flags.AD, name
        assert reply.answer, name


@pytest.mark.parametrize("state", ["dane-bogus", "dane-expired-rrsig"])
def test_a_bogus_tlsa_is_servfail_without_ad_but_present_with_cd(
    docker_lab: RunningLab, state: str
) -> None:
    control = ask(docker_lab, f"mx.{state}.lab.test", "A")
    assert control.flags & dns.flags.AD  # the same zone's address validates
    bogus = ask(docker_lab, tlsa(state), "TLSA")
    assert bogus.rcode() == dns.rcode.SERVFAIL
    assert not bogus.flags & dns.flags.AD
    unchecked = ask(
        docker_lab, tlsa(state), "TLSA", cd=True
    )  # checking disabled: the data is there
    assert unchecked.rcode() == dns.rcode.NOERROR
    assert unchecked.answer
    assert not unchecked.flags & dns.flags.AD


def test_an_unsigned_zone_answers_without_ad(docker_lab: RunningLab) -> None:
    for name, rdtype in (("dane-insecure.lab.test", "MX"), (tlsa("dane-insecure"), "TLSA")):
        reply = ask(docker_lab, name, rdtype)
        assert reply.rcode() == dns.rcode.NOERROR, name
        assert reply.answer, name
        assert not reply.flags & dns.flags.AD, name


def test_a_failing_tlsa_lookup_is_servfail_while_the_address_is_secure(
    docker_lab: RunningLab,
) -> None:
    assert ask(docker_lab, "mx.dane-tlsa-servfail.lab.test", "A").flags & dns.flags.AD
    assert ask(docker_lab, tlsa("dane-tlsa-servfail"), "TLSA").rcode() == dns.rcode.SERVFAIL


def test_the_built_in_test_zone_does_not_shadow_the_lab(docker_lab: RunningLab) -> None:
    reply = ask(docker_lab, "tls13.lab.test", "MX")
    assert reply.rcode() == dns.rcode.NOERROR
    denial = ask(docker_lab, tlsa("tls13"), "TLSA")  # a signed NXDOMAIN is secure too
    assert denial.rcode() == dns.rcode.NXDOMAIN
    assert denial.flags & dns.flags.AD


def test_dns_and_resolver_stop_with_the_lab(
    docker_engine: Any, receiver_specs: dict[str, ReceiverSpec], lab_pki: LabPki, tmp_path: Path
) -> None:
    import docker.errors

    with DockerBackend(say=lambda _line: None).start(
        [receiver_specs["dane-ee"]], lab_pki, tmp_path
    ) as lab:
        assert lab.dns is not None
        resolver = lab.dns.resolver
        assert resolver is not None
        assert ask(lab, "dane-ee.lab.test", "MX").flags & dns.flags.AD
        ours = [
            c for c in docker_engine.containers.list(filters={"label": RUN_LABEL})
            if c.name.endswith(("-dns", "-resolver")) and _on(c, {lab.dns.host, resolver})
        ]  # fmt: skip
        assert len(ours) == 2
        networks = {n for c in ours for n in c.attrs["NetworkSettings"]["Networks"]}
    for container in ours:
        with pytest.raises(docker.errors.NotFound):
            docker_engine.containers.get(container.id)
    for network in networks:  # the run's network went with them (its addresses may be reused)
        with pytest.raises(docker.errors.NotFound):
            docker_engine.networks.get(network)


def _on(container: Any, addresses: set[str]) -> bool:
    """Return True when the container has one of these addresses on a network."""
    networks = container.attrs["NetworkSettings"]["Networks"].values()
    return any(n.get("IPAddress") in addresses for n in networks)
