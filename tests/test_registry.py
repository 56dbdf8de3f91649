"""The sender registry: one entry per driver, its profile model and visibility; closing drivers."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from harness.model import ReferenceSenderProfile, RelaySenderProfile, SesSenderProfile
from harness.runner import LabRun
from harness.scenarios import ScenarioError, load_sender, load_suite
from harness.senders import DRIVERS, SendReport, TestMessage, driver_of
from lab.backends.base import RunningLab
from lab.pki import LabPki


def test_every_entry_validates_the_driver_it_is_keyed_by() -> None:
    for name, entry in DRIVERS.items():
        annotation = entry.profile.model_fields["driver"].annotation
        assert typing.get_args(annotation) == (name,), (name, annotation)


def test_only_external_services_are_watched_from_outside() -> None:
    ses = SesSenderProfile(id="s", driver="ses", region="eu-west-1", configuration_set="c",
                           from_address="a@b.test", observe_timeout_seconds=7.5)  # fmt: skip
    relay = RelaySenderProfile(id="r", driver="relay", host="h", observe_timeout_seconds=3.0)
    assert driver_of(ses).watch_seconds(ses) == 7.5
    assert driver_of(relay).watch_seconds(relay) == 3.0
    inside = [name for name, entry in DRIVERS.items() if entry.watch is None]
    assert sorted(inside) == ["exim", "postfix", "reference", "rfc"]  # the lab reads their account
    reference = ReferenceSenderProfile(id="p")
    assert driver_of(reference).watch_seconds(reference) is None


def test_an_unknown_driver_names_every_registered_one(tmp_path: Path) -> None:
    path = tmp_path / "senders" / "x.yaml"
    path.parent.mkdir()
    path.write_text("driver: smoke-signals\n")
    with pytest.raises(ScenarioError) as excinfo:
        load_sender(path)
    assert excinfo.value.field == "driver"
    for name in DRIVERS:
        assert f"'{name}'" in excinfo.value.problem
    path.write_text("driver: exim\nsecurity_level: may\n")  # another driver's field
    with pytest.raises(ScenarioError) as unknown:
        load_sender(path)
    assert unknown.value.field == "security_level"


class Recorder:
    """A stand-in driver that counts its close() calls; `fail` makes close() raise."""

    def __init__(self, name: str, fail: bool = False) -> None:
        """Record under `name`."""
        self.id, self.fail, self.closed = name, fail, 0

    def send(self, message: TestMessage) -> SendReport:
        raise AssertionError("not sent in this test")

    def close(self) -> None:
        self.closed += 1
        if self.fail:
            raise OSError(f"{self.id} could not close")


def test_the_run_closes_every_driver_it_opened_once_even_when_one_fails(
    lab_pki: LabPki, tmp_path: Path
) -> None:
    run = LabRun(load_suite("ses-2025"), RunningLab("local", {}, lab_pki, tmp_path), tmp_path, "r")
    first, broken, last = Recorder("a"), Recorder("b", fail=True), Recorder("c")
    run.drivers.update({"a": first, "b": broken, "c": last})
    with pytest.raises(OSError, match="b could not close"):
        run.close()
    assert (first.closed, broken.closed, last.closed) == (1, 1, 1)
    run.close()  # a second close closes nothing again
    assert (first.closed, broken.closed, last.closed) == (1, 1, 1)
