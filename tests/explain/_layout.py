"""Layout checks of a report in headless Chromium at 1280 x 800 (the reader's first screen)."""

from __future__ import annotations

from pathlib import Path

from tests.browser import headless_chromium

WIDTH, HEIGHT = 1280, 800

_LAYOUT_JS = """
const summary = document.getElementById('summary');
const width = document.documentElement.clientWidth;
const sections = Array.from(document.querySelectorAll('main > section, main > details'));
const evidence = sections.filter(s => s.id !== 'summary' && s.tagName === 'SECTION');
const settings = Array.from(document.querySelectorAll('main > details.settings'));
const headline = summary ? summary.querySelector('.headline') : null;
const boxes = Array.from(document.querySelectorAll('table')).map(t => {
  const box = t.closest('.scroll') || t;
  return {right: box.getBoundingClientRect().right, title: (t.closest('section,details')
          || document.body).querySelector('h2,summary')?.innerText || ''};
});
return {
  has_summary: summary !== null,
  summary_top: summary ? summary.getBoundingClientRect().top : null,
  headline_bottom: headline ? headline.getBoundingClientRect().bottom : null,
  headline: headline ? headline.innerText : '',
  summary_first: summary !== null && sections.length > 0 && sections[0] === summary,
  evidence_after_summary: evidence.every(s => summary.compareDocumentPosition(s) & Node.DOCUMENT_POSITION_FOLLOWING),
  settings_last: settings.every(d => evidence.every(s => s.compareDocumentPosition(d) & Node.DOCUMENT_POSITION_FOLLOWING)),
  n_settings: settings.length,
  settings_open: settings.filter(d => d.open).length,
  scroll_width: document.documentElement.scrollWidth,
  width: width,
  overflowing: boxes.filter(b => b.right > width + 0.5).map(b => b.title),
  images: Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1),
};
"""


def first_screen(html_path: Path, screenshot: Path | None = None) -> dict:
    """Open the page at 1280 x 800 and measure where the summary, evidence, settings and
    tables are; save a screenshot of the first screen when ``screenshot`` is given."""
    with headless_chromium() as driver:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
        driver.get(Path(html_path).resolve().as_uri())
        result = driver.execute_script(_LAYOUT_JS)
        result["errors"] = [e for e in driver.get_log("browser") if e.get("level") in {"SEVERE", "ERROR"}]
        if screenshot is not None:
            driver.save_screenshot(str(screenshot))
    return result


def assert_findings_first(result: dict) -> None:
    """The summary is on the first screen and comes first, settings are collapsed at the end,
    nothing is wider than the page."""
    assert result["has_summary"], "no element with id='summary'"
    assert result["summary_first"] and result["evidence_after_summary"]
    assert 0 <= result["summary_top"] < HEIGHT
    assert result["headline_bottom"] is not None and result["headline_bottom"] <= HEIGHT, result
    assert result["n_settings"] >= 1 and result["settings_open"] == 0 and result["settings_last"]
    assert result["overflowing"] == [], result["overflowing"]
    assert result["scroll_width"] <= result["width"], (result["scroll_width"], result["width"])
    assert result["errors"] == []


def printed(html_path: Path, width: int = 794) -> dict:
    """Lay the page out with the print stylesheet at A4 width (794 CSS px): page width, and
    whether the collapsed settings are printed."""
    with headless_chromium() as driver:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": width, "height": 1123, "deviceScaleFactor": 1, "mobile": False})
        driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        driver.get(Path(html_path).resolve().as_uri())
        return driver.execute_script("""
          const settings = Array.from(document.querySelectorAll('details.settings'));
          return {scroll_width: document.documentElement.scrollWidth,
                  width: document.documentElement.clientWidth,
                  settings_height: settings.map(d => d.getBoundingClientRect().height),
                  summary_height: settings.map(d => d.querySelector('summary').getBoundingClientRect().height)};
        """)
