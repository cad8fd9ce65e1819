"""The dashboard and the report in a real browser: headless Chromium driven by selenium.

The dashboard is started on a free loopback port; the test checks that the ledger rows and the
charts render, that a row appended to results.tsv shows up without a reload, and that the page
fetches nothing but its own server. The report is opened from disk and must render its embedded
plot with no network at all. Screenshots go to $AUTORESEARCH_ARTIFACTS (default: the test's
tmp_path), for a person to look at.

Needs the Debian packages `chromium` and `chromium-driver` (scripts/test.sh installs them); the
tests skip, saying so, only when no Chromium can be found.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from autoresearch.ledger import Ledger, Row
from autoresearch.report import dashboard, reading
from autoresearch.report.build import build
from autoresearch.report.synthetic import Shape, make_research
from autoresearch.rundir import METRICS_FILE
from autoresearch.workspace import FLIGHTS_FILE, STATE_DIR

pytestmark = pytest.mark.slow

BROWSERS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "chromium", "chromium-browser", "google-chrome")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver", "chromedriver")
WAIT_S = 30


def find(candidates: tuple[str, ...]) -> str | None:
    for name in candidates:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = find(BROWSERS), find(DRIVERS)
    if binary is None or driver_path is None:
        pytest.skip("no Chromium found (need /usr/bin/chromium and /usr/bin/chromedriver: "
                    "apt-get install chromium chromium-driver, as scripts/test.sh does)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1400", "--no-first-run", "--disable-extensions",
                "--proxy-server=http://127.0.0.1:9"):  # anything but loopback would fail to load
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("AUTORESEARCH_ARTIFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def requested_urls(driver) -> list[str]:
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def ledger_rows(driver) -> list[list[str]]:
    """(run, text) of each ledger row, read in one script call (the page may redraw between two calls)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#ledger tbody tr')).map(tr => [tr.dataset.run, tr.textContent])")


def progress_chart(driver) -> dict:
    return driver.execute_script("""
        const svg = document.getElementById('progress-chart');
        const best = svg.querySelector('path.running-best');
        const box = best ? best.getBBox() : {width: 0, height: 0};
        return {points: svg.querySelectorAll('.point').length, band: svg.querySelectorAll('rect.noise-band').length,
                steps: best ? (best.getAttribute('d').match(/V/g) || []).length : 0, width: box.width, height: box.height};
    """)


def screenshot(driver, path: Path) -> None:
    driver.save_screenshot(str(path))
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 800 and height >= 600


def test_dashboard_renders_and_follows_the_ledger_live(tmp_path: Path, browser, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder = tmp_path / "research"
    make_research(folder, Shape(experiments=20, steps=60, seed=2))
    _run_under_way(folder)
    ledger = Ledger.open(folder / "results.tsv")
    n = len(ledger.rows)
    server, thread = dashboard.start(folder, port=0, interval_s=0.5)
    try:
        browser.get(server.url)
        wait = WebDriverWait(browser, WAIT_S)
        wait.until(lambda d: len(ledger_rows(d)) == n)

        # the ledger: newest first, every run
        shown = ledger_rows(browser)
        assert [run for run, _ in shown] == [r.run_id or f"row-{i + 1}" for i, r in reversed(list(enumerate(ledger.rows)))]
        assert ledger.rows[-1].description in shown[0][1]
        # the progress chart: a mark per run, a step of the running best per kept change, the noise band
        chart = progress_chart(browser)
        assert chart["points"] == n
        assert chart["steps"] == len(reading.load(folder).improvements()) > 0
        assert chart["band"] == 1
        assert chart["width"] > 500 and chart["height"] > 20  # drawn with real geometry
        # the run under way: its curve against the baseline's and the best's, and the time left
        assert len(browser.find_elements(By.CSS_SELECTOR, "#loss-chart polyline.loss-line")) == 3
        assert browser.find_element(By.ID, "current-description").text == "wider MLP"
        assert "left" in browser.find_element(By.ID, "time-left").text
        assert "keep rate" in browser.find_element(By.ID, "summary").text
        screenshot(browser, artifacts / "dashboard.png")

        # a new row, written the way the loop writes it: it appears without a reload
        browser.execute_script("window.__sameDocument = 'yes'")
        best = reading.load(folder).summary.best
        ledger.append(Row(commit="feedbee", val_bpb=best - 0.02, memory_gb=44.0, status="keep",
                          description="appended while the page was open", run_id="0999", kind="experiment",
                          timestamp="2025-01-08T09:00:00+00:00", parent="0000000", gain=0.02))
        wait.until(lambda d: len(ledger_rows(d)) == n + 1)
        assert browser.execute_script("return window.__sameDocument") == "yes"
        run, text = ledger_rows(browser)[0]
        assert run == "0999" and "appended while the page was open" in text
        wait.until(lambda d: "appended while the page was open" in d.find_element(By.ID, "summary").text)
        assert progress_chart(browser)["points"] == n + 1
        screenshot(browser, artifacts / "dashboard-after-new-row.png")

        assert all(u.startswith(server.url) or u.startswith("data:") for u in requested_urls(browser)), \
            "the dashboard fetched something other than its own server"
        assert console_errors(browser) == []
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_report_renders_offline(tmp_path: Path, browser, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By

    folder = tmp_path / "research"
    make_research(folder, Shape(experiments=20, steps=60, seed=2))
    built = build(folder)
    shutil.copyfile(built.progress, artifacts / "progress.png")
    browser.get(built.report.as_uri())
    natural = browser.execute_script("const i = document.querySelector('img.progress'); return [i.complete, i.naturalWidth]")
    assert natural[0] and natural[1] > 1000  # the embedded plot decoded
    assert len(browser.find_elements(By.CSS_SELECTOR, "article")) == len(built.research.records)
    assert browser.find_elements(By.CSS_SELECTOR, "article svg.curve polyline")
    urls = requested_urls(browser)
    assert all(u.startswith("file://") or u.startswith("data:") for u in urls), urls
    assert console_errors(browser) == []
    screenshot(browser, artifacts / "report.png")


def _run_under_way(folder: Path) -> None:
    """A loop in the middle of a run: its state file (flights.json), and the run's first metrics."""
    import json

    from autoresearch import settings

    settings.save(settings.from_preset("tiny", time_budget=300.0), folder)
    (folder / STATE_DIR).mkdir(exist_ok=True)
    (folder / STATE_DIR / FLIGHTS_FILE).write_text(json.dumps([
        {"phase": "running", "parent": "0000000", "proposer": "search", "kind": "experiment",
         "description": "wider MLP", "hypothesis": "", "params": {}, "candidate": "", "runs": ["0500"], "tokens": 0,
         "cost_usd": 0.0, "workers": 1}]))
    run = folder / "runs" / "0500"
    run.mkdir(parents=True)
    (run / METRICS_FILE).write_text("".join(
        json.dumps({"step": i, "loss": 2.2 + 5 * 0.97 ** i, "training_seconds": i * 1.5, "progress": i * 1.5 / 300}) + "\n"
        for i in range(90)))
