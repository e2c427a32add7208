"""The synthetic terrain generator: reproducible, tile-independent, realistic enough, and the bundled example."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import rasterio

from rscore.types import Window

from rscore_earth import synthetic, terrain

SPEC = replace(synthetic.TerrainSpec(), height=200, width=240, seed=11)


def test_reproducible_by_seed():
    a = synthetic.generate_dem(SPEC)
    assert np.array_equal(a, synthetic.generate_dem(SPEC))
    assert not np.array_equal(a, synthetic.generate_dem(replace(SPEC, seed=12)))


def test_windows_equal_the_whole():
    whole = synthetic.generate_dem(SPEC)
    win = Window(37, 101, 64, 80)
    assert np.allclose(synthetic.generate_dem(SPEC, win), whole[win.slices], atol=0.011)  # 1 cm rounding


def test_terrain_is_plausible():
    z = synthetic.generate_dem(replace(SPEC, height=400, width=400))
    slope = terrain.slope_deg(z, SPEC.pixel_size, SPEC.pixel_size)
    assert 150 < z.min() < z.max() < 1500
    assert 8 < np.median(slope) < 35  # hilly to mountainous at 10 m
    assert (slope < 2).mean() > 0.03  # flat floodplains
    assert (slope > 35).mean() > 0.02  # steep valley sides


def test_written_files(tmp_path):
    dem = synthetic.write_dem(tmp_path / "dem.tif", SPEC, tile=64)
    rgbn = synthetic.write_rgbn(tmp_path / "rgbn.tif", SPEC, pixel_size=20.0, tile=64)
    with rasterio.open(dem) as ds:
        assert ds.crs.to_string() == "EPSG:32633" and ds.res == (10.0, 10.0) and ds.block_shapes[0] == (256, 256)
        assert np.allclose(ds.read(1), synthetic.generate_dem(SPEC), atol=0.011)  # tiles of 64: 1 cm rounding
    with rasterio.open(rgbn) as ds:
        assert ds.count == 4 and ds.res == (20.0, 20.0) and ds.descriptions == ("red", "green", "blue", "nir")
        data = ds.read().astype(float)
    ndvi = (data[3] - data[0]) / (data[3] + data[0])
    assert (ndvi > 0.5).mean() > 0.3 and (ndvi < 0.2).mean() > 0.01  # forest and bare ground both present


def test_bundled_example_is_the_generator_output(tmp_path):
    fresh = synthetic.write_example(tmp_path)
    for kind, path in fresh.items():
        with rasterio.open(path) as a, rasterio.open(synthetic.example_path(kind)) as b:
            assert np.array_equal(a.read(), b.read()) and a.transform == b.transform and a.crs == b.crs
    assert synthetic.example_path().stat().st_size + synthetic.example_path("rgbn").stat().st_size < 1_000_000


def test_example_is_regenerated_into_the_cache_when_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "_package_data", lambda: tmp_path / "nothing")
    monkeypatch.setenv("RSCORE_EARTH_CACHE", str(tmp_path / "cache"))
    path = synthetic.example_path()
    assert path == tmp_path / "cache" / "example_dem.tif" and path.exists()
    with pytest.raises(ValueError, match="unknown example"):
        synthetic.example_path("lidar")


def test_command_line(tmp_path):
    assert synthetic.main([str(tmp_path / "d.tif"), "--size", "96", "--rgbn", str(tmp_path / "i.tif")]) == 0
    with rasterio.open(tmp_path / "d.tif") as ds:
        assert ds.shape == (96, 96)
    assert (tmp_path / "i.tif").exists()
