"""report.html as a person sees it: the ses-2025 report rendered by headless Chromium.

Drives Debian's `chromium` (`make system-deps`) with Playwright. Where no browser can be
installed the tests skip with one line; with LAB_REQUIRE_TOOLS=1 (CI) they fail instead.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pypdf
import pytest
from cli_helpers import tlslab
from tools import missing

CHROMIUM = Path(os.environ.get("LAB_CHROMIUM", "/usr/bin/chromium"))
DESKTOP = {"width": 1400, "height": 900}
MOBILE = {"width": 390, "height": 844}
STUDY_ROWS = 9
CELLS_JS = """() => [...document.querySelectorAll('td[data-cell]')].map(td => ({
  cell: td.dataset.cell, risk: td.dataset.risk, verdict: td.dataset.verdict,
  row: td.parentElement.querySelector('th').textContent,
  colour: getComputedStyle(td).backgroundColor,
  adjust: getComputedStyle(td).printColorAdjust,
  label: td.querySelector('.rname') ? td.querySelector('.rname').innerText : ''}))"""

pytestmark = pytest.mark.integration


def tool_missing(why: str) -> None:
    """Skip with one line, or fail when LAB_REQUIRE_TOOLS=1 says every tool must be there."""
    missing(why, "make system-deps installs chromium; pip install -e '.[dev]' installs playwright")


@pytest.fixture(scope="module")
def shipped_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the shipped ses-2025 suite on the local backend; return its run folder."""
    base = tmp_path_factory.mktemp("browser")
    ran = tlslab("run", "--suite", "ses-2025", "--reports", base / "r", "--certs", base / "c")
    assert ran.status == 0, ran.out + ran.err
    return (base / "r" / "latest").resolve()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Yield a headless Chromium (Debian's) driven by Playwright."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        tool_missing("playwright is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        tool_missing(f"no browser at {CHROMIUM} (make system-deps installs Debian's chromium)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium refuses root otherwise
    with sync_playwright() as driver:
        try:
            chromium = driver.chromium.launch(executable_path=str(CHROMIUM), args=args)
        except Error as error:
            tool_missing(f"{CHROMIUM} does not start: {str(error).splitlines()[0]}")
        yield chromium
        chromium.close()


def open_page(browser: Any, report: Path, viewport: dict[str, int]) -> Any:
    """Return a page showing report.html at the given viewport."""
    page = browser.new_page(viewport=viewport)
    page.goto((report / "report.html").as_uri())
    return page


@pytest.fixture
def desktop(browser: Any, shipped_report: Path, tmp_path: Path) -> Iterator[Any]:
    """Yield the report at 1400 px wide, after a full-page screenshot into the test's tmp dir."""
    page = open_page(browser, shipped_report, DESKTOP)
    page.screenshot(path=str(tmp_path / "report-1400.png"), full_page=True)
    yield page
    page.close()


def cells(page: Any) -> list[dict[str, str]]:
    found: list[dict[str, str]] = page.evaluate(CELLS_JS)
    return found


def test_rows_show_four_or_more_risk_classes_each_in_its_own_colour(desktop: Any) -> None:
    seen = cells(desktop)
    assert len({c["row"] for c in seen}) == STUDY_ROWS
    assert len(seen) == 27
    colours: dict[str, set[str]] = {}
    for cell in seen:
        colours.setdefault(cell["risk"], set()).add(cell["colour"])
    assert set(colours) == {"verified", "unverified", "legacy", "plaintext", "not-delivered"}
    assert all(len(shades) == 1 for shades in colours.values()), colours
    assert len({next(iter(shades)) for shades in colours.values()}) == len(colours), colours
    by_cell = {c["cell"]: c for c in seen}
    # the study's finding is not painted like a good delivery, though both matched expectation
    good, finding = by_cell["tls13-ses-default"], by_cell["self-signed-ses-default"]
    assert (good["verdict"], finding["verdict"]) == ("pass", "pass")
    assert good["colour"] != finding["colour"]
    assert finding["label"].lower() == "tls, certificate not verified"


def test_legend_and_policy_note_are_on_the_first_screen(desktop: Any) -> None:
    for selector in ("#legend", "#policy-note"):
        box = desktop.locator(selector).bounding_box()
        assert box is not None
        assert box["y"] + box["height"] <= DESKTOP["height"], f"{selector} below the first screen"
    receivers = desktop.locator("#receivers").bounding_box()
    assert receivers is not None
    assert receivers["y"] > DESKTOP["height"], "negative control: the Receivers section is lower"


def test_clicking_a_cell_shows_its_received_header(desktop: Any, shipped_report: Path) -> None:
    data = json.loads((shipped_report / "results.json").read_text(encoding="utf-8"))
    (row,) = [r for r in data["results"] if (r["receiver"], r["sender"]) == ("tls10", "paubox")]
    assert row["received"] is None, "paubox falls back on tls10: no header to show"
    (row,) = [
        r for r in data["results"] if (r["receiver"], r["sender"]) == ("tls10", "ses-default")
    ]
    header = desktop.locator('td[data-cell="tls10-ses-default"] pre.received')
    other = desktop.locator('td[data-cell="tls13-ses-default"] pre.received')
    assert not header.is_visible()
    desktop.locator('td[data-cell="tls10-ses-default"]').click()
    assert header.is_visible()
    stored = row["received"].replace("\r\n", "\n")  # HTML parsing folds CR LF to LF
    assert header.inner_text() == f"Received: {stored}"
    assert not other.is_visible(), "only the clicked cell opens"


