"""The viewer in headless Chromium: an earth result on an interactive map (classes and hillshade layers, polygons
with popups, opacity), a video result in a player that plays, an image result over its input with an opacity
slider, confidence and caveats. Skipped like tests/test_service_browser.py when chromium or selenium is missing."""

from __future__ import annotations

import importlib.util
import time
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rscore import hookimpl
from rscore.plugins import get_plugin_manager, get_registry
from rscore.sdk import OpContext, ProgramOutput, Template
from rscore.service import ServerThread, Settings, create_app

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:
    webdriver = None

from browser_helpers import CHROMEDRIVER, CHROMIUM, check_browser, unavailable  # noqa: E402
from browser_helpers import marks as browser_marks  # noqa: E402

pytestmark = browser_marks()  # skipped without a browser, failed instead under RSCORE_REQUIRE_BROWSER=1


def _bright(ctx: OpContext) -> ProgramOutput:
    grey = ctx.band("red") * 0.299 + ctx.band("green") * 0.587 + ctx.band("blue") * 0.114
    ctx.caveat("bright <b>things</b> of any kind are selected")
    return ProgramOutput(mask=grey >= 170)


@pytest.fixture(scope="module")
def registry():
    import demo_plugin

    mod = types.ModuleType("viewer_video_plugin")

    @hookimpl
    def rscore_query_templates():
        return [Template("bright", "bright box", "bright boxes", ("bright boxes",), program=_bright,
                         keywords=("bright", "box", "boxes"), kinds=("video", "image"))]

    mod.rscore_query_templates = rscore_query_templates
    return get_registry(get_plugin_manager(extra=[("demo", demo_plugin), ("vview", mod)]))


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    check_browser()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--window-size=1200,1400",
                 "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        drv = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    except WebDriverException as exc:
        unavailable(f"chromium did not start: {exc.msg}")
    yield drv
    drv.quit()


@pytest.fixture
def url(tmp_path, registry):
    thread = ServerThread(create_app(Settings(output_root=tmp_path / "out", workers=1, queue_size=2), registry=registry))
    yield thread.start()
    thread.stop()


def _submit(driver, url: str, path: Path, plugin: str, query: str) -> None:
    t0 = time.perf_counter()
    driver.get(url + "/")
    WebDriverWait(driver, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    paint = driver.execute_script(
        "const p = performance.getEntriesByName('first-contentful-paint')[0]; return p ? p.startTime : null")
    print(f"viewer ready {1000 * (time.perf_counter() - t0):.0f} ms after navigation; first contentful paint "
          f"{paint if paint is None else round(paint)} ms")  # a figure, not asserted
    Select(driver.find_element(By.ID, "plugin")).select_by_value(plugin)
    driver.find_element(By.ID, "file").send_keys(str(path))
    driver.find_element(By.ID, "query").send_keys(query)
    driver.find_element(By.ID, "submit").click()


def _box_column(driver, player) -> float:
    """Mean column of the bright/tinted pixels in rows 12-27 of the frame the player shows (drawn to a canvas)."""
    return driver.execute_script("""
        const v = arguments[0], c = document.createElement('canvas');
        c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0);
        const d = g.getImageData(0, 12, c.width, 16).data;
        let sum = 0, n = 0;
        for (let i = 0; i < d.length; i += 4) {
          if (Math.abs(d[i] - 60) + Math.abs(d[i + 1] - 60) + Math.abs(d[i + 2] - 60) > 90) { sum += (i / 4) % c.width; n++; }
        }
        return n ? sum / n : -1;""", player)


def _errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_earth_result_on_an_interactive_map(driver, url, tmp_path):
    import rasterio
    from dataclasses import replace
    from rasterio.transform import from_origin

    from rscore_earth import synthetic

    z = synthetic.generate_dem(replace(synthetic.EXAMPLE_SPEC, height=160, width=200))
    dem = tmp_path / "dem.tif"
    with rasterio.open(dem, "w", driver="GTiff", width=200, height=160, count=1, dtype="float32", crs="EPSG:32633",
                       transform=from_origin(500_000, 5_120_000, 10, 10)) as dst:  # fmt: skip
        dst.write(z.astype(np.float32), 1)
    _submit(driver, url, dem, "earth", "steep terrain")
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "map").get_attribute("data-ready") == "1")
    layers = driver.find_elements(By.CSS_SELECTOR, "#map img.leaflet-image-layer")
    assert len(layers) == 2  # the offline basemap (hillshade) and the classes
    polygons = driver.find_elements(By.CSS_SELECTOR, "#map path.leaflet-interactive")
    assert len(polygons) > 3
    # the map sits where the raster is: Leaflet's view centre ~ the DEM centre in WGS 84
    from pyproj import Transformer

    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(501_000, 5_119_200)
    centre = driver.execute_script("const c = leafletMap.getCenter(); return [c.lat, c.lng]")
    assert centre == pytest.approx([lat, lon], abs=2e-4)  # ~20 m
    legend = driver.find_element(By.ID, "legend").text
    assert "steep" in legend and "EPSG:32633" in legend
    # the instance table gives each area in ground units (10 m pixels: 100 m2 each) beside the pixel count
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in driver.find_elements(By.CSS_SELECTOR, "#instances tbody tr")]  # fmt: skip
    scale = {"m²": 1, "ha": 1e4, "km²": 1e6}  # the CLI's units: m² below 1 ha, ha up to 100 ha, km² above
    assert rows and all(r[4].split()[-1] in scale for r in rows), rows
    for row in rows:
        px = float(row[3].replace(",", ""))  # shown with thousands separators
        value, unit = row[4].split()
        assert float(value.replace(",", "")) * scale[unit] == pytest.approx(100 * px, rel=0.01), row
        assert unit == ("m²" if px < 100 else "ha" if px < 10_000 else "km²"), row
    # the area per class, with its share of the region
    per_class = driver.find_element(By.ID, "classes").text
    assert driver.find_element(By.ID, "classes-section").is_displayed() and "%" in per_class
    # a popup with the polygon's class and area
    driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", polygons[0])
    # the popup element appears first and is filled on the next frame: wait for its text, then check it
    text = WebDriverWait(driver, 10).until(
        lambda d: (d.find_elements(By.CSS_SELECTOR, ".leaflet-popup-content") or [None])[0] is not None
        and d.find_element(By.CSS_SELECTOR, ".leaflet-popup-content").text
    )
    assert "area:" in text and "m²" in text
    # the opacity slider fades the classes layer
    classes = driver.find_element(By.CSS_SELECTOR, "#map img.rscore-classes")
    slider = driver.find_element(By.ID, "opacity")
    driver.execute_script("arguments[0].value = 20; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert float(classes.value_of_css_property("opacity")) == pytest.approx(0.2)
    # a row of the instance table shows its instance: the map zooms to its box (pixels -> UTM -> WGS 84), framed
    row = driver.find_elements(By.CSS_SELECTOR, "#instances tbody tr")[-1]  # a small one: the map zooms in
    x0, y0, x1, y1 = (int(v) for v in row.find_elements(By.TAG_NAME, "td")[5].text.split(", "))
    zoom = driver.execute_script("return leafletMap.getZoom()")
    row.click()
    WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#map path.rscore-picked"))
    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    west, north = to_wgs84.transform(500_000 + 10 * x0, 5_120_000 - 10 * y0)
    east, south = to_wgs84.transform(500_000 + 10 * x1, 5_120_000 - 10 * y1)
    centre = "const c = leafletMap.getCenter(); return [c.lat, c.lng]"
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return leafletMap.getZoom()") > zoom and (
        d.execute_script(centre) == pytest.approx([(south + north) / 2, (west + east) / 2], abs=2e-4)))
    # the screenshot of the map shows the drawn layers (not a blank box)
    png = tmp_path / "map.png"
    driver.find_element(By.ID, "map").screenshot(str(png))
    pixels = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels // 16, axis=0)) > 20
    assert _errors(driver) == []


