"""The underwater rules give the same answers with OpenCV as with the scipy.ndimage calls they replaced (#22).

Each call site in ``rscore_underwater.water`` is compared with its scipy original at the sizes it is used with, and
the plugin's answers on the real EUVP pictures in the shared data are compared mask for mask with a run whose
filters are scipy's (the module's ``cvfilters`` swapped for the original scipy calls), whole-frame and tiled (the
tiled sea floor goes through the whole-scene grid sample). Swapping the 5x5 opening for a 3x3 one changes 416
pixels of open water on picture 5: these comparisons can fail.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from scipy import ndimage

from rscore import engine
from rscore_underwater import water

SCIPY = types.SimpleNamespace(  # the calls water.py made before #22, verbatim
    uniform_filter_reflect=lambda a, size: ndimage.uniform_filter(a, size, mode="reflect"),
    minimum_filter_nearest=lambda a, size: ndimage.minimum_filter(a, size, mode="nearest"),
    binary_opening=lambda m, s: ndimage.binary_opening(m, structure=s),
    binary_erosion=lambda m, s, border_value=0: ndimage.binary_erosion(m, s, border_value=border_value),
    binary_dilation=lambda m, s: ndimage.binary_dilation(m, s),
    label8=lambda m: ndimage.label(m, structure=np.ones((3, 3), bool)),
)


@pytest.mark.parametrize("shape", [(15, 15), (16, 31), (40, 23), (64, 64)])
def test_contrast_and_dark_channel_match_scipy(monkeypatch, shape):
    rng = np.random.default_rng(shape[0] * 100 + shape[1])
    rgb = rng.random((3, *shape)).astype(np.float32)
    rgb[:, : shape[0] // 2] *= 0.02  # a dark half: the MEAN_FLOOR clamp and near-zero variances
    backlight = np.array([0.2, 0.6, 0.7], np.float32)
    got = [water.rms_contrast(rgb, size) for size in (3, 5, 15)] + [water.gb_dark_channel(rgb, backlight, 15),
                                                                     water.gb_dark_channel(rgb, None, 3)]
    monkeypatch.setattr(water, "cvfilters", SCIPY)
    want = [water.rms_contrast(rgb, size) for size in (3, 5, 15)] + [water.gb_dark_channel(rgb, backlight, 15),
                                                                      water.gb_dark_channel(rgb, None, 3)]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    assert all(np.array_equal(g, w) for g, w in zip(got[3:], want[3:]))  # the dark channel is exact


@pytest.mark.parametrize("shape", [(1, 1), (2, 9), (25, 25), (31, 64), (64, 40)])
def test_floor_from_water_matches_scipy(monkeypatch, shape):
    rng = np.random.default_rng(shape[0] + shape[1])
    cases = [np.zeros(shape, bool), np.ones(shape, bool)]
    for p in (0.3, 0.6):  # blobs of water: smoothed noise, thresholded
        noise = ndimage.uniform_filter(rng.random(shape), 5)
        cases.append(noise > np.quantile(noise, p))
    valid = np.ones(shape, bool)
    valid[:, :1] = False
    got = [water.floor_from_water(w, v) for w in cases for v in (np.ones(shape, bool), valid)]
    monkeypatch.setattr(water, "cvfilters", SCIPY)
    want = [water.floor_from_water(w, v) for w in cases for v in (np.ones(shape, bool), valid)]
    for (gf, gn), (wf, wn) in zip(got, want):
        assert np.array_equal(gf, wf) and gn == wn


QUERIES = ("open water", "sea floor", "everything that is not open water", "low visibility regions")


def _answers(path, tile_size):
    out = {}
    for q in QUERIES:
        options = {"tile_size": tile_size} if tile_size else {}
        res = engine.segment(engine.open_scene(path, plugin="underwater"), q, plugin="underwater", options=options)
        out[q] = res
    return out


@pytest.mark.shared_data
@pytest.mark.parametrize("k", [1, 5, 12])
@pytest.mark.parametrize("tile_size", [None, 96])
def test_real_euvp_answers_unchanged(shared_data, monkeypatch, k, tile_size):
    path = shared_data / "underwater" / "funie-gan_euvp" / f"euvp_test_A_{k}.jpg"
    if not path.exists():
        pytest.skip(f"{path} not present")
    got = _answers(path, tile_size)
    monkeypatch.setattr(water, "cvfilters", SCIPY)
    want = _answers(path, tile_size)
    for q in QUERIES:
        g, w = got[q], want[q]
        assert g.plan.template == w.plan.template
        assert np.array_equal(g.mask, w.mask), (q, int((g.mask != w.mask).sum()))
        if k != 1:  # not vacuous: pictures 5 and 12 hold some of every class (1 is all floor)
            assert 0 < g.mask.mean() < 1, q
        assert g.confidence == w.confidence
        assert [s.text for s in g.plan.steps] == [s.text for s in w.plan.steps]
