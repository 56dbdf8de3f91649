"""The MX list and greylist fields of a receiver spec, the greylist tracker, and MX records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype
import pytest
from pydantic import ValidationError

from harness.scenario_files import ScenarioError
from harness.scenarios import load_receiver
from harness.up_public import dns_records
from lab.dns import LabZone
from lab.greylist import GreylistTracker
from lab.serve import MxEndpoint, ReceiverEndpoint
from lab.spec import MxRoute, ReceiverSpec

RECEIVERS = Path(__file__).resolve().parents[1] / "scenarios" / "receivers"


def spec(**fields: Any) -> ReceiverSpec:
    """Return a spec named `probe` with the given fields."""
    return ReceiverSpec(id="probe", **fields)


def test_a_receiver_without_an_mx_list_has_its_own_mx_only() -> None:
    assert spec().mx_routes == [MxRoute("mx.probe.lab.test", 10, True)]
    assert spec(starttls=False).mx_routes == [MxRoute("mx.probe.lab.test", 10, False)]


def test_the_shipped_mx_fallback_state_lists_the_plaintext_host_first() -> None:
    loaded = load_receiver(RECEIVERS / "mx-fallback.yaml")
    assert loaded.mx_routes == [
        MxRoute("mx-plain.mx-fallback.lab.test", 10, False),
        MxRoute("mx.mx-fallback.lab.test", 20, True),
    ]
    assert loaded.mx_host == "mx.mx-fallback.lab.test"  # the name its certificate carries


def test_mx_hosts_are_ordered_by_preference_not_by_listing() -> None:
    routes = spec(
        mx=[{"name": "mx", "preference": 30}, {"name": "b", "preference": 5, "starttls": False}]
    ).mx_routes
    assert [r.host for r in routes] == ["b.probe.lab.test", "mx.probe.lab.test"]


@pytest.mark.parametrize(
    ("mx", "says"),
    [
        ([{"name": "other", "starttls": False}], "own host"),
        ([{"name": "mx"}, {"name": "mx", "preference": 20}], "unique"),
        ([{"name": "mx"}, {"name": "b", "starttls": False}], "unique"),  # both preference 10
        ([{"name": "mx"}, {"name": "b", "preference": 20}], "starttls: false"),
        ([{"name": "Bad_Label"}], "pattern"),
        ([{"name": "mx", "preference": 70_000}], "65535"),
        ([{"name": "mx", "weight": 1}], "Extra inputs"),
        ([{"name": f"m{n}", "preference": n} for n in range(6)], "at most 5"),
    ],
)
def test_a_bad_mx_list_is_refused(mx: list[dict[str, Any]], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        spec(mx=mx)


def test_a_bad_mx_file_names_the_file_the_field_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "receivers" / "bad-mx.yaml"
    path.parent.mkdir()
    path.write_text("mx:\n  - {name: mx}\n  - {name: plain, preference: 20}\n")
    with pytest.raises(ScenarioError) as caught:
        load_receiver(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: field 'mx': mx host plain offers STARTTLS")
    assert text.endswith("; fix: set starttls: false for it")


def test_a_second_mx_without_starttls_is_accepted_negative_control() -> None:
    spec(mx=[{"name": "mx"}, {"name": "b", "preference": 20, "starttls": False}])


@pytest.mark.parametrize("value", [-1, 11, 1.5, True, "1"])
def test_greylist_first_attempts_is_bounded(value: object) -> None:
    with pytest.raises(ValidationError):
        spec(greylist={"first_attempts": value})
    assert spec(greylist={"first_attempts": 3}).greylist is not None


def test_the_tracker_defers_each_triplet_first_attempts_times() -> None:
    tracker = GreylistTracker(first_attempts=2)
    triplet = ("127.0.0.1", "a@x.test", "inbox@greylist.lab.test")
    assert [tracker.defers(*triplet) for _ in range(3)] == [True, True, False]
    assert tracker.defers("127.0.0.1", "b@x.test", "inbox@greylist.lab.test")  # a new message
    assert tracker.defers("127.0.0.2", "a@x.test", "inbox@greylist.lab.test")  # a new client
    assert not tracker.defers("127.0.0.1", "A@X.TEST", "Inbox@greylist.lab.test")  # same, cased


def test_a_tracker_of_zero_never_defers() -> None:
    tracker = GreylistTracker(first_attempts=0)
    assert not tracker.defers("127.0.0.1", "a@x.test", "inbox@greylist.lab.test")


def test_the_tracker_forgets_the_oldest_triplet_past_its_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("lab.greylist.GREYLIST_LIMIT", 2)
    tracker = GreylistTracker(first_attempts=1)
    for sender in ("a", "b", "c"):
        tracker.defers("127.0.0.1", f"{sender}@x.test", "r@y.test")
    assert tracker.defers("127.0.0.1", "a@x.test", "r@y.test")  # forgotten: greylisted anew
    assert not tracker.defers("127.0.0.1", "c@x.test", "r@y.test")  # remembered


def test_the_lab_dns_answers_two_mx_records_with_their_preferences() -> None:
    zone = LabZone("lab.test")
    zone.add_mx("mx-fallback.lab.test", "mx-plain.mx-fallback.lab.test", 10)
    zone.add_mx("mx-fallback.lab.test", "mx.mx-fallback.lab.test", 20)
    query = dns.message.make_query("mx-fallback.lab.test", dns.rdatatype.MX)
    answer = zone.answer(query.to_wire())
    assert answer is not None
    records = sorted(
        (r.preference, str(r.exchange)) for r in dns.message.from_wire(answer).answer[0]
    )
    assert records == [(10, "mx-plain.mx-fallback.lab.test."), (20, "mx.mx-fallback.lab.test.")]


def test_an_endpoint_json_keeps_the_contract_keys_and_adds_mx_only_for_several_hosts() -> None:
    single = ReceiverEndpoint("tls13", "127.0.0.1", 2525, "mx.tls13.lab.test", "tls13.lab.test",
                              Path("/e"))  # fmt: skip
    assert set(single.as_json()) == {
        "receiver",
        "host",
        "port",
        "mx_host",
        "domain",
        "evidence_dir",
    }
    assert ReceiverEndpoint.from_json(single.as_json()) == single
    hosts = (MxEndpoint("a.x.lab.test", 10, "127.0.0.1", 1), MxEndpoint("mx.x.lab.test", 20,
             "127.0.0.1", 2))  # fmt: skip
    several = ReceiverEndpoint("x", "127.0.0.1", 1, "a.x.lab.test", "x.lab.test", Path("/e"), hosts)
    assert [m["preference"] for m in several.as_json()["mx"]] == [10, 20]
    assert ReceiverEndpoint.from_json(several.as_json()) == several


def test_the_public_zone_file_lists_every_mx_host_with_its_preference() -> None:
    hosts = (MxEndpoint("mx-plain.x.lab.test", 10, "192.0.2.1", 25),
             MxEndpoint("mx.x.lab.test", 20, "192.0.2.2", 25))  # fmt: skip
    several = ReceiverEndpoint(
        "x", "192.0.2.1", 25, hosts[0].mx_host, "x.lab.test", Path("/e"), hosts
    )
    single = ReceiverEndpoint("tls13", "192.0.2.3", 25, "mx.tls13.lab.test", "tls13.lab.test",
                              Path("/e"))  # fmt: skip
    lines = dns_records([several, single], "lab.test")
    assert "x.lab.test. 300 IN MX 10 mx-plain.x.lab.test." in lines
    assert "x.lab.test. 300 IN MX 20 mx.x.lab.test." in lines
    assert any(line.startswith("mx.x.lab.test. 300 IN A 192.0.2.2") for line in lines)
    assert "tls13.lab.test. 300 IN MX 10 mx.tls13.lab.test." in lines  # a single MX as before