def test_video_result_plays_with_its_events(driver, url, tmp_path):
    import av

    clip = tmp_path / "boxes.avi"
    with av.open(str(clip), "w") as c:
        s = c.add_stream("mjpeg", rate=Fraction(10))
        s.width, s.height, s.pix_fmt = 160, 96, "yuvj420p"
        for i in range(30):
            img = np.full((96, 160, 3), 60, np.uint8)
            img[10:30, 8 + 3 * i : 30 + 3 * i] = 235
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    _submit(driver, url, clip, "vview", "bright boxes")
    player = WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "player") if
                                             d.find_element(By.ID, "player").is_displayed() else False)  # fmt: skip
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return arguments[0].readyState", player) >= 2)
    assert driver.execute_script("return [arguments[0].videoWidth, arguments[0].videoHeight]", player) == [160, 96]
    assert driver.execute_script("return arguments[0].duration", player) == pytest.approx(3.0, abs=0.15)
    # the picture advances, not only the clock: the bright box (3 px further right each frame) is found in the
    # frames the player shows at the start and after playing a while
    at_start = _box_column(driver, player)
    driver.execute_script("arguments[0].play()", player)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return arguments[0].currentTime", player) > 1.0)
    driver.execute_script("arguments[0].pause()", player)
    shown = driver.execute_script("return arguments[0].currentTime", player)
    later = _box_column(driver, player)
    assert at_start == pytest.approx(19, abs=3)  # frame 0: columns 8..29
    assert later - at_start == pytest.approx(3 * shown * 10, abs=7)  # 3 px per frame at 10 frames/s
    events = driver.find_elements(By.CSS_SELECTOR, "#events button")
    assert events and events[0].text.startswith("#1 bright box")
    # the timeline: the track's bar spans its time over the clip; a click on the rail seeks there
    bar = driver.find_element(By.CSS_SELECTOR, "#timeline .bar")
    rail = driver.find_element(By.CSS_SELECTOR, "#timeline .rail")
    assert bar.rect["width"] / rail.rect["width"] == pytest.approx(2.9 / 3.0, abs=0.05)  # frames 0-29 at 10 fps
    driver.execute_script("""const r = arguments[0].getBoundingClientRect();
        arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true, clientX: r.left + r.width / 2,
                                                             clientY: r.top + 2}));""", rail)
    now = "return arguments[0].currentTime"
    WebDriverWait(driver, 10).until(lambda d: abs(d.execute_script(now, player) - 1.5) < 0.4)
    assert _errors(driver) == []


def test_image_instances_over_the_input_with_toggles_opacity_confidence_and_caveats(driver, url, tmp_path):
    png = tmp_path / "boxes.png"
    img = np.full((60, 90, 3), 40, np.uint8)
    img[10:30, 20:50] = 240
    img[40:55, 60:85] = 230
    Image.fromarray(img).save(png)
    _submit(driver, url, png, "vview", "bright boxes")
    WebDriverWait(driver, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#instances tbody tr")) == 2)
    assert driver.find_element(By.ID, "trust").text.startswith("confidence:")
    assert "bright <b>things</b>" in driver.find_element(By.ID, "caveats").text  # shown as text, not HTML
    canvas = WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "instances-canvas") if
                                             d.find_element(By.ID, "instances-canvas").is_displayed() else False)
    assert driver.find_element(By.ID, "input-preview").is_displayed()
    alpha = "return arguments[0].getContext('2d').getImageData(arguments[1], arguments[2], 1, 1).data[3]"
    # the RLE masks decoded in the browser land on the boxes, nowhere else
    assert driver.execute_script(alpha, canvas, 30, 20) > 0 and driver.execute_script(alpha, canvas, 70, 47) > 0
    assert driver.execute_script(alpha, canvas, 5, 5) == 0
    # untick the first instance: its pixels go, the other's stay
    rows = driver.find_elements(By.CSS_SELECTOR, "#instances tbody tr")
    first_box = [int(v) for v in rows[0].find_elements(By.TAG_NAME, "td")[5].text.split(", ")]
    rows[0].find_element(By.CSS_SELECTOR, "input[type=checkbox]").click()
    x, y = (first_box[0] + first_box[2]) // 2, (first_box[1] + first_box[3]) // 2
    assert driver.execute_script(alpha, canvas, x, y) == 0
    assert sum(driver.execute_script(alpha, canvas, px, py) > 0 for px, py in ((30, 20), (70, 47))) == 1
    slider = driver.find_element(By.ID, "opacity")
    driver.execute_script("arguments[0].value = 30; arguments[0].dispatchEvent(new Event('input'))", slider)
    assert float(canvas.value_of_css_property("opacity")) == pytest.approx(0.3)
    assert _errors(driver) == []


