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


@pytest.mark.parametrize("shape", [(37, 53, 3), (64, 31), (1, 1, 3)])
def test_png_writer_keeps_every_pixel(tmp_path, shape):
    """map.png / basemap.png through OpenCV with the "sub" filter: what Pillow reads back is the array, channels
    in RGB order."""
    from PIL import Image

    from rscore_earth.mapplot import save_png

    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    save_png(tmp_path / "x.png", pixels)
    with Image.open(tmp_path / "x.png") as im:
        assert im.format == "PNG" and im.mode == ("RGB" if len(shape) == 3 else "L")
        assert np.array_equal(np.asarray(im), pixels)
