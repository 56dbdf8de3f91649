"""The scoreboard page as a person sees it: a real (local-backend) scoreboard in headless Chromium.

The board runs the reference senders on real TLS receivers (no Docker needed) plus one policy
model no suite states expectations for, so both judged and observed-only cells are on the page.
"""

from __future__ import annotations

import io
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pypdf
import pytest
from cli_helpers import tlslab
from test_report_browser import DESKTOP, MOBILE, browser  # the same Chromium fixture

from harness.html_report import RISK_COLOURS
from harness.scenarios import DEFAULT_ROOT

__all__ = ["browser"]  # a fixture used by name below
pytestmark = pytest.mark.integration
RECEIVERS = "tls13,tls10,self-signed,no-starttls"
SENDERS = "ses-default,paubox,zz-unstated"
CELLS_JS = """() => [...document.querySelectorAll('td[data-cell]')].map(td => ({
  cell: td.dataset.cell, risk: td.dataset.risk, verdict: td.dataset.verdict,
  colour: getComputedStyle(td).backgroundColor,
  match: td.querySelector('.match') ? td.querySelector('.match').innerText : '',
  obs: td.querySelector('.obs') ? td.querySelector('.obs').innerText : ''}))"""


def rgb(hex_colour: str) -> str:
    """Return `#1a7f37` as the browser reports it: `rgb(26, 127, 55)`."""
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