@pytest.mark.shared_data
def test_a_refused_dicom_is_one_clear_line_in_the_viewer(driver, url, tmp_path):
    """A real enhanced CT whose values are a perfusion map, not HU: the service refuses it (400) and the viewer
    says why in its status line (the slice browser itself is checked on a real series below)."""
    from rscore.testing import shared_data_dir

    root = shared_data_dir()
    path = root / "medical" / "dicom" / "pydicom-data_eCT_Supplemental.dcm" if root else None
    if path is None or not path.is_file():
        pytest.skip("shared data medical/dicom/pydicom-data_eCT_Supplemental.dcm not present")
    _submit(driver, url, path, "surgical", "body")
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, 60).until(lambda d: "error" in (status.get_attribute("class") or ""))
    assert "HU" in status.text and "values_are_hu" in status.text, status.text
    assert not driver.find_element(By.ID, "slice-row").is_displayed()
    logged = _errors(driver)  # the browser logs the 400 itself; nothing else
    assert all("400 (Bad Request)" in e for e in logged), logged


# ------------------------------------------------------------------------ DICOM series uploads and batch jobs
def _wait_caption(driver, words: str, timeout: float = 60) -> str:
    caption = driver.find_element(By.ID, "overlay-caption")
    WebDriverWait(driver, timeout).until(lambda d: words in caption.text or "error" in
                                         (d.find_element(By.ID, "status").get_attribute("class") or ""))  # fmt: skip
    assert words in caption.text, driver.find_element(By.ID, "status").text
    return caption.text


def _moving_block(slices: dict[str, bytes]) -> dict[str, bytes]:
    """The helper's three identical slices with the bone block moved 5 columns right per slice, so that slices
    can be told apart on screen."""
    import io

    import pydicom

    out = {}
    for k, (name, data) in enumerate(slices.items()):
        ds = pydicom.dcmread(io.BytesIO(data))
        img = np.full((32, 32), 1024, np.int16)
        img[8:20, 4 + 5 * k : 16 + 5 * k] = 2400
        ds.PixelData = img.tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out[name] = buf.getvalue()
    return out


def _bright_columns(png: bytes) -> float:
    """Mean column, as a share of the width, of the bright (bone-window white or tinted) pixels of a screenshot
    of the slice (its light 1 px frame cut off)."""
    import io

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)[2:-2, 2:-2]
    cols = np.nonzero(rgb.max(axis=2) > 150)[1]
    assert cols.size, "the slice shows nothing bright"
    return float(cols.mean()) / rgb.shape[1]


def _drawn_boxes(driver, picked: bool = False) -> dict[int, list[int]]:
    """The instance boxes the slice browser draws over the shown slice: ``{instance id: [x0, y0, x1, y1]}`` in the
    slice's pixels (only the highlighted one with ``picked``)."""
    return {int(k): v for k, v in driver.execute_script("""
        const out = {};
        for (const g of document.querySelectorAll('#slice-boxes' + (arguments[0] ? ' g.picked' : ' g'))) {
          if (document.getElementById('slice-boxes').hasAttribute('hidden')) break;
          const r = g.querySelector('rect'), a = (n) => Number(r.getAttribute(n));
          out[g.dataset.id] = [a('x'), a('y'), a('x') + a('width'), a('y') + a('height')];
        }
        return out;""", picked).items()}


def _blocks_on_slices(slices: dict[str, bytes], columns: list[tuple[int, int] | None]) -> dict[str, bytes]:
    """The helper's slices with a bone block in rows 8-20 at ``columns[k]`` on slice k (none where None)."""
    import io

    import pydicom

    out = {}
    for (name, data), cols in zip(slices.items(), columns):
        ds = pydicom.dcmread(io.BytesIO(data))
        img = np.full((32, 32), 1024, np.int16)
        if cols is not None:
            img[8:20, cols[0] : cols[1]] = 2400
        ds.PixelData = img.tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out[name] = buf.getvalue()
    return out


