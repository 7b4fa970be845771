"""Open realistic reports in headless Chromium: no console errors, no network, tables, charts and images
render, and the per-example table sorts and filters (its one inline script). The bench and training
reports are opened too.

Needs Debian's ``chromium`` and ``chromium-driver`` packages (``/usr/bin/chromium``, ``/usr/bin/chromedriver``)
and selenium; skipped with a reason otherwise. Saves a full-page screenshot to the test's tmp dir and, when
ONNXDUAL_SCREENSHOT_DIR is set, copies it there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from onnxdual.reports import write_certify_report
from onnxdual.reports.bench import write_bench_report
from onnxdual.reports.training import write_training_report
from tests.reports.synthetic import make_meta, make_results
from tests.reports.test_run_reports import _metrics, bench_results, bench_summary

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


def _digit_adversarials(examples: pd.DataFrame, eps: float, count: int = 6) -> pd.DataFrame:
    """Undecided and broken rows of ``examples`` at ``eps``, drawn with the shipped MNIST sample's digits and a
    sign perturbation of size eps (what certify hands the report, shaped like an image run)."""
    from onnxdual.data import load_dataset

    digits = load_dataset(None, split="test", limit=count).x.numpy()
    rows = examples[(examples.eps == eps) & ~examples.certified & (examples.prediction == examples.label)]
    rng = np.random.default_rng(0)
    out = []
    for k, row in enumerate(rows.head(count).itertuples()):
        x = digits[k % len(digits)]
        adv = np.clip(x + eps * np.sign(rng.standard_normal(x.shape)), 0, 1)
        out.append({"index": row.index, "eps": eps, "outcome": "broken" if row.pgd_success else "undecided",
                    "pgd_margin": row.pgd_margin, "input": x, "adversarial": adv})
    return pd.DataFrame(out)


def _no_errors_and_offline(browser) -> None:
    severe = [entry for entry in browser.get_log("browser") if entry.get("level") == "SEVERE"]
    assert not severe, severe
    # Self-contained: the page fetched no resource at all (no fonts, scripts, images, styles).
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0


def _screenshot(browser, path: Path) -> None:
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 140, 16000))
    assert browser.save_screenshot(str(path)) and path.stat().st_size > 10_000
    target = os.environ.get("ONNXDUAL_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(target) / path.name)


@pytest.mark.parametrize("probabilistic", [False, True], ids=["exact", "probabilistic"])
def test_report_renders_in_chromium(browser, tmp_path, probabilistic):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    examples, summary, cascade = make_results(n=500, eps=(0.05, 0.1, 0.2), stages=2, seed=0)
    adversarials = _digit_adversarials(examples, 0.2)
    paths = write_certify_report(tmp_path / "report", examples, summary, make_meta(probabilistic=probabilistic),
                                 cascade, adversarials=adversarials)
    browser.set_window_size(1280, 1000)
    browser.get(paths["report_html"].resolve().as_uri())
    _no_errors_and_offline(browser)
    assert browser.title.startswith("Certification report")
    scripts = browser.find_elements(By.TAG_NAME, "script")
    assert len(scripts) == 1 and not scripts[0].get_attribute("src")  # the page's own, inline

    headline = browser.find_element(By.CSS_SELECTOR, "#headline h1")
    assert headline.is_displayed() and headline.text.startswith("Certified ") and "ε = 0.2" in headline.text
    meaning = browser.find_element(By.ID, "verdict-meaning")
    assert meaning.is_displayed() and "not relative to clean accuracy" in meaning.text
    for css in ("table.summary", "table.cascade", "table.classes"):
        table = browser.find_element(By.CSS_SELECTOR, css)
        assert table.is_displayed() and len(table.find_elements(By.CSS_SELECTOR, "tbody tr")) > 0
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.classes tbody tr")) == examples.label.nunique()
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 4  # accuracy, cascade, margin histograms, bound against attack
    for chart in charts:
        assert chart.size["width"] > 200 and chart.size["height"] > 100
    assert browser.find_element(By.CSS_SELECTOR, "#scatter svg.chart").is_displayed()
    bound_badge = browser.find_elements(By.CSS_SELECTOR, ".badge.prob")
    assert bool(bound_badge) == probabilistic

    # Thumbnails: decoded by the browser from their data URIs, 28x28 pixels each, drawn enlarged.
    images = browser.find_elements(By.CSS_SELECTOR, "#gallery img")
    assert len(images) == 3 * len(adversarials) > 0
    for image in images:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 28
        assert image.size["width"] >= 56

    # The per-example table starts collapsed and opens on click, without any script.
    table = browser.find_element(By.ID, "examples-table")
    assert not table.is_displayed()
    browser.find_element(By.CSS_SELECTOR, "details.examples > summary").click()
    assert table.is_displayed()

    def visible() -> list[dict]:
        """The rows the browser lays out (one script call: asking per element is slow), in page order."""
        return browser.execute_script(
            "return Array.from(document.querySelectorAll('#examples-table tbody tr'))"
            ".filter(function (r) { return r.getClientRects().length > 0; })"
            ".map(function (r) { return {eps: r.getAttribute('data-eps'),"
            " margin: r.cells[5].getAttribute('data-sort')}; });")

    assert len(visible()) == len(examples)

    # Filtering: by outcome, by eps, by text.
    undecided = int((~examples.certified & ~examples.pgd_success & (examples.prediction == examples.label)).sum())
    Select(browser.find_element(By.ID, "ex-outcome")).select_by_value("undecided")
    assert len(visible()) == undecided > 0
    assert browser.find_element(By.ID, "ex-shown").text == f"{undecided} of {len(examples)} rows"
    Select(browser.find_element(By.ID, "ex-eps")).select_by_value("0.2")
    at_02 = visible()
    assert 0 < len(at_02) < undecided and all(r["eps"] == "0.2" for r in at_02)
    Select(browser.find_element(By.ID, "ex-outcome")).select_by_value("")
    assert len(visible()) == int((examples.eps == 0.2).sum())
    Select(browser.find_element(By.ID, "ex-eps")).select_by_value("")
    search = browser.find_element(By.ID, "ex-filter")
    search.send_keys("broken by PGD")
    assert len(visible()) == int((~examples.certified & examples.pgd_success &
                                  (examples.prediction == examples.label)).sum())
    search.clear()
    search.send_keys(" ")  # clear() fires no input event; a blank query shows everything again
    assert len(visible()) == len(examples)

    # Sorting: by the margin lower bound, ascending then descending (numbers, not text).
    head = browser.find_element(By.CSS_SELECTOR, 'th[data-col="margin"]')
    margins = examples.margin_lower_bound.astype(float)
    head.find_element(By.TAG_NAME, "button").click()
    assert head.get_attribute("aria-sort") == "ascending"
    first = float(visible()[0]["margin"])
    assert first == pytest.approx(margins.min(), rel=1e-6)
    head.find_element(By.TAG_NAME, "button").click()
    assert head.get_attribute("aria-sort") == "descending"
    first = float(visible()[0]["margin"])
    assert first == pytest.approx(margins.max(), rel=1e-6)
    assert not [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    _screenshot(browser, tmp_path / f"report_{'probabilistic' if probabilistic else 'exact'}.png")


def test_bench_and_training_reports_render_in_chromium(browser, tmp_path):
    from selenium.webdriver.common.by import By

    results = bench_results()
    bench = write_bench_report(tmp_path / "bench", results, bench_summary(results), {"title": "Benchmark"})
    browser.set_window_size(1280, 1000)
    browser.get(bench["report_html"].resolve().as_uri())
    _no_errors_and_offline(browser)
    cactus = browser.find_element(By.CSS_SELECTOR, "#cactus svg.chart")
    assert cactus.is_displayed() and cactus.size["width"] > 300 and cactus.size["height"] > 150
    _screenshot(browser, tmp_path / "bench_report.png")

    training = write_training_report(tmp_path / "training.html", _metrics(6),
                                     {"model": "model.onnx", "certify_report": "report/report.html"})
    browser.set_window_size(1280, 1000)
    browser.get(training.resolve().as_uri())
    _no_errors_and_offline(browser)
    curves = browser.find_element(By.CSS_SELECTOR, "#curves svg.chart")
    assert curves.is_displayed() and curves.size["width"] > 500
    assert len(browser.find_elements(By.CSS_SELECTOR, "table.metrics tbody tr")) == 6
    _screenshot(browser, tmp_path / "training_report.png")