def test_at_390_px_only_the_matrix_scrolls_sideways(
    browser: Any, shipped_report: Path, tmp_path: Path
) -> None:
    page = open_page(browser, shipped_report, MOBILE)
    page.screenshot(path=str(tmp_path / "report-390.png"), full_page=True)
    sizes = page.evaluate(
        """() => { const box = document.querySelector('.scroll');
        box.scrollLeft = 200;
        const label = document.querySelector('.matrix tbody th').getBoundingClientRect();
        return {page: document.documentElement.scrollWidth, view: window.innerWidth,
          box: box.scrollWidth, boxView: box.clientWidth, boxLeft: box.getBoundingClientRect().left,
          labelLeft: label.left, scrolled: box.scrollLeft}; }"""
    )
    page.close()
    assert sizes["page"] <= sizes["view"], f"the page scrolls sideways: {sizes}"
    assert sizes["box"] > sizes["boxView"], "the matrix is wider than the screen and scrolls"
    assert sizes["scrolled"] == 200
    assert abs(sizes["labelLeft"] - sizes["boxLeft"]) < 1, "row labels stay put while it scrolls"


def test_print_keeps_colours_labels_and_evidence(desktop: Any, tmp_path: Path) -> None:
    desktop.emulate_media(media="print")
    seen = cells(desktop)
    assert {c["adjust"] for c in seen} == {"exact"}, "backgrounds are kept on paper"
    assert len({c["colour"] for c in seen}) == 5
    assert desktop.locator('td[data-cell="tls10-ses-default"] pre.received').is_visible()
    pdf = desktop.pdf(path=str(tmp_path / "report.pdf"), format="A4", landscape=True)
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)
    flat = " ".join(text.split()).lower()
    for label in ("tls, certificate not verified", "legacy tls 1.0/1.1", "as expected"):
        assert label in flat, f"{label!r} missing from the PDF"
    assert "received: from" in flat, "evidence is printed expanded"
    desktop.emulate_media(media="screen")
    assert not desktop.locator('td[data-cell="tls10-ses-default"] pre.received').is_visible()


def test_expand_all_opens_every_cell_and_evidence_links_resolve(
    desktop: Any, shipped_report: Path
) -> None:
    opened = "() => [...document.querySelectorAll('.matrix details')].filter(d => d.open).length"
    assert desktop.evaluate(opened) == 0
    desktop.locator("#expand-all").click()
    assert desktop.evaluate(opened) == 27
    assert desktop.locator("#expand-all").inner_text() == "collapse all evidence"
    links = desktop.evaluate(
        """() => [...document.querySelectorAll('td[data-cell="tls10-ses-default"] .files a')]
        .map(a => [a.textContent, a.getAttribute('href'), a.href])"""
    )
    assert [name for name, _, _ in links] == ["stored message (.eml)", "session records"]
    for _, relative, absolute in links:
        assert not relative.startswith(("/", "file:")), "links are relative to the report"
        assert Path(absolute.removeprefix("file://")).is_file(), absolute
    desktop.locator("#expand-all").click()
    assert desktop.evaluate(opened) == 0


def test_dark_mode_darkens_the_page_and_keeps_the_risk_colours(
    browser: Any, shipped_report: Path
) -> None:
    looks = "() => ['backgroundColor', 'color'].map(k => getComputedStyle(document.body)[k])"
    seen: dict[str, tuple[list[str], dict[str, str]]] = {}
    for scheme in ("light", "dark"):
        page = browser.new_page(viewport=DESKTOP, color_scheme=scheme)
        page.goto((shipped_report / "report.html").as_uri())
        seen[scheme] = (page.evaluate(looks), {c["cell"]: c["colour"] for c in cells(page)})
        page.close()
    (light_page, light_cells), (dark_page, dark_cells) = seen["light"], seen["dark"]
    assert light_page == ["rgb(255, 255, 255)", "rgb(27, 31, 36)"]
    assert dark_page == ["rgb(13, 17, 23)", "rgb(230, 237, 243)"]
    assert dark_cells == light_cells, "a risk class looks the same in both schemes"


def test_print_is_light_even_in_dark_mode(browser: Any, shipped_report: Path) -> None:
    page = browser.new_page(viewport=DESKTOP, color_scheme="dark")
    page.goto((shipped_report / "report.html").as_uri())
    background = "() => getComputedStyle(document.body).backgroundColor"
    assert page.evaluate(background) == "rgb(13, 17, 23)"
    page.emulate_media(media="print")
    assert page.evaluate(background) == "rgb(255, 255, 255)"
    page.close()
