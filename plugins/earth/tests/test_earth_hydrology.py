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
def test_identical_flow_accumulation_on_a_real_dem(ecuador_dem):
    z, _, _ = ecuador_dem
    old = terrain.fill_depressions(z, compiled=False)
    new = terrain.fill_depressions(z, compiled=True)
    np.testing.assert_array_equal(new, old)
    assert np.nansum(new - z) > 0  # the real DEM has pits to fill
    rec = terrain.d8_receivers(new, 10.0, 10.0, compiled=True)
    np.testing.assert_array_equal(rec, terrain.d8_receivers(old, 10.0, 10.0, compiled=False))
    w = np.full(z.size, 100.0)
    np.testing.assert_array_equal(terrain.accumulate(rec, w, compiled=True), terrain.accumulate(rec, w, compiled=False))


def _dem_file(tmp_path, z, name="dem.tif"):
    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / name
    with rasterio.open(path, "w", driver="GTiff", height=z.shape[0], width=z.shape[1], count=1, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10), nodata=np.nan) as ds:
        ds.write(z.astype(np.float32), 1)
    return path


def _catchment(h=300, w=300):
    """One long valley draining east across every tile, with noise so that D8 paths are irregular."""
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    rng = np.random.default_rng(5)
    return 1000.0 - 0.5 * xx + 0.2 * np.abs(yy - h / 2) + rng.normal(scale=0.3, size=(h, w))


def test_tiled_run_gets_the_whole_raster_accumulation(tmp_path):
    from rscore.sdk import OpContext
    from rscore.types import Request

    from rscore import engine

    z = _catchment()
    path = _dem_file(tmp_path, z)
    reference = terrain.flow_accumulation(z.astype(np.float32).astype(np.float64), 10.0, 10.0)
    reg = engine.default_registry()
    scene = engine.open_scene(path, plugin="earth")
    from rscore.types import Window

    # in memory, and tiled in bounded memory (the raster is above drainage_max_px): the same numbers
    for opts, exact in (({}, True), ({"drainage_max_px": 1000, "drainage_tile": 64}, True)):
        got = np.full(z.shape, np.nan, np.float32)
        caveats = []
        for r0 in range(0, 300, 100):  # 3 x 3 tiles of 100 px with a 10 px halo, as the engine cuts them
            for c0 in range(0, 300, 100):
                win = Window(max(0, r0 - 10), max(0, c0 - 10), min(300, r0 + 110) - max(0, r0 - 10),
                             min(300, c0 + 110) - max(0, c0 - 10))
                ctx = OpContext(scene, Request(query="floods", plugin="earth", options=opts), reg.operators,
                                window=win, params=opts)
                acc = ctx.op("earth.flow_accumulation")
                core = Window(r0, c0, 100, 100).relative_to(win)
                got[r0 : r0 + 100, c0 : c0 + 100] = acc[core.slices]
                caveats += ctx.caveats
        assert exact
        np.testing.assert_array_equal(got, reference)
        assert not caveats


def test_flood_run_is_exact_and_says_how(tmp_path):
    from rscore import engine

    z = _catchment(200, 260)
    path = _dem_file(tmp_path, z)
    small = engine.run(path, "flood-prone areas", plugin="earth", out_dir=tmp_path / "a",
                       options={"matcher": "keyword", "tile_size": 128})
    whole = engine.run(path, "flood-prone areas", plugin="earth", out_dir=tmp_path / "b",
                       options={"matcher": "keyword", "tile_size": 512})
    np.testing.assert_array_equal(np.asarray(small.mask), np.asarray(whole.mask))  # same at every tile size
    assert any("whole raster" in s.text for s in small.plan.steps)
    assert not any("per tile" in c for c in small.caveats)


@needs_numba
def test_compiled_receivers_equal_the_reference_on_flats_and_holes():
    rng = np.random.default_rng(11)
    for k in range(60):
        h, w = rng.integers(3, 30, size=2)
        z = (rng.normal(size=(h, w)).cumsum(axis=k % 2) + rng.integers(0, 4, size=(h, w))).round(k % 3)  # flats
        if k % 3 == 0:
            z[rng.random(z.shape) < 0.08] = np.nan
        filled = terrain.fill_depressions(z)
        for px, py in ((10.0, 10.0), (30.0, 20.0)):
            np.testing.assert_array_equal(terrain.d8_receivers(filled, px, py, compiled=True),
                                          terrain.d8_receivers(filled, px, py, compiled=False))


@needs_numba
def test_labelled_flood_is_the_same_fill_and_labels_connected_regions():
    """One Priority-Flood kernel serves the whole-array fill and the tiled drainage's labelled flood: the same levels,
    seeds keep their labels, and each label covers one 8-connected region holding its seed."""
    from scipy import ndimage

    for z in surfaces():
        z = np.where(np.isnan(z), -np.inf, z)
        h, w = z.shape
        seed = np.full((h, w), -1, np.int64)
        border = np.zeros((h, w), bool)
        border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
        seed[border] = np.arange(border.sum()) % 5  # several seeds share a label, as the tiled ocean does
        label, level = hydrology.label_flood(z, seed)
        np.testing.assert_array_equal(level, hydrology.priority_flood(z, border))
        np.testing.assert_array_equal(label[border], seed[border])
        assert (label >= 0).all()
        for lab in np.unique(label):
            parts, n = ndimage.label(label == lab, structure=np.ones((3, 3)))
            assert set(np.unique(parts[(label == lab) & border])) == set(range(1, n + 1))


def test_loading_the_earth_plugin_does_not_import_numba():
    """numba (~0.16 CPU-s to import) loads when a drainage kernel first runs, not with every earth run."""
    import subprocess
    import sys

    code = ("import sys; from rscore.plugins import default_registry; reg = default_registry(); "
            "assert 'earth:landslide' in {t.qualified_name for t in reg.templates}, 'no earth'; "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
