"""Open a realistic report in headless Chromium: no console errors, no network, tables and charts render.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``/usr/bin/chromium``, ``/usr/bin/chromedriver``)
and selenium; skipped with a reason otherwise. Saves a full-page screenshot to the test's tmp dir and, when
ONNXDUAL_SCREENSHOT_DIR is set, copies it there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from onnxdual.reports import write_certify_report
from tests.reports.synthetic import make_meta, make_results

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--no-first-run")

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)  # never let selenium-manager look for (or download) a browser
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.parametrize("probabilistic", [False, True], ids=["exact", "probabilistic"])
def test_report_renders_in_chromium(browser, tmp_path, probabilistic):
    from selenium.webdriver.common.by import By

    examples, summary, cascade = make_results(n=500, eps=(0.05, 0.1, 0.2), stages=2, seed=0)
    paths = write_certify_report(tmp_path / "report", examples, summary, make_meta(probabilistic=probabilistic),
                                 cascade)
    browser.set_window_size(1280, 1000)
    browser.get(paths["report_html"].resolve().as_uri())

    severe = [entry for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not severe, severe
    assert browser.title.startswith("Certification report")
    # Self-contained: the page loaded no resource at all (no fonts, scripts, images, styles).
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert not browser.find_elements(By.TAG_NAME, "script")

    headline = browser.find_element(By.CSS_SELECTOR, "#headline h1")
    assert headline.is_displayed() and headline.text.startswith("Certified ") and "ε = 0.2" in headline.text
    for css in ("table.summary", "table.cascade"):
        table = browser.find_element(By.CSS_SELECTOR, css)
        assert table.is_displayed() and len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) > 0
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 3
    for chart in charts:
        assert chart.size["width"] > 200 and chart.size["height"] > 100
    bound_badge = browser.find_elements(By.CSS_SELECTOR, ".badge.prob")
    assert bool(bound_badge) == probabilistic

    # The per-example table starts collapsed and opens on click, without any script.
    rows = browser.find_element(By.CSS_SELECTOR, "table.examples")
    assert not rows.is_displayed()
    browser.find_element(By.CSS_SELECTOR, "details.examples > summary").click()
    assert rows.is_displayed()
    assert len(rows.find_elements(By.CSS_SELECTOR, "tbody tr")) == len(examples)
    assert not [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 140, 16000))
    shot = tmp_path / f"report_{'probabilistic' if probabilistic else 'exact'}.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    target = os.environ.get("ONNXDUAL_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(target) / shot.name)
