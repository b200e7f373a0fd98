"""Open a local HTML file in headless Debian Chromium (selenium + chromedriver) for tests."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def browser_available() -> bool:
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        return False
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return True


def require_browser() -> None:
    """Skip on a developer machine without Chromium; fail in CI, which installs it."""
    if browser_available():
        return
    if os.environ.get("CI"):
        pytest.fail("CI must install Debian's chromium and chromium-driver (see .ci/run)")
    pytest.skip("chromium / chromedriver / selenium not installed")


@contextmanager
def headless_chromium():
    """A selenium Chrome driver on Debian's Chromium with browser console logging on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="conceptlens-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1200,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def inspect_page(html_path: Path, screenshot: Path) -> dict:
    """Load a page; return console errors, image natural widths, body text and XSS marker."""
    with headless_chromium() as driver:
        driver.get(Path(html_path).resolve().as_uri())
        widths = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1);")
        text = driver.execute_script("return document.body.innerText;")
        pwned = driver.execute_script("return window.__pwned === undefined ? null : window.__pwned;")
        n_scripts = driver.execute_script("return document.scripts.length;")
        logs = driver.get_log("browser")
        driver.save_screenshot(str(screenshot))
    errors = [entry for entry in logs if entry.get("level") in {"SEVERE", "ERROR"}]
    return {"errors": errors, "widths": widths, "text": text, "pwned": pwned, "n_scripts": n_scripts}