@pytest.mark.skipif(importlib.util.find_spec("rscore_surgical") is None, reason="needs the surgical plugin")
def test_dicom_series_as_a_zip_and_as_several_files_in_the_slice_browser(driver, url, tmp_path):
    from service_helpers import series_slices, zip_of

    slices = _moving_block(series_slices())
    archive = tmp_path / "ct.zip"
    archive.write_bytes(zip_of(slices))
    _submit(driver, url, archive, "surgical", "bone")
    caption = _wait_caption(driver, "of 3")
    assert "(1 of 3)" in caption  # one volume of three slices, first slice with bone shown
    assert "window bone" in caption  # the window preset the slices were drawn with
    slider = driver.find_element(By.ID, "slice")
    assert driver.find_element(By.ID, "slice-row").is_displayed() and slider.get_attribute("max") == "2"
    img = driver.find_element(By.ID, "overlay")
    first = img.get_attribute("data-slice")
    first_png = _bright_columns(img.screenshot_as_png)
    driver.execute_script("arguments[0].value = 2; arguments[0].dispatchEvent(new Event('input'))", slider)
    WebDriverWait(driver, 10).until(lambda d: img.get_attribute("data-slice") != first)
    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return arguments[0].complete", img))
    assert "(3 of 3)" in driver.find_element(By.ID, "overlay-caption").text
    # the screenshot changes with the slice: the bone block lies 10 columns further right on the third slice
    third_png = _bright_columns(img.screenshot_as_png)
    assert third_png - first_png == pytest.approx(10 / 32, abs=0.06)
    # the block is one 3-D component across the three slices, listed as the CLI lists it, and the slice browser
    # draws its box on each slice where the block is on that slice (5 columns further right per slice)
    assert [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#instances thead th")][3:7] == [
        "slices", "box on them (x0, y0, x1, y1)", "voxels", "volume"]
    row = driver.find_element(By.CSS_SELECTOR, "#instances tbody tr")
    cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
    assert cells[3:6] == ["0-2", "4, 8, 26, 20", "432"] and cells[6] == "0.691 mL"  # 432 x 0.8 x 0.8 x 2.5 mm3
    assert _drawn_boxes(driver) == {0: [14, 8, 26, 20]}
    driver.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider)
    WebDriverWait(driver, 10).until(lambda d: _drawn_boxes(d) == {0: [4, 8, 16, 20]})

    files = []
    for name, data in slices.items():  # the same series as three files chosen together
        files.append(tmp_path / (name.split("/")[-1] + ".dcm"))
        files[-1].write_bytes(data)
    _submit(driver, url, Path("\n".join(str(f) for f in files)), "surgical", "bone")
    WebDriverWait(driver, 60).until(lambda d: "done" in d.find_element(By.ID, "status").text
                                    or "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))
    assert "done" in driver.find_element(By.ID, "status").text, driver.find_element(By.ID, "status").text
    assert "of 3" in driver.find_element(By.ID, "overlay-caption").text
    assert _errors(driver) == []


@pytest.mark.skipif(importlib.util.find_spec("rscore_surgical") is None, reason="needs the surgical plugin")
def test_instances_on_one_slice_each_keep_their_slice_box_and_rows_show_their_slice(driver, url, tmp_path):
    """Two blocks on different slices of a three-slice series (none on the middle one): two components of one
    slice each, so the table keeps the 2-D columns ("slice K: box"); a row turns the browser to its slice and
    highlights its box there; the slice between them draws no box."""
    from service_helpers import series_slices, zip_of

    archive = tmp_path / "ct.zip"
    archive.write_bytes(zip_of(_blocks_on_slices(series_slices(), [(20, 30), None, (2, 12)])))
    _submit(driver, url, archive, "surgical", "bone")
    assert "(1 of 3)" in _wait_caption(driver, "of 3")
    rows = driver.find_elements(By.CSS_SELECTOR, "#instances tbody tr")
    boxes = sorted(tr.find_elements(By.TAG_NAME, "td")[5].text for tr in rows)
    assert boxes == ["slice 0: 20, 8, 30, 20", "slice 2: 2, 8, 12, 20"]
    assert list(_drawn_boxes(driver).values()) == [[20, 8, 30, 20]]  # the first slice's instance framed
    img = driver.find_element(By.ID, "overlay")
    row = next(tr for tr in rows if tr.find_elements(By.TAG_NAME, "td")[5].text.startswith("slice 2"))
    row.click()
    WebDriverWait(driver, 10).until(lambda d: img.get_attribute("data-slice") == "002")
    picked = int(row.get_attribute("data-id"))
    WebDriverWait(driver, 10).until(lambda d: _drawn_boxes(d, picked=True) == {picked: [2, 8, 12, 20]})
    assert "picked" in row.get_attribute("class")
    slider = driver.find_element(By.ID, "slice")
    driver.execute_script("arguments[0].value = 1; arguments[0].dispatchEvent(new Event('input'))", slider)
    WebDriverWait(driver, 10).until(lambda d: img.get_attribute("data-slice") == "001")
    WebDriverWait(driver, 10).until(lambda d: _drawn_boxes(d) == {})
    assert "is not on this slice" in driver.find_element(By.ID, "overlay-caption").text
    assert all("off-slice" in tr.get_attribute("class") for tr in rows)
    assert _errors(driver) == []


def test_hostile_zip_is_refused_in_the_page_naming_the_member(driver, url, tmp_path):
    from service_helpers import zip_of

    archive = tmp_path / "evil.zip"
    archive.write_bytes(zip_of({"../../outside.dcm": b"\0" * 128 + b"DICM" + b"\0" * 64}))
    _submit(driver, url, archive, "demo", "bright spots")
    status = driver.find_element(By.ID, "status")
    WebDriverWait(driver, 30).until(lambda d: "422" in status.text)
    assert "../../outside.dcm" in status.text and "'..'" in status.text and status.get_attribute("class") == "error"
    assert not list(tmp_path.rglob("outside.dcm"))
    assert all("422" in e for e in _errors(driver))  # the refused request, and nothing else


def test_batch_jobs_listed_with_links_to_their_results(driver, tmp_path, registry):
    import httpx

    data = tmp_path / "data"
    data.mkdir()
    img = np.zeros((60, 80, 3), np.uint8)
    img[10:30, 20:50] = 240
    Image.fromarray(img).save(data / "site1.png")
    Image.fromarray(np.zeros_like(img)).save(data / "site2.png")
    (data / "broken.png").write_bytes(b"not a picture")
    settings = Settings(output_root=tmp_path / "out", allowed_roots=(data,), workers=1, queue_size=2,
                        job_runner="inprocess")  # fmt: skip
    thread = ServerThread(create_app(settings, registry=registry))
    base = thread.start()
    try:
        job = httpx.post(f"{base}/v1/jobs", json={"inputs": ["site1.png", "site2.png", "broken.png"],
                                                  "query": "bright boxes", "plugin": "vview"}, timeout=30).json()
        driver.get(base + "/")
        table = driver.find_element(By.ID, "jobs")
        row_css = f"#jobs tr[data-job='{job['id']}']"
        WebDriverWait(driver, 30).until(  # the page polls while the job runs
            lambda d: d.find_elements(By.CSS_SELECTOR, row_css)
            and d.find_element(By.CSS_SELECTOR, row_css).get_attribute("data-state") == "partial")
        row = driver.find_element(By.CSS_SELECTOR, row_css)
        assert table.is_displayed() and "segment-batch" in row.text and "bright boxes (vview)" in row.text
        assert "3: 2 succeeded, 1 failed" in row.text
        row.find_element(By.TAG_NAME, "button").click()
        items = WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "tr.job-items li"))
        assert [li.get_attribute("data-state") for li in items] == ["succeeded", "succeeded", "failed"]
        assert "broken.png" in items[2].text and "not" in items[2].text.lower()
        items[0].find_element(By.TAG_NAME, "button").click()  # the first site's result, in the viewer above
        answer = driver.find_element(By.ID, "answer")
        WebDriverWait(driver, 20).until(lambda d: answer.is_displayed() and answer.get_attribute("data-absent") == "0")
        assert "1 instance(s)" in answer.text and "site1.png" in driver.find_element(By.ID, "status").text
        overlay = driver.find_element(By.ID, "overlay")
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", overlay))
        assert driver.execute_script("return arguments[0].naturalWidth", overlay) == 80
        assert _errors(driver) == []
    finally:
        thread.stop()


