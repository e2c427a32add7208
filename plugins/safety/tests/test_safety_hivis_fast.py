"""The hi-vis program's fast paths give exactly what the straightforward code gave (issue 22: the hi-vis program was
most of the video tracking thread). Each reference below is the code as it was before the fast path."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from rscore.sdk import OpContext
from rscore.types import ArraySource, Request, Scene, Window

from rscore_safety import hivis, worn
from rscore_safety.hivis import HiVisOptions


def _classes_reference(rgb: np.ndarray, bands) -> np.ndarray:
    import cv2

    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hue = hsv[..., 0] * (360.0 / 256.0)
    sat, val = hsv[..., 1] / 255.0, hsv[..., 2] / 255.0
    out = np.zeros(rgb.shape[:2], np.uint8)
    for band in bands:
        hit = band.contains(hue) & (sat >= band.min_saturation) & (val >= band.min_value) & (out == 0)
        out[hit] = hivis.COLOUR_CLASS[band.colour]
    return out


@pytest.mark.parametrize("options", [
    {},
    {"hivis_colours": "yellow,orange,red"},
    {"hivis_colours": "red,orange"},  # order decides which band a shared pixel belongs to
    {"hivis_hue_margin_deg": "20", "hivis_min_value": "0.3", "hivis_min_saturation": "0.2"},
    {"hivis_colours": "orange", "hivis_hue_margin_deg": "0"},
])
def test_lookup_table_classes_equal_the_float_rule(options):
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (300, 401, 3), dtype=np.uint8)  # 120k random colours, odd width
    rgb[:2, :2] = [[255, 255, 255], [0, 0, 0]]
    bands = HiVisOptions.parse(options).bands()
    fast = hivis.hivis_classes(rgb, bands)
    assert np.array_equal(fast, _classes_reference(rgb, bands))
    assert fast.any()


def test_lookup_table_classes_of_every_colour():
    # all 2^24 RGB colours, one red level at a time
    bands = HiVisOptions.parse({"hivis_colours": "yellow,orange,red"}).bands()
    r = np.arange(256, dtype=np.uint8)
    for red in range(256):
        g, b = np.meshgrid(r, r, indexing="ij")
        rgb = np.stack([np.full_like(g, red), g, b], axis=-1)
        assert np.array_equal(hivis.hivis_classes(rgb, bands), _classes_reference(rgb, bands)), red


def test_empty_and_tiny_images():
    bands = HiVisOptions().bands()
    assert hivis.hivis_classes(np.zeros((0, 5, 3), np.uint8), bands).shape == (0, 5)
    one = np.array([[[200, 255, 40]]], np.uint8)
    assert hivis.hivis_classes(one, bands).tolist() == [[1]]


@pytest.mark.parametrize("n", [2, 3, 10, 11, 4096, 4097, 442368])
def test_median_is_numpys(n):
    rng = np.random.default_rng(n)
    for dtype in (np.float32, np.float64):
        x = (rng.normal(size=n) * 17).astype(dtype)
        for values in (x, np.round(x), np.abs(x)):  # ties and a one-sided spread
            got, want = worn.median(values), np.median(values)
            assert got == want and got.dtype == want.dtype


def _fill_reference(classes: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = classes.copy()
    gaps = mask & (out == 0)
    if gaps.any():
        iy, ix = ndimage.distance_transform_edt(out == 0, return_distances=False, return_indices=True)
        out[gaps] = out[iy[gaps], ix[gaps]]
    return out


def test_gap_fill_on_a_box_equals_the_whole_image_transform():
    import cv2

    rng = np.random.default_rng(3)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    for trial in range(40):
        h, w = rng.integers(20, 160, 2)
        raw = np.zeros((h, w), np.uint8)
        for _ in range(rng.integers(1, 6)):  # striped vests of two classes, touching each other sometimes
            y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
            raw[y:y + rng.integers(4, 40), x:x + rng.integers(4, 30)] = rng.integers(1, 3)
        raw[rng.random((h, w)) < 0.25] = 0  # speckle and stripes
        raw[:, rng.integers(0, w):][:, ::3] = 0
        found = cv2.morphologyEx((raw > 0).astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        mask = cv2.morphologyEx(found, cv2.MORPH_CLOSE, kernel).astype(bool)
        assert np.array_equal(hivis.fill_gaps(raw, mask), _fill_reference(raw, mask)), trial


def _red_reference(rgb, labels, n, classes):
    import cv2

    out = np.zeros(n, bool)
    start, _ = hivis.corner_arc("orange")
    hue = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV_FULL)[..., 0].astype(np.float32) * (360.0 / 256.0)
    for k in range(1, n):
        sel = (labels == k) & (classes == hivis.COLOUR_CLASS["orange"])
        if not sel.any():
            continue
        h = hue[sel]
        h = np.where(h > 180.0, h - 360.0, h)
        out[k] = float(np.median(h)) < start
    return out


def test_red_guard_per_component_box_equals_the_whole_image_rule():
    import cv2

    rng = np.random.default_rng(5)
    rgb = np.full((120, 160, 3), 90, np.uint8)
    for _ in range(12):  # orange, red and yellow patches
        y, x = rng.integers(0, 110), rng.integers(0, 150)
        rgb[y:y + rng.integers(3, 20), x:x + rng.integers(3, 20)] = rng.choice(
            [(255, 100, 20), (230, 20, 25), (200, 255, 40), (255, 40, 60)])
    classes = hivis.hivis_classes(rgb, HiVisOptions.parse({"hivis_hue_margin_deg": "12"}).bands())
    n, labels, _, _ = cv2.connectedComponentsWithStats((classes > 0).astype(np.uint8), connectivity=8)
    got = hivis.red_side_components(rgb, labels, n, classes)
    assert np.array_equal(got, _red_reference(rgb, labels, n, classes))
    assert got.any() and not got.all()


def _ctx(array: np.ndarray, valid=None, window=None) -> OpContext:
    scene = Scene(source=ArraySource(array, valid), kind="image", band_roles=("red", "green", "blue"))
    return OpContext(scene, Request(query="hi-vis"), {}, window=window)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_rgb8_once_per_view_and_as_before(dtype):
    rng = np.random.default_rng(1)
    hi = 255 if dtype == np.uint8 else (65535 if dtype == np.uint16 else 1)
    chw = (rng.random((3, 40, 50)) * hi).astype(dtype)
    valid = rng.random((40, 50)) > 0.1
    window = Window(5, 7, 30, 40)
    ctx = _ctx(chw, valid, window)
    got = hivis.rgb8(ctx)
    assert hivis.rgb8(ctx) is got and not got.flags.writeable  # one array per view, shared read-only
    # the reference: float bands with NaN where invalid, scaled by the type's range
    bands = chw[:, 5:35, 7:47].astype(np.float32)
    bands[:, ~valid[5:35, 7:47]] = np.nan
    rgb = np.moveaxis(bands, 0, -1)
    if dtype == np.uint8:
        rgb = np.where(np.isnan(rgb), 0, rgb).astype(np.uint8)
    else:
        scale = 255.0 / 65535 if dtype == np.uint16 else 255.0
        rgb = np.clip(np.nan_to_num(rgb * scale), 0, 255).astype(np.uint8)
    assert np.array_equal(got, rgb)
    assert hivis.rgb8(_ctx(chw, valid, window)) is not got  # another view: its own


def test_moving_foreground_with_a_blurred_background_is_the_same():
    rng = np.random.default_rng(2)
    bg = np.clip(rng.normal(120, 25, (90, 120, 3)), 0, 255).astype(np.float32)
    frame = np.clip(bg + rng.normal(3, 2, bg.shape), 0, 255).astype(np.uint8)
    frame[20:70, 40:60] = (40, 200, 90)  # someone walked in
    once = worn.blurred(bg)
    assert worn.blurred(bg) is once
    fast = worn.moving_foreground(frame, once, blurred_background=True)
    assert np.array_equal(fast, worn.moving_foreground(frame, bg))
    assert fast[30:60, 45:55].all() and fast.mean() < 0.2


@pytest.mark.parametrize("count", [5, 6, 25, 48])
def test_median_frames_is_numpys(count):
    rng = np.random.default_rng(count)
    frames = [rng.integers(0, 256, (37, 53, 3), dtype=np.uint8) for _ in range(count)]
    frames[1][:5] = frames[2][:5]  # ties
    want = np.median(np.stack(frames), axis=0).astype(np.float32)
    got = worn.median_frames(frames)
    assert got.dtype == np.float32 and np.array_equal(got, want)