@pytest.fixture(scope="module")
def board_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run a small scoreboard on the local backend; return its folder (reports/scoreboard)."""
    base = tmp_path_factory.mktemp("board")
    scenarios = base / "scenarios"
    shutil.copytree(DEFAULT_ROOT, scenarios)
    (scenarios / "senders" / "zz-unstated.yaml").write_text(
        "description: a policy model no suite has expectations for\ntls: required\nverify: true\n"
        "min_version: TLSv1.2\non_policy_unmet: refuse\n"
    )
    ran = tlslab(
        "scoreboard", "--backend", "local", "--receivers", RECEIVERS, "--senders", SENDERS,
        "--scenarios", scenarios, "--reports", base / "r", "--certs", base / "c",
    )  # fmt: skip
    assert ran.status == 0, ran.out + ran.err
    assert not (base / "r" / "scoreboard").exists(), "a subset must not move reports/scoreboard"
    (folder,) = (base / "r").glob("*-scoreboard-local-*")
    return folder


@pytest.fixture
def page(browser: Any, board_dir: Path, tmp_path: Path) -> Iterator[Any]:
    """Yield the board at 1400 px wide, after a full-page screenshot."""
    shown = browser.new_page(viewport=DESKTOP)
    shown.goto((board_dir / "index.html").as_uri())
    shown.screenshot(path=str(tmp_path / "scoreboard-1400.png"), full_page=True)
    yield shown
    shown.close()


def test_every_cell_has_its_risk_colour_from_report_html(page: Any) -> None:
    seen = page.evaluate(CELLS_JS)
    assert len(seen) == 12
    for cell in seen:
        assert cell["colour"] == rgb(RISK_COLOURS[cell["risk"]]), cell
    by_cell = {c["cell"]: c for c in seen}
    good, bad = by_cell["tls13-ses-default"], by_cell["self-signed-ses-default"]
    assert (good["risk"], bad["risk"]) == ("verified", "unverified")
    assert good["colour"] != bad["colour"]  # negative control: a different risk, another colour


def test_unstated_pairs_show_observed_only_and_stated_ones_their_match(page: Any) -> None:
    seen = {c["cell"]: c for c in page.evaluate(CELLS_JS)}
    unstated = [c for c in seen.values() if c["cell"].endswith("-zz-unstated")]
    assert len(unstated) == 4
    for cell in unstated:
        assert (cell["verdict"], cell["obs"], cell["match"]) == (
            "observed-only",
            "observed only",
            "",
        )
    stated = seen["tls13-paubox"]  # negative control: a pair ses-2025 states
    assert stated["verdict"] == "pass"
    assert stated["match"].endswith("as expected")
    assert stated["obs"] == ""


def test_columns_grouped_by_software_rows_by_family_with_scores(page: Any, board_dir: Path) -> None:
    groups = page.locator("th.group").all_inner_texts()
    assert groups == ["policy models"]
    assert page.locator("th.group").get_attribute("colspan") == "3"
    families = page.locator("tr.family th").all_inner_texts()
    assert families == ["TLS version", "Certificate"]
    rows = page.evaluate(
        "() => [...document.querySelectorAll('tbody tr:not(.family)')].map(t => t.dataset.family)"
    )
    assert rows == ["tls-version", "tls-version", "tls-version", "certificate"]
    board = json.loads((board_dir / "scoreboard.json").read_text())
    for sender in board["senders"]:
        shown = page.locator(f'td[data-score="{sender["id"]}"]').inner_text()
        assert shown == sender["score"]
    ses = page.locator('td[data-score="ses-default"]').inner_text()
    assert ses.startswith("delivered to 3 of 3 unsafe receivers")
    strict = page.locator('td[data-score="zz-unstated"]').inner_text()
    assert strict.startswith("delivered to 0 of 3 unsafe receivers")  # negative control


def test_versions_and_the_subset_are_in_the_header(page: Any) -> None:
    assert page.locator("#subset").inner_text().startswith("A subset of the board: --receivers")
    text = page.locator("#versions").inner_text()
    assert re.search(r"OpenSSL \(harness process\)\s*\d+\.\d+\.\d+", text), text


def test_a_cell_links_to_its_stored_message(page: Any, board_dir: Path) -> None:
    cell = page.locator('td[data-cell="tls13-ses-default"]')
    link = cell.locator("a", has_text="stored message (.eml)")
    assert not link.is_visible()
    cell.click()
    assert link.is_visible()
    href = link.get_attribute("href")
    assert href is not None
    stored = (board_dir / href).read_text()
    assert "X-TLSLab-Cell: tls13-ses-default" in stored
    refused = page.locator('td[data-cell="no-starttls-zz-unstated"]')
    refused.click()
    assert refused.locator("a", has_text="stored message").count() == 0  # nothing arrived
    assert refused.get_by_text("no message arrived").is_visible()


def test_at_390_px_only_the_board_scrolls_sideways(
    browser: Any, board_dir: Path, tmp_path: Path
) -> None:
    narrow = browser.new_page(viewport=MOBILE)
    narrow.goto((board_dir / "index.html").as_uri())
    narrow.screenshot(path=str(tmp_path / "scoreboard-390.png"), full_page=True)
    sizes = narrow.evaluate(
        """() => { const box = document.querySelector('.scroll');
        return {page: document.documentElement.scrollWidth, view: window.innerWidth,
          box: box.scrollWidth, boxView: box.clientWidth}; }"""
    )
    narrow.close()
    assert sizes["page"] <= sizes["view"], f"the page scrolls sideways: {sizes}"
    assert sizes["box"] > sizes["boxView"], f"the board is wider than the screen: {sizes}"


def test_print_keeps_risk_colours_and_words(page: Any, tmp_path: Path) -> None:
    page.emulate_media(media="print")
    seen = page.evaluate(CELLS_JS)
    for cell in seen:
        assert cell["colour"] == rgb(RISK_COLOURS[cell["risk"]]), cell
    adjust = page.evaluate(
        "() => [...document.querySelectorAll('td[data-cell]')]"
        ".map(td => getComputedStyle(td).printColorAdjust)"
    )
    assert set(adjust) == {"exact"}, "backgrounds are kept on paper"
    pdf = page.pdf(path=str(tmp_path / "scoreboard.pdf"), format="A4", landscape=True)
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    flat = " ".join(text.split()).lower()
    assert "observed only" in flat, flat[:400]
    assert "as expected" in flat, flat[:400]
    assert "differs from expectation" not in flat  # every stated cell held: none says it differs
    page.emulate_media(media="screen")