# ------------------------------------------------------------------------ real data (skipped when absent)
def _shared(relative: str) -> Path:
    from rscore.testing import shared_data_dir

    root = shared_data_dir()
    path = root / relative if root else None
    if path is None or not path.exists():
        pytest.skip(f"shared data {relative} not present")
    return path

def _real_ct(tmp_path: Path) -> tuple[Path, Path]:
    """dcmqi's three real CT slices as an upload (a zip) and as a folder for the in-process reference run."""
    import zipfile

    folder = _shared("medical/dicom/dcmqi_ct-3slice")
    archive, series = tmp_path / "ct.zip", tmp_path / "ct"
    series.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("01.dcm", "02.dcm", "03.dcm"):
            zf.write(folder / name, name)
            (series / name).write_bytes((folder / name).read_bytes())
    return archive, series


def _mask_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.mark.shared_data
@pytest.mark.skipif(importlib.util.find_spec("rscore_surgical") is None, reason="needs the surgical plugin")
def test_real_ct_3d_components_with_volumes_and_rows_that_show_their_box_on_each_slice(driver, url, tmp_path):
    """dcmqi's three real GE CT slices as a zip, "bone": the table lists 3-D components as the CLI does (slices, the
    box on them on the 512 px slices, voxels, mL, centroid), checked against the same series segmented here and
    its masks; a row turns the slice browser to the slice where its component is largest and highlights its box;
    browsing to another slice moves the highlight to the component's box on that slice - each box the mask's own."""
    import re

    from rscore import engine
    from rscore.units import figure

    archive, series = _real_ct(tmp_path)
    _submit(driver, url, archive, "surgical", "bone")
    assert "(1 of 3)" in _wait_caption(driver, "of 3")
    res = engine.segment(engine.open_scene(series, plugin="surgical"), "bone", plugin="surgical")
    masks = [np.asarray(i.mask, bool).reshape(3, 512, 512) for i in res.instances]
    rows = driver.find_elements(By.CSS_SELECTOR, "#instances tbody tr")
    cells = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in rows]
    assert len(cells) == len(masks) > 1
    for row, inst, vol in zip(cells, res.instances, masks):
        on = [k for k in range(3) if vol[k].any()]
        assert row[3] == (f"{on[0]}-{on[-1]}" if len(on) > 1 else str(on[0]))
        assert row[4] == ", ".join(str(v) for v in _mask_box(vol.any(axis=0)))  # on the 512 px slices
        assert row[5] == f"{int(vol.sum()):,}" and row[6] == f"{figure(inst.attributes['volume_ml'])} mL"
        assert re.fullmatch(r"-?\d+\.\d, -?\d+\.\d, -?\d+\.\d", row[7]), row
    per_class = driver.find_element(By.ID, "classes").text
    assert "trabecular bone" in per_class and "cortical bone" in per_class and per_class.count(" mL") == 2
    # on the first slice every component there is framed (none highlighted)
    assert _drawn_boxes(driver) == {i: _mask_box(v[0]) for i, v in enumerate(masks) if v[0].any()}
    stack = driver.find_element(By.ID, "stack")
    assert _highlight(stack.screenshot_as_png).sum() == 0  # nothing highlighted yet
    # a component whose largest slice is the last, whose box differs from slice to slice
    n = next(n for n, v in enumerate(masks) if int(np.argmax(v.sum(axis=(1, 2)))) == 2 and v[0].any()
             and _mask_box(v[0]) != _mask_box(v[2]))  # fmt: skip
    img = driver.find_element(By.ID, "overlay")
    rows[n].click()
    WebDriverWait(driver, 10).until(lambda d: "(3 of 3)" in d.find_element(By.ID, "overlay-caption").text)
    assert img.get_attribute("data-slice") == "002"
    assert driver.find_element(By.ID, "slice").get_attribute("value") == "2"
    WebDriverWait(driver, 10).until(lambda d: _drawn_boxes(d, picked=True) == {n: _mask_box(masks[n][2])})
    assert _drawn_boxes(driver) == {i: _mask_box(v[2]) for i, v in enumerate(masks) if v[2].any()}
    # drawn on screen: the highlight runs along the box's edges (the slice is shown 1:1)
    x0, y0, x1, y1 = _mask_box(masks[n][2])
    shot = _highlight(stack.screenshot_as_png)[1:-1, 1:-1]  # the slice inside its 1 px border
    assert shot.shape == (512, 512)
    edges = np.concatenate([shot[y0 - 1 : y0 + 2, x0:x1].any(0), shot[y1 - 2 : y1 + 1, x0:x1].any(0),
                            shot[y0:y1, x0 - 1 : x0 + 2].any(1), shot[y0:y1, x1 - 2 : x1 + 1].any(1)])  # fmt: skip
    assert edges.mean() > 0.9
    inside = shot[y0 + 3 : y1 - 3, x0 + 3 : x1 - 3]
    assert inside.mean() < 0.02  # a frame, not a filled box (the label "#n" sits above it)
    slider = driver.find_element(By.ID, "slice")
    driver.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider)
    WebDriverWait(driver, 10).until(lambda d: _drawn_boxes(d, picked=True) == {n: _mask_box(masks[n][0])})
    assert _errors(driver) == []


def _highlight(png: bytes) -> np.ndarray:
    """Pixels of a screenshot in the viewer's highlight colour (#ffd400; the segments are tinted red and blue)."""
    import io

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return (rgb[..., 0] > 200) & (rgb[..., 1] > 170) & (rgb[..., 2] < 90)


