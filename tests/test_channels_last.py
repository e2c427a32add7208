"""``scene_rgb8``'s band interleaving (OpenCV's merge instead of numpy's strided copy): the same pixels."""

from __future__ import annotations

import numpy as np

from rscore.io.images import channels_last, scene_rgb8
from rscore.types import ArraySource, Scene


def test_channels_last_is_numpys_moveaxis_contiguous():
    rng = np.random.default_rng(1)
    for shape in ((3, 1, 1), (3, 7, 5), (3, 480, 641)):
        bands = rng.integers(0, 256, shape, dtype=np.uint8)
        out = channels_last(bands)
        assert out.shape == (shape[1], shape[2], 3) and out.dtype == np.uint8 and out.flags.c_contiguous
        assert np.array_equal(out, np.moveaxis(bands, 0, -1))
    view = rng.integers(0, 256, (4, 9, 11), dtype=np.uint8)[1:]  # a non-contiguous slice of a larger array
    assert np.array_equal(channels_last(view), np.moveaxis(view, 0, -1))


def test_scene_rgb8_keeps_band_order_for_8_bit_and_stretched_scenes():
    rgb = np.zeros((3, 6, 8), np.uint8)
    rgb[0, :, :4], rgb[1, 2:, :], rgb[2, :, 6:] = 200, 100, 50
    scene = Scene(ArraySource(rgb), "image", ("red", "green", "blue"))
    assert np.array_equal(scene_rgb8(scene), np.moveaxis(rgb, 0, -1))
    wide = Scene(ArraySource(rgb.astype(np.uint16) * 40), "image", ("red", "green", "blue"))
    out = scene_rgb8(wide)
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] > out[0, 0, 1] == out[0, 0, 2] and out[5, 7, 2] > out[5, 7, 0]
