"""A receiver or sender file that is a broken symbolic link is reported as one, not as unknown."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.scenarios import DEFAULT_ROOT, ScenarioError, load_suite

SUITE = """\
title: a small suite
receivers: [tls10, tls12]
senders: [ses-default]
cells:
  tls10:
    ses-default: {outcome: delivered, tls: TLSv1.0}
  tls12:
    ses-default: {outcome: delivered, tls: TLSv1.2}
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Return a scenarios root with the shipped receivers and senders and the small suite."""
    root = tmp_path / "scenarios"
    for folder in ("receivers", "senders"):
        shutil.copytree(DEFAULT_ROOT / folder, root / folder)
    (root / "suites").mkdir()
    (root / "suites" / "small.yaml").write_text(SUITE, encoding="utf-8")
    return root


def load_error(root: Path) -> ScenarioError:
    """Return the ScenarioError loading the small suite raises."""
    with pytest.raises(ScenarioError) as caught:
        load_suite("small", root)
    assert "\n" not in str(caught.value)
    return caught.value


def test_a_symlink_loop_is_named_as_a_loop(root: Path) -> None:
    link = root / "receivers" / "tls12.yaml"
    link.unlink()
    link.symlink_to(link.name)  # tls12.yaml -> tls12.yaml
    error = load_error(root)
    assert error.path == link
    assert "symbolic link loop" in error.problem
    assert "receivers[1]" in error.problem
    assert "unknown id" not in str(error)
    assert "point the link at a real file" in error.fix


def test_a_dangling_symlink_is_named_as_one(root: Path) -> None:
    link = root / "senders" / "ses-default.yaml"
    link.unlink()
    link.symlink_to(root / "nowhere.yaml")
    error = load_error(root)
    assert error.path == link
    assert "symbolic link to a missing file" in error.problem
    assert "senders[0]" in error.problem


def test_control_an_id_with_no_file_is_unknown_and_broken_links_are_not_offered(
    root: Path,
) -> None:
    (root / "receivers" / "tls12.yaml").unlink()
    loop = root / "receivers" / "tls11.yaml"
    loop.unlink()
    loop.symlink_to(loop.name)
    error = load_error(root)
    assert error.path == root / "suites" / "small.yaml"
    assert "unknown id 'tls12'" in error.problem
    assert "'tls10'" in error.fix  # a real file is offered ...
    assert "'tls11'" not in error.fix  # ... a link that loops is not


def test_control_a_symlink_to_a_real_file_loads(root: Path) -> None:
    link = root / "receivers" / "tls12.yaml"
    target = root / "receivers" / "originals" / "tls12.yaml"  # inside the scenarios tree
    target.parent.mkdir()
    link.rename(target)
    link.symlink_to(target)
    assert set(load_suite("small", root).receivers) == {"tls10", "tls12"}