@pytest.mark.shared_data
@pytest.mark.skipif(importlib.util.find_spec("rscore_safety") is None, reason="needs the safety plugin")
def test_real_clip_plays_in_the_player_with_its_events_on_a_timeline(driver, url, tmp_path):
    """Intel's worker clip (H.264, 480x270, 71 frames at 15 fps): the overlay plays in Chromium at the source's size
    and length, shows another picture 3 s in, and each track is a bar on the timeline where the list says."""
    clip = _shared("construction/intel_worker-zone-detection_from_gif.mp4")
    _submit(driver, url, clip, "safety", "workers in hi-vis vests")
    player = WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "player") if
                                              d.find_element(By.ID, "player").is_displayed() else False)  # fmt: skip
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return arguments[0].readyState", player) >= 2)
    assert driver.execute_script("return [arguments[0].videoWidth, arguments[0].videoHeight]", player) == [480, 270]
    assert driver.execute_script("return arguments[0].duration", player) == pytest.approx(71 / 15, abs=0.07)
    grab = """const v = arguments[0], c = document.createElement('canvas');
        c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 16 === 0));"""
    first = np.asarray(driver.execute_script(grab, player), float)
    driver.execute_script("""const v = arguments[0]; v.dataset.seeked = "0";
        v.addEventListener('seeked', () => { v.dataset.seeked = "1"; }, {once: true}); v.currentTime = 3.0;""", player)
    WebDriverWait(driver, 10).until(lambda d: player.get_attribute("data-seeked") == "1")
    later = np.asarray(driver.execute_script(grab, player), float)
    assert first.std() > 10 and np.abs(later - first).mean() > 2  # a picture, and a different one later
    items = driver.find_elements(By.CSS_SELECTOR, "#events button")
    bars = driver.find_elements(By.CSS_SELECTOR, "#timeline .bar")
    rail = driver.find_element(By.CSS_SELECTOR, "#timeline .rail").rect
    assert items and len(bars) == len(items)
    from rscore.video.writers import track_colour

    for item, bar in zip(items, bars):  # "#1 hi-vis clothing: 0–4.67 s" <-> the bar's place on the rail
        # in the colour the overlay video tints the track with
        assert bar.value_of_css_property("background-color") == "rgba({}, {}, {}, 1)".format(
            *track_colour(int(bar.get_attribute("data-track"))))
        start, end = (float(v) for v in item.text.rsplit(": ", 1)[1].rstrip(" s").split("–"))
        left = (bar.rect["x"] - rail["x"]) / rail["width"] * 71 / 15
        assert left == pytest.approx(start, abs=0.1), item.text
        assert bar.rect["width"] / rail["width"] * 71 / 15 == pytest.approx(max(end - start, 0.01), abs=0.1)
    assert _errors(driver) == []


@pytest.mark.skipif(importlib.util.find_spec("rscore_surgical") is None, reason="needs the surgical plugin")
def test_any_plugin_answer_comes_with_the_answering_plugins_files(driver, url, tmp_path):
    """A DICOM series sent with "any plugin": a surgical template answers, and the surgical plugin is then the plugin
    in use (``rscore.engine.pipeline.route_plugin``, h8h): the slice browser shows the series at once, and the hint
    with its "run again" button (left for a model reasoner's pick, which is not re-asked to route) stays hidden."""
    from service_helpers import series_slices, zip_of

    archive = tmp_path / "ct.zip"
    archive.write_bytes(zip_of(_moving_block(series_slices())))
    _submit(driver, url, archive, "", "bone")
    assert "(1 of 3)" in _wait_caption(driver, "of 3")
    assert not driver.find_element(By.ID, "plugin-hint").is_displayed()
    assert _errors(driver) == []


# ------------------------------------------------------------ DICOM: plain slices, instances drawn in the browser
def _shot(element) -> np.ndarray:
    """An element's screenshot as (rows, cols, 3) int, its 1 px frame cut off (the slice's own pixels)."""
    import io

    return np.asarray(Image.open(io.BytesIO(element.screenshot_as_png)).convert("RGB")).astype(int)[1:-1, 1:-1]


def _tinted(rgb: np.ndarray) -> np.ndarray:
    """Pixels drawn in an instance colour (the plain slice is grey: R = G = B)."""
    return rgb.max(axis=2) - rgb.min(axis=2) > 20


def _set_opacity(driver, percent: int) -> None:
    driver.execute_script("const s = document.getElementById('opacity'); s.value = arguments[0];"
                          "s.dispatchEvent(new Event('input'))", percent)


def _untick(driver, instance_id: int) -> None:
    box = driver.find_element(By.CSS_SELECTOR, f"#instances tbody tr[data-id='{instance_id}'] input[type=checkbox]")
    box.click()
    assert not box.is_selected()


def _plain_expected(series: Path, caption: str, k: int) -> np.ndarray:
    """Slice k of the series as the slice PNG writer draws it without segments, in the caption's window."""
    import re

    from rscore import engine
    from rscore_surgical.windowing import DisplayWindow
    from rscore_surgical.writers import slice_picture

    found = re.search(r"centre ([-\d.,]+), width ([-\d.,]+)", caption)
    centre, width = (float(v.replace(",", "")) for v in found.groups())
    win = DisplayWindow("shown", centre, width, "the viewer's caption", "test")
    return slice_picture(engine.open_scene(series, plugin="surgical"), k, win).astype(int)


