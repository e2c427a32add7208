"""Tiled, bounded-memory D8 contributing area equals the whole-array computation bit for bit.

The whole-array reference is :func:`rscore_earth.terrain.flow_accumulation` (Priority-Flood fill, D8 receivers with
flats routed to their outlets, accumulation), itself checked against independent references in
test_earth_hydrology.py. The tiled version must give the same numbers at every tile size, including across tile
edges that cut depressions, flats, holes (NaN) and the catchment of the outlet.
"""

from __future__ import annotations

import numpy as np
import pytest

from rscore_earth import hydrology, terrain

pytestmark = pytest.mark.skipif(not hydrology.AVAILABLE, reason="numba is not installed")


def _tiled(z: np.ndarray, tile: int, px: float = 10.0, py: float = 10.0) -> np.ndarray:
    from rscore_earth.drainage_tiled import tiled_flow_accumulation

    def read(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        return z[r0:r1, c0:c1].astype(np.float64)

    store = tiled_flow_accumulation(read, z.shape[0], z.shape[1], px, py, tile)
    try:
        return store.read()
    finally:
        store.close()


def _surfaces():
    """Rough surfaces with pits, quantised ones (many flats), holes, and a flat lake bed crossing every tile."""
    rng = np.random.default_rng(3)
    for k in range(12):
        h, w = (int(v) for v in rng.integers(6, 36, size=2))
        kind = k % 4
        if kind == 0:
            z = rng.random((h, w)) * 10
        elif kind == 1:
            z = np.round(rng.random((h, w)) * 3)
        elif kind == 2:
            z = np.round(rng.random((h, w)) * 3)
            z[rng.random((h, w)) < 0.1] = np.nan
        else:
            yy, xx = np.mgrid[:h, :w]
            z = np.round(np.hypot(yy - h / 2, xx - w / 3) / 7) + 0.0
            z[h // 3 : h // 3 + 4, 1 : w - 1] = 0.5  # a long flat below its surroundings: filled, then drained
        yield z


def test_tiled_equals_whole_on_pits_flats_and_holes():
    for z in _surfaces():
        whole = terrain.flow_accumulation(z, 10.0, 10.0)
        for tile in (3, 7, 16):  # 3: last tiles of 1 px (halo read from the tile store), 7 and 16: from strips
            np.testing.assert_array_equal(_tiled(z, tile), whole, err_msg=f"{z.shape} tile {tile}")


def test_a_catchment_crossing_every_tile_gets_its_whole_area():
    """A tilted plane draining to one corner: the outlet's contributing area is the whole raster."""
    yy, xx = np.mgrid[:40, :30].astype(float)
    z = 100.0 + yy + xx  # every cell drains towards (0, 0)
    got = _tiled(z, 7, 5.0, 5.0)
    assert got[0, 0] == pytest.approx(z.size * 25.0)
    np.testing.assert_array_equal(got, terrain.flow_accumulation(z, 5.0, 5.0))


def test_non_square_pixels():
    z = np.round(np.random.default_rng(8).random((30, 37)) * 4)
    np.testing.assert_array_equal(_tiled(z, 8, 30.0, 20.0), terrain.flow_accumulation(z, 30.0, 20.0))


@pytest.mark.shared_data
def test_tiled_equals_whole_on_a_real_dem(ecuador_dem):
    """The RBSF Ecuador DEM (real, with nodata and pits): tiles of 64 and 100 px give the whole-array numbers."""
    z, px, py = ecuador_dem
    assert np.isnan(z).any() and np.nansum(terrain.fill_depressions(z) - z) > 0  # holes and pits to cross tiles
    whole = terrain.flow_accumulation(z, px, py)
    for tile in (64, 100):
        np.testing.assert_array_equal(_tiled(z, tile, px, py), whole)


def test_bad_tile_size_is_an_option_error(tmp_path):
    from rscore import engine
    from rscore.errors import OptionError

    import rasterio
    from rasterio.transform import from_origin

    path = tmp_path / "dem.tif"
    z = (np.add.outer(np.arange(40.0), np.arange(40.0)) * 3).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", height=40, width=40, count=1, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(500000, 4000000, 10, 10)) as ds:
        ds.write(z, 1)
    with pytest.raises(OptionError, match="drainage_tile"):
        engine.run(path, "flood-prone areas", plugin="earth", out_dir=tmp_path / "o",
                   options={"matcher": "keyword", "drainage_max_px": 0, "drainage_tile": 1})
    assert not (tmp_path / "o").exists()


def test_flood_answer_is_the_same_through_the_tiled_drainage(monkeypatch):
    """The engine's flood-prone answer on the example DEM (384^2): drainage in memory, and tiled (drainage_max_px=0,
    100 px drainage tiles that do not line up with the engine's 128 px tiles) give the same mask and score."""
    from rscore import engine
    from rscore_earth import drainage_tiled, synthetic

    calls = []
    real = drainage_tiled.tiled_flow_accumulation
    monkeypatch.setattr(drainage_tiled, "tiled_flow_accumulation", lambda *a: calls.append(a[1:]) or real(*a))
    scene = engine.open_scene(synthetic.example_path(), plugin="earth")
    base = {"matcher": "keyword", "tile_size": 128}
    whole = engine.segment(scene, "flood-prone areas", plugin="earth", options=base)
    scene = engine.open_scene(synthetic.example_path(), plugin="earth")
    tiled = engine.segment(scene, "flood-prone areas", plugin="earth",
                           options={**base, "drainage_max_px": 0, "drainage_tile": 100})
    assert whole.plan.template == tiled.plan.template == "earth:flood_prone" and np.asarray(whole.mask).any()
    np.testing.assert_array_equal(np.asarray(tiled.mask), np.asarray(whole.mask))
    np.testing.assert_array_equal(np.asarray(tiled.score), np.asarray(whole.score))
    assert not any("per tile" in c for c in tiled.caveats)
    assert calls == [(384, 384, 10.0, 10.0, 100)]  # the tiled pass ran once for the scene, not per engine tile
