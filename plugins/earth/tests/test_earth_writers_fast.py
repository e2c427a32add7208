"""The writers' faster paths give the same bits as the code they replaced (issue 22: writing's share of a run).

Each reference below is the replaced implementation, kept here verbatim in substance, so a change that alters an
output (not only its speed) fails."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from rscore_earth.mapplot import _block_max, _block_mean, tint


def _old_block_reduce(data: np.ndarray, f: int, fn) -> np.ndarray:
    """map.png's decimation before: NaN-padded copy, ``np.nanmean`` / ``np.nanmax`` over the block axes."""
    if f == 1:
        return data
    b, h, w = data.shape
    ph, pw = math.ceil(h / f) * f, math.ceil(w / f) * f
    padded = np.full((b, ph, pw), np.nan, np.float32)
    padded[:, :h, :w] = data
    blocks = padded.reshape(b, ph // f, f, pw // f, f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if fn is np.max:
            return np.nan_to_num(np.nanmax(blocks, axis=(2, 4)), nan=0.0)
        return fn(blocks, axis=(2, 4))


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("f", [1, 2, 3, 5, 8, 9])
def test_block_mean_is_bit_identical_to_nanmean(f, compiled, monkeypatch):
    from rscore_earth import mapplot, polygons

    if compiled and mapplot._block_mean_kernel is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(polygons, "COMPILED_MIN_PX", 0 if compiled else 2**62)
    if not compiled:
        monkeypatch.setattr(polygons, "AVAILABLE", False)
    rng = np.random.default_rng(f)
    data = (rng.random((2, 301, 257)) * 4000 - 500).astype(np.float32)
    data[rng.random(data.shape) < 0.15] = np.nan
    data[:, :40, :30] = np.nan  # whole blocks of nodata stay NaN
    new, old = _block_mean(data, f), _old_block_reduce(data, f, np.nanmean)
    assert new.dtype == np.float32 and new.shape == old.shape
    assert np.array_equal(new, old, equal_nan=True)
    assert np.isnan(new[:, 0, 0]).all()


@pytest.mark.parametrize("f", [1, 2, 3, 4, 7])
def test_block_max_equals_the_float_nanmax(f):
    rng = np.random.default_rng(10 + f)
    values = rng.choice(np.array([0, 0, 0, 1, 2, 3], np.uint8), size=(203, 150))
    old = _old_block_reduce(values[None].astype(np.float32), f, np.max)[0].astype(np.uint8)
    new = _block_max(values, f)
    assert new.dtype == np.uint8 and np.array_equal(new, old)


def test_tint_equals_the_float32_blend():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    overlay = rng.integers(0, 5, size=(64, 80)).astype(np.uint8)  # class 4 > palette: the last colour
    palette = [(255, 235, 59), (255, 152, 0), (211, 47, 47)]
    rgb = base.astype(np.float32)
    for k in range(1, 5):
        sel = overlay == k
        colour = np.asarray(palette[min(k, len(palette)) - 1], np.float32)
        rgb[sel] = 0.45 * rgb[sel] + 0.55 * colour
    assert np.array_equal(tint(base, overlay, palette), np.clip(rgb, 0, 255).astype(np.uint8))
    assert np.array_equal(tint(base, np.zeros_like(overlay), palette), base)
    # a grey base given as (h, w) (the hillshade): the same as its three-channel copy
    grey = base[..., 1]
    grey3 = np.repeat(grey[..., None], 3, axis=2)
    assert np.array_equal(tint(grey, overlay, palette), tint(grey3, overlay, palette))
    assert np.array_equal(tint(grey, np.zeros_like(overlay), palette), grey3)


def test_geojson_property_texts_are_what_json_dumps_writes():
    """The streamed GeoJSON encodes properties column by column; each value's text is json.dumps's (NaN/inf as
    null, non-ASCII kept, ints and floats by their repr)."""
    import json

    from rscore_earth.writers import _json_texts

    columns = [
        np.array(["medium", "high", "medium", "hoch ü \"q\""], dtype=object),
        np.array([2, 3, 2, -1], np.int32),
        np.array([0.1, np.nan, 1e-20, 2 / 3]),
        np.array([np.inf, 3.0, 12345678.123456789, -0.0]),
        np.array([4, 2**40, 0, 7], np.int64),
    ]
    for col in columns:
        want = [json.dumps(None if isinstance(v, float) and not math.isfinite(v) else v, ensure_ascii=False,
                           allow_nan=False) for v in col.tolist()]  # fmt: skip
        assert _json_texts(col) == want


@pytest.mark.parametrize("row_filter", ["up", "sub"])
@pytest.mark.parametrize("shape", [(37, 53, 3), (64, 31), (1, 1, 3), (1, 5), (300, 2, 3)])
def test_png_writer_keeps_every_pixel(tmp_path, shape, row_filter):
    """map.png / basemap.png (ISA-L deflate, numpy row filter): what Pillow, OpenCV (libpng) and GDAL read back is
    the array, channels in RGB order; Pillow's verify() checks every chunk's CRC."""
    import cv2
    import rasterio
    from PIL import Image

    from rscore_earth.mapplot import save_png

    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    pixels[: shape[0] // 2] //= 16  # runs and repeats too, not only noise
    save_png(tmp_path / "x.png", pixels, row_filter=row_filter)
    with Image.open(tmp_path / "x.png") as im:
        im.verify()
    with Image.open(tmp_path / "x.png") as im:
        assert im.format == "PNG" and im.mode == ("RGB" if len(shape) == 3 else "L")
        assert np.array_equal(np.asarray(im), pixels)
    back = cv2.imread(str(tmp_path / "x.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(back if back.ndim == 2 else cv2.cvtColor(back, cv2.COLOR_BGR2RGB), pixels)
    with rasterio.open(tmp_path / "x.png") as ds:
        got = ds.read()
    assert np.array_equal(got[0] if pixels.ndim == 2 else np.moveaxis(got, 0, -1), pixels)


def test_png_writer_refuses_an_unknown_filter(tmp_path):
    from rscore_earth.mapplot import save_png

    with pytest.raises(ValueError, match="row_filter"):
        save_png(tmp_path / "x.png", np.zeros((2, 2), np.uint8), row_filter="paeth")


def _compiled_or_skip(monkeypatch, kernel: str) -> None:
    from rscore_earth import mapplot, polygons

    if getattr(mapplot, kernel) is None:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(polygons, "COMPILED_MIN_PX", 0)  # small arrays too


@pytest.mark.parametrize("f", [1, 2, 3, 5])
def test_compiled_overlay_equals_where_and_block_max(monkeypatch, f):
    from rscore_earth.mapplot import _overlay_blocks

    _compiled_or_skip(monkeypatch, "_overlay_kernel")
    rng = np.random.default_rng(f)
    full_mask = rng.random((203, 151)) < 0.4
    full_classes = rng.integers(0, 4, (203, 151)).astype(np.uint8)
    mask, classes = full_mask[3:190, 1:140], full_classes[3:190, 1:140]  # windows of bigger arrays (strided)
    assert np.array_equal(_overlay_blocks(mask, classes, f), _block_max(np.where(mask, classes, 0).astype(np.uint8), f))
    assert np.array_equal(_overlay_blocks(mask, None, f), _block_max(mask.astype(np.uint8), f))


def test_compiled_tint_and_grey_equal_numpy(monkeypatch):
    from rscore_earth import mapplot

    _compiled_or_skip(monkeypatch, "_tint_kernel")
    rng = np.random.default_rng(7)
    grey = rng.integers(0, 256, (61, 83), dtype=np.uint8)
    overlay = rng.integers(0, 5, (61, 83)).astype(np.uint8)
    palette = [(255, 235, 59), (255, 152, 0), (211, 47, 47)]
    compiled = tint(grey, overlay, palette)
    canvas = np.zeros((70, 90, 3), np.uint8)
    tint(grey, overlay, palette, out=canvas[4:65, 2:85])  # into a view, as map.png's map area
    monkeypatch.setattr(mapplot, "_tint_kernel", None)
    plain = tint(grey, overlay, palette)
    assert np.array_equal(compiled, plain) and np.array_equal(canvas[4:65, 2:85], plain)
    assert not canvas[:4].any() and not canvas[65:].any()
    z = rng.normal(size=(40, 50)).astype(np.float32)
    z[rng.random(z.shape) < 0.1] = np.nan
    shade = rng.random((40, 50)).astype(np.float32)
    shade[0, :4] = (0.0, 1.0, np.float32(0.99999994), np.float32(1 / 215))
    got = mapplot._grey(z, shade)
    monkeypatch.setattr(mapplot, "_grey_kernel", None)
    assert np.array_equal(got, mapplot._grey(z, shade))
