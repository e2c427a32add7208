"""Compiled hydrology (Priority-Flood fill, one-pass accumulation) equals the reference implementations."""

from __future__ import annotations

import numpy as np
import pytest

from rscore_earth import hydrology, terrain

needs_numba = pytest.mark.skipif(not hydrology.AVAILABLE, reason="numba is not installed")


def relaxation_fill(z: np.ndarray) -> np.ndarray:
    """Independent reference: the smallest surface W >= z whose every interior cell has an 8-neighbour no higher
    than itself, found by relaxing W = max(z, min(neighbours)) from +inf to a fixed point (outlets: border, NaN)."""
    h, w = z.shape
    nan = np.isnan(z)
    low = np.nanmin(z) - 1.0
    zz = np.where(nan, low, z)
    outlet = nan.copy()
    outlet[0, :] = outlet[-1, :] = outlet[:, 0] = outlet[:, -1] = True
    W = np.where(outlet, zz, np.inf)
    while True:
        p = np.pad(W, 1, constant_values=np.inf)
        nb = np.min([p[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w] for dr in (-1, 0, 1) for dc in (-1, 0, 1)
                     if (dr, dc) != (0, 0)], axis=0)  # fmt: skip
        new = np.where(outlet, zz, np.maximum(zz, nb))
        if np.array_equal(new, W):
            break
        W = new
    W[nan] = np.nan
    return W


def surfaces(n: int = 12):
    rng = np.random.default_rng(7)
    for k in range(n):
        h, w = rng.integers(3, 40, size=2)
        z = rng.normal(size=(h, w)).cumsum(axis=k % 2) + rng.integers(0, 4, size=(h, w))  # pits, flats and ties
        if k % 3 == 0:
            z[rng.random(z.shape) < 0.08] = np.nan
        yield z


@needs_numba
def test_priority_flood_equals_reconstruction_and_relaxation():
    for z in surfaces():
        fast = terrain.fill_depressions(z, compiled=True)
        np.testing.assert_array_equal(fast, terrain.fill_depressions(z, compiled=False))
        np.testing.assert_array_equal(fast, relaxation_fill(z))


@needs_numba
def test_fill_raises_a_pit_to_its_spill_level():
    z = np.full((5, 5), 10.0)
    z[2, 2] = 1.0  # a pit surrounded by 10 m, one spill cell at 4 m on the border
    z[0, 2] = 4.0
    z[1, 2] = 6.0
    out = terrain.fill_depressions(z, compiled=True)
    assert out[2, 2] == 6.0 and out[1, 2] == 6.0 and out[0, 2] == 4.0


@needs_numba
def test_compiled_accumulation_equals_waves():
    for z in surfaces():
        filled = terrain.fill_depressions(z)
        rec = terrain.d8_receivers(filled, 10.0, 10.0)
        ones = np.full(z.size, 100.0)
        np.testing.assert_array_equal(terrain.accumulate(rec, ones, compiled=True),
                                      terrain.accumulate(rec, ones, compiled=False))
        wts = np.random.default_rng(1).random(z.size)
        np.testing.assert_allclose(terrain.accumulate(rec, wts, compiled=True),
                                   terrain.accumulate(rec, wts, compiled=False), rtol=1e-12)


@needs_numba
@pytest.mark.shared_data
def test_identical_flow_accumulation_on_a_real_dem(shared_data):
    import rasterio

    path = shared_data / "eo" / "landslides_rbsf_ecuador" / "dem_elev.tif"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with rasterio.open(path) as ds:
        z = ds.read(1, masked=True).filled(np.nan).astype(np.float64)
    old = terrain.fill_depressions(z, compiled=False)
    new = terrain.fill_depressions(z, compiled=True)
    np.testing.assert_array_equal(new, old)
    assert np.nansum(new - z) > 0  # the real DEM has pits to fill
    rec = terrain.d8_receivers(new, 10.0, 10.0)
    w = np.full(z.size, 100.0)
    np.testing.assert_array_equal(terrain.accumulate(rec, w, compiled=True), terrain.accumulate(rec, w, compiled=False))