@pytest.mark.skipif(importlib.util.find_spec("rscore_surgical") is None, reason="needs the surgical plugin")
def test_dicom_slices_plain_with_instances_drawn_opacity_and_per_instance_toggles(driver, url, tmp_path):
    """Two bone blocks on the first slice of a three-slice series: two instances. The slice browser shows the plain
    windowed slice (view/slice/{k}: no segments burnt in) and draws each instance over it in its colour; at opacity
    0 the screen shows exactly the plain slice (the slice PNG writer's picture without segments); unticking
    instance #0 removes its colour from its box while #1 keeps its own; the opacity slider fades them."""
    import io

    import pydicom
    from service_helpers import series_slices, zip_of

    slices = {}
    for k, (name, data) in enumerate(series_slices().items()):
        ds = pydicom.dcmread(io.BytesIO(data))
        img = np.full((32, 32), 1024, np.int16)
        if k == 0:
            img[8:20, 2:12] = 2400
            img[8:20, 20:30] = 1800  # a second block, dimmer (not white in the bone window)
        ds.PixelData = img.tobytes()
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        slices[name] = buf.getvalue()
    series = tmp_path / "series"
    series.mkdir()
    for name, data in slices.items():
        (series / (name.split("/")[-1] + ".dcm")).write_bytes(data)
    archive = tmp_path / "ct.zip"
    archive.write_bytes(zip_of(slices))
    _submit(driver, url, archive, "surgical", "bone")
    caption = _wait_caption(driver, "each instance in its colour")
    assert "(1 of 3)" in caption and "window bone" in caption
    boxes = _drawn_boxes(driver)
    assert sorted(boxes.values()) == [[2, 8, 12, 20], [20, 8, 30, 20]]
    driver.execute_script("document.getElementById('slice-boxes').setAttribute('hidden', '')")  # the frames aside
    img = driver.find_element(By.ID, "overlay")
    plain = _plain_expected(series, caption, 0)
    shot = _shot(img)
    assert shot.shape == plain.shape
    for i, (x0, y0, x1, y1) in boxes.items():  # each instance tinted over its block, the rest of the slice plain
        assert _tinted(shot[y0:y1, x0:x1]).all(), i
    outside = np.ones(shot.shape[:2], bool)
    for x0, y0, x1, y1 in boxes.values():
        outside[y0:y1, x0:x1] = False
    assert np.abs(shot - plain)[outside].max() <= 1
    _set_opacity(driver, 0)
    assert np.abs(_shot(img) - plain).max() <= 1  # the plain slice, exactly
    _set_opacity(driver, 100)
    _untick(driver, 0)
    shot = _shot(img)
    (a0, b0, a1, b1), (c0, d0, c1, d1) = boxes[0], boxes[1]
    assert not _tinted(shot[b0:b1, a0:a1]).any() and np.abs(shot - plain)[b0:b1, a0:a1].max() <= 1
    assert _tinted(shot[d0:d1, c0:c1]).all()  # #1 stays in its colour
    assert not _tinted(shot)[outside].any()
    assert _errors(driver) == []


@pytest.mark.shared_data
@pytest.mark.skipif(importlib.util.find_spec("rscore_surgical") is None, reason="needs the surgical plugin")
def test_real_ct_plain_slice_under_toggled_instances(driver, url, tmp_path):
    """dcmqi's three real GE CT slices, "bone": at opacity 0 the 512 px slice on screen equals the slice PNG
    writer's windowed picture of the series (no segments); unticking instance #0 leaves its pixels plain while
    instance #1's stay in its colour; browsing to the last slice draws that slice's part of each instance."""
    from rscore import engine

    archive, series = _real_ct(tmp_path)
    _submit(driver, url, archive, "surgical", "bone")
    caption = _wait_caption(driver, "each instance in its colour")
    assert "(1 of 3)" in caption
    res = engine.segment(engine.open_scene(series, plugin="surgical"), "bone", plugin="surgical")
    masks = [np.asarray(i.mask, bool).reshape(3, 512, 512) for i in res.instances]
    assert masks[0][0].any() and masks[1][0].any()
    driver.execute_script("document.getElementById('slice-boxes').setAttribute('hidden', '')")
    img = driver.find_element(By.ID, "overlay")
    plain = _plain_expected(series, caption, 0)
    shot = _shot(img)
    assert shot.shape == plain.shape == (512, 512, 3)
    union = np.any([m[0] for m in masks], axis=0)
    assert _tinted(shot)[union].mean() > 0.97  # every instance drawn (a bone pixel near white may stay pale)
    assert np.abs(shot - plain)[~union].max() <= 1
    _set_opacity(driver, 0)
    assert np.abs(_shot(img) - plain).max() <= 1
    _set_opacity(driver, 100)
    _untick(driver, 0)
    shot = _shot(img)
    assert np.abs(shot - plain)[masks[0][0]].max() <= 1  # #0 gone: its pixels plain
    assert _tinted(shot)[masks[1][0]].mean() > 0.97  # #1 still in its colour
    slider = driver.find_element(By.ID, "slice")
    driver.execute_script("arguments[0].value = 2; arguments[0].dispatchEvent(new Event('input'))", slider)
    WebDriverWait(driver, 10).until(lambda d: img.get_attribute("data-slice") == "002")
    WebDriverWait(driver, 10).until(lambda d: "(3 of 3)" in d.find_element(By.ID, "overlay-caption").text)
    driver.execute_script("document.getElementById('slice-boxes').setAttribute('hidden', '')")
    shot, plain = _shot(img), _plain_expected(series, caption, 2)
    shown = np.any([m[2] for m in masks[1:]], axis=0)  # #0 stays unticked
    assert _tinted(shot)[shown].mean() > 0.97 and np.abs(shot - plain)[~shown].max() <= 1
    assert _errors(driver) == []


@pytest.mark.skipif(importlib.util.find_spec("rscore_surgical") is None, reason="needs the surgical plugin")
def test_plain_slice_route_answers_png_for_a_series_and_404_otherwise(url, tmp_path):
    """view/slice/{k} over HTTP: a greyscale PNG of the slice's size for each slice of a series result; 404 with a
    one-line reason past the last slice and for a result without an image volume (a plain picture)."""
    import io

    import httpx
    from service_helpers import series_slices, zip_of

    with httpx.Client(base_url=url, timeout=60) as client:
        archive = zip_of(_moving_block(series_slices()))
        r = client.post("/v1/segment", files={"file": ("ct.zip", archive, "application/zip")},
                        data={"query": "bone", "plugin": "surgical"})  # fmt: skip
        assert r.status_code == 200, r.text
        rid = r.json()["id"]
        for k in range(3):
            s = client.get(f"/v1/results/{rid}/view/slice/{k}")
            assert s.status_code == 200 and s.headers["content-type"] == "image/png"
            grey = np.asarray(Image.open(io.BytesIO(s.content)))
            assert grey.shape == (32, 32)  # one slice, greyscale
            cols = np.nonzero(grey[8:20].max(axis=0) > 200)[0]
            assert (cols.min(), cols.max()) == (4 + 5 * k, 15 + 5 * k)  # the block, moved 5 columns per slice
        past = client.get(f"/v1/results/{rid}/view/slice/3")
        assert past.status_code == 404 and "no slice 3" in past.json()["error"]
        picture = io.BytesIO()
        Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(picture, format="PNG")
        r = client.post("/v1/segment", files={"file": ("p.png", picture.getvalue(), "image/png")},
                        data={"query": "bright spots", "plugin": "demo"})  # fmt: skip
        assert r.status_code == 200, r.text
        none = client.get(f"/v1/results/{r.json()['id']}/view/slice/0")
        assert none.status_code == 404 and "image.nii.gz" in none.json()["error"]


