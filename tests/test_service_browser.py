"""The web viewer in a real headless Chromium (Debian's chromium + chromedriver, driven by selenium).

Skipped cleanly when chromium, chromedriver or selenium is missing. The service runs on uvicorn over loopback in a
thread with the in-process ``demo`` plugin (tests/demo_plugin.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rscore.plugins import get_plugin_manager, get_registry
from rscore.service import ServerThread, Settings, create_app

try:
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # skipped below
    webdriver = None

from browser_helpers import CHROMEDRIVER, CHROMIUM, check_browser, unavailable  # noqa: E402
from browser_helpers import marks as browser_marks  # noqa: E402

pytestmark = browser_marks()  # skipped without a browser, failed instead under RSCORE_REQUIRE_BROWSER=1
KEY = "browser-test-key-0123456789"


@pytest.fixture(scope="module")
def registry():
    import demo_plugin

    return get_registry(get_plugin_manager(entry_points=False, extra=[("demo", demo_plugin)]))


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[tuple[object, Path]]:
    """A headless Chromium with a fresh profile and a download folder; never reaches the network."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    downloads = tmp_path_factory.mktemp("downloads")
    check_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1200,1000",
    ):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    except WebDriverException as exc:
        unavailable(f"chromium did not start: {exc.msg}")
    driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    yield driver, downloads
    driver.quit()


@pytest.fixture
def service(tmp_path: Path, registry):
    started = []

    def start(**overrides) -> str:
        settings = Settings(output_root=tmp_path / "out", workers=1, queue_size=2, **overrides)
        thread = ServerThread(create_app(settings, registry=registry))
        started.append(thread)
        return thread.start()

    yield start
    for thread in started:
        thread.stop()


def write_geotiff(path: Path) -> Path:
    """A small uint8 GeoTIFF (UTM 33N, 10 m pixels) with two bright rectangles: 20x30 and 15x25 px."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    arr = np.full((60, 90), 20, np.uint8)
    arr[10:30, 20:50] = 230
    arr[40:55, 60:85] = 210
    profile = {"driver": "GTiff", "height": 60, "width": 90, "count": 1, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": Affine(10, 0, 500000, 0, -10, 4000000)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr, 1)
    return path


def wait(driver, timeout_s: float = 20) -> WebDriverWait:
    return WebDriverWait(driver, timeout_s)


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_upload_geotiff_see_overlay_plan_instances_and_download(browser, service, tmp_path: Path):
    driver, downloads = browser
    url = service()
    tif = write_geotiff(tmp_path / "region.tif")
    driver.get(url + "/")
    wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    assert not driver.find_element(By.ID, "key-row").is_displayed()  # no keys configured: no key field
    plugin = Select(driver.find_element(By.ID, "plugin"))
    assert "demo" in [o.get_attribute("value") for o in plugin.options]
    plugin.select_by_value("demo")
    examples = [o.get_attribute("value") for o in driver.find_elements(By.CSS_SELECTOR, "#examples option")]
    assert "bright spots" in examples  # the query box suggests the plugin's template examples
    driver.find_element(By.ID, "file").send_keys(str(tif))
    driver.find_element(By.ID, "query").send_keys("bright spots")
    driver.find_element(By.ID, "submit").click()

    wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#instances tbody tr")) == 2)
    assert driver.find_element(By.ID, "status").text.startswith("done in")
    assert "2 instance(s)" in driver.find_element(By.ID, "answer").text
    assert "demo:bright" in driver.find_element(By.ID, "answer").text
    assert "confidence 0." in driver.find_element(By.ID, "answer").text  # result.confidence, shown
    steps = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#steps > li")]
    assert any("brightness >= 0.5" in s for s in steps), steps
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in driver.find_elements(By.CSS_SELECTOR, "#instances tbody tr")]
    assert [r[5] for r in rows] == ["20, 10, 50, 30", "60, 40, 85, 55"]
    assert [r[3] for r in rows] == ["600", "375"]  # area in pixels

    overlay = driver.find_element(By.ID, "overlay")
    wait(driver).until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
    size = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", overlay)
    assert size == [90, 60]
    assert overlay.get_attribute("src").startswith("blob:")

    names = [b.get_attribute("data-name") for b in driver.find_elements(By.CSS_SELECTOR, "#downloads button")]
    assert {"mask", "overlay", "result"} <= set(names)
    driver.find_element(By.CSS_SELECTOR, '#downloads button[data-name="result"]').click()
    target = downloads / "result.json"
    deadline = time.monotonic() + 15
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert target.exists(), list(downloads.iterdir())
    doc = json.loads(target.read_text())
    assert doc["summary"]["instance_count"] == 2 and doc["scene"]["path"] == "region.tif"
    assert console_errors(driver) == []  # no CSP violation, no failed request


def test_errors_are_shown_in_one_line(browser, service, tmp_path: Path):
    driver, _ = browser
    url = service()
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 40)
    driver.get(url + "/")
    wait(driver).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    driver.find_element(By.ID, "file").send_keys(str(bad))
    driver.find_element(By.ID, "query").send_keys("bright spots")
    driver.find_element(By.ID, "submit").click()
    status = driver.find_element(By.ID, "status")
    wait(driver).until(lambda d: status.get_attribute("class") == "error")
    assert status.text.startswith("422: broken.png:"), status.text
    assert driver.find_element(By.ID, "submit").is_enabled()


def test_api_key_field_when_the_service_has_keys(browser, service, tmp_path: Path):
    driver, _ = browser
    url = service(api_keys=(KEY,))
    png = tmp_path / "spots.png"
    img = np.full((40, 40), 10, np.uint8)
    img[5:15, 5:15] = 240
    Image.fromarray(img).save(png)
    driver.get(url + "/")
    key_row = driver.find_element(By.ID, "key-row")
    wait(driver).until(lambda d: key_row.is_displayed())
    status = driver.find_element(By.ID, "status")
    wait(driver).until(lambda d: "API key" in status.text)
    key = driver.find_element(By.ID, "key")
    key.send_keys(KEY)
    driver.execute_script("arguments[0].dispatchEvent(new Event('change'))", key)
    try:
        wait(driver, 10).until(EC.presence_of_element_located((By.CSS_SELECTOR, '#plugin option[value="demo"]')))
    except TimeoutException:
        pytest.fail(f"plugins were not listed after entering the key: {status.text}")
    driver.find_element(By.ID, "file").send_keys(str(png))
    driver.find_element(By.ID, "query").send_keys("bright spots")
    driver.find_element(By.ID, "submit").click()
    wait(driver).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#instances tbody tr")) == 1)
    overlay = driver.find_element(By.ID, "overlay")
    wait(driver).until(lambda d: d.execute_script("return arguments[0].naturalWidth", overlay) == 40)
    driver.execute_script("sessionStorage.clear()")