def _two_boxes(path: Path) -> Path:
    """30 frames at 10 fps, 160x96: a bright box moving 3 px a frame (rows 10-30) and a still one (rows 60-80)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=Fraction(10))
        s.width, s.height, s.pix_fmt = 160, 96, "yuvj420p"
        for i in range(30):
            img = np.full((96, 160, 3), 60, np.uint8)
            img[10:30, 8 + 3 * i : 30 + 3 * i] = 235
            img[60:80, 120:150] = 235
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_input_video_option_writes_the_overlays_frames_plain(url, tmp_path):
    """``-O input_video=true``: input.mp4 beside overlay.mp4, the same number of frames and size, the frames
    without the overlay (grey like the source, where the overlay tints the boxes); without it no input.mp4."""
    import io
    import json

    import av
    import httpx

    clip = _two_boxes(tmp_path / "two.avi").read_bytes()

    def frames(client, link) -> list[np.ndarray]:
        with av.open(io.BytesIO(client.get(link).content)) as c:
            return [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]

    with httpx.Client(base_url=url, timeout=120) as client:
        for asked in (True, False):
            data = {"query": "bright boxes", "plugin": "vview"}
            if asked:
                data["options"] = json.dumps({"input_video": True})
            r = client.post("/v1/segment", files={"file": ("two.avi", clip, "video/x-msvideo")}, data=data)
            assert r.status_code == 200, r.text
            links = r.json()["links"]
            assert ("input_video" in links) is asked and "overlay_video" in links
            if asked:
                plain, overlay = frames(client, links["input_video"]), frames(client, links["overlay_video"])
                assert len(plain) == len(overlay) == 30 and plain[0].shape == overlay[0].shape == (96, 160, 3)
                assert not any(_tinted(f).any() for f in plain) and all(_tinted(f).sum() > 300 for f in overlay)
                assert np.abs(plain[0][62:78, 122:148] - 235).max() <= 8  # the still box, as in the source


def test_video_tracks_drawn_over_the_plain_input_with_per_track_toggles_and_opacity(driver, url, tmp_path):
    """A clip with two bright boxes (one moving 3 px a frame, one still): the form asks for input.mp4 (option
    input_video), the player plays it - the input without the overlay - and the viewer draws each frame's masks
    (masks.json) on a canvas over it in the track's colour, in step with the frame shown (a seek to 2 s draws frame
    20, where the moving box is 60 px further right); unticking instance #0 removes its track's colour while the
    other track keeps its own; at opacity 0 the screen shows the player alone."""
    from rscore.video.writers import track_colour

    clip = _two_boxes(tmp_path / "two.avi")
    _submit(driver, url, clip, "vview", "bright boxes")
    _wait_caption(driver, "each track in its colour")
    player = driver.find_element(By.ID, "player")
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return arguments[0].readyState", player) >= 2)
    downloads = [b.get_attribute("data-name") for b in driver.find_elements(By.CSS_SELECTOR, "#downloads button")]
    assert "input_video" in downloads and "overlay_video" in downloads
    grab = """const v = arguments[0], c = document.createElement('canvas');
        c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data);"""
    frame = np.asarray(driver.execute_script(grab, player), int).reshape(96, 160, 4)[..., :3]
    assert frame.max() > 200 and not _tinted(frame).any()  # the input itself: no track tinted in
    layer = """const c = document.getElementById('video-canvas');
        return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data);"""

    def drawn() -> np.ndarray:
        return np.asarray(driver.execute_script(layer), int).reshape(96, 160, 4)

    WebDriverWait(driver, 10).until(lambda d: drawn()[..., 3].any())
    canvas = driver.find_element(By.ID, "video-canvas")
    assert canvas.get_attribute("data-frame") == "0"
    first = drawn()
    moving, still = first[12:28, 10:28], first[62:78, 122:148]
    assert (moving[..., 3] > 0).all() and (still[..., 3] > 0).all()
    # each in its track's colour, the overlay video's (a canvas keeps colours at alpha 150 to +-2, premultiplied)
    near = [min((1, 2), key=lambda t: np.abs(region[0, 0, :3] - track_colour(t)).max()) for region in (moving, still)]
    assert sorted(near) == [1, 2]
    for region, t in zip((moving, still), near):
        assert np.abs(region[..., :3] - np.asarray(track_colour(t))).max() <= 2
    # in step with the picture: a seek to 2.0 s draws frame 20, the moving box 60 px further right
    driver.execute_script("arguments[0].currentTime = 2.0", player)
    WebDriverWait(driver, 10).until(lambda d: canvas.get_attribute("data-frame") == "20")
    later = drawn()
    cols = np.nonzero((later[10:30, :100, 3] > 0).any(axis=0))[0]
    assert (cols.min(), cols.max()) == (68, 89)
    # instance #0 unticked: its track's colour is gone, the other track stays
    _untick(driver, 0)
    WebDriverWait(driver, 10).until(lambda d: (drawn()[..., 3] > 0).sum() < (later[..., 3] > 0).sum())
    after = drawn()
    kept = [(region, after[region][..., 3].any()) for region in (np.s_[10:30, :100], np.s_[60:80, 110:160])]
    assert sorted(k for _, k in kept) == [False, True]
    for region, on in kept:
        if on:
            assert (after[region] == later[region]).all()
    # opacity 0: what the screen shows is the player alone
    stack = driver.find_element(By.ID, "video-stack")
    driver.execute_script("arguments[0].controls = false", player)  # they fade in and out between screenshots
    _set_opacity(driver, 0)
    at_zero = _shot(stack)
    _set_opacity(driver, 100)
    with_tracks = _shot(stack)
    driver.execute_script("document.getElementById('video-canvas').hidden = true")
    alone = _shot(stack)
    assert np.abs(at_zero - alone).max() <= 1 and _tinted(with_tracks).sum() > 300 and not _tinted(alone).any()
    assert _errors(driver) == []
