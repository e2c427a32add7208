"""The default landslide model on coarse DEMs: its convergence term needs pixels fine enough to resolve hollows
(benchmarks/landslide/DATA.md, "Round 2"), and the answer says so when they are not."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from rscore import engine
from rscore_earth.fit import auroc, read_inventory
from rscore_earth.templates import COARSE_DEM_M, terrain_factors

QUERY = "landslide-prone areas"


def _dem(path, pixel_m):
    h = w = 96
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    z = 300 + 0.3 * pixel_m * xx + 4 * pixel_m * np.sin(yy / 7.0) + 2 * pixel_m * np.sin(xx / 11.0)
    prof = dict(driver="GTiff", height=h, width=w, count=1, dtype="float32", crs="EPSG:32633",
                transform=from_origin(500000, 4000000, pixel_m, pixel_m), nodata=np.nan)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(z.astype(np.float32), 1)
    return path


def _coarse_caveats(result):
    return [c for c in result.caveats if "coarser than" in c and "plan curvature" in c]


def test_coarse_dem_is_caveated_fine_dem_is_not(tmp_path):
    fine = engine.segment(engine.open_scene(_dem(tmp_path / "fine.tif", 10.0), plugin="earth"), QUERY,
                          plugin="earth", options={"matcher": "keyword"})
    coarse = engine.segment(engine.open_scene(_dem(tmp_path / "coarse.tif", 30.0), plugin="earth"), QUERY,
                            plugin="earth", options={"matcher": "keyword"})
    assert fine.plan.template.endswith("landslide") and coarse.plan.template.endswith("landslide")
    assert not _coarse_caveats(fine)
    (text,) = _coarse_caveats(coarse)
    assert "30 m pixels" in text and f"{COARSE_DEM_M:g} m" in text
    assert coarse.score is not None and np.isfinite(np.asarray(coarse.score)).any()  # still answered


def _aggregate(src, factor, out):
    with rasterio.open(src) as ds:
        z = ds.read(1, masked=True).astype(np.float64).filled(np.nan)
        t, crs = ds.transform, ds.crs
    h, w = (z.shape[0] // factor) * factor, (z.shape[1] // factor) * factor
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
        zc = np.nanmean(z[:h, :w].reshape(h // factor, factor, w // factor, factor), axis=(1, 3))
    prof = dict(driver="GTiff", height=zc.shape[0], width=zc.shape[1], count=1, dtype="float32", crs=crs,
                transform=rasterio.Affine(t.a * factor, t.b, t.c, t.d, t.e * factor, t.f), nodata=np.nan)
    with rasterio.open(out, "w", **prof) as ds:
        ds.write(zc.astype(np.float32), 1)
    return out


@pytest.mark.shared_data
def test_convergence_loses_its_skill_at_30m_on_rbsf_ecuador(shared_data, tmp_path):
    folder = shared_data / "eo" / "landslides_rbsf_ecuador"
    if not (folder / "lsl_points.csv").exists():
        pytest.skip(f"{folder} is absent")
    from rscore_earth import terrain

    skill = {}
    for factor in (1, 3):
        dem = folder / "dem_elev.tif" if factor == 1 else _aggregate(folder / "dem_elev.tif", 3, tmp_path / "x3.tif")
        with rasterio.open(dem) as ds:
            inv = read_inventory(folder / "lsl_points.csv", ds)
            z = ds.read(1, masked=True).filled(np.nan).astype(np.float64)
            px = ds.transform.a
        slope = terrain.slope_deg(z, px, px)
        f = terrain_factors(slope, terrain.curvature(z, px, px, "plan"), px)
        skill[factor] = auroc(f["convergence"][inv.rows, inv.cols], inv.labels)
        if factor == 3:
            result = engine.segment(engine.open_scene(dem, plugin="earth"), QUERY, plugin="earth",
                                    options={"matcher": "keyword"})
            assert _coarse_caveats(result)
    assert skill[1] == pytest.approx(0.707, abs=0.01)  # hollows resolved at 10 m
    assert abs(skill[3] - 0.5) < 0.03  # chance at 30 m (measured 0.509)


def test_coarse_rows_are_caveated_on_a_geographic_dem_at_high_latitude(tmp_path):
    """A 1 arc-second DEM at 60 N has ~31 m rows and ~15 m columns: the coarser axis decides whether the 3x3
    curvature resolves hollows, so the answer carries the caveat (the finer axis alone would hide it)."""
    h = w = 96
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    z = 300 + 9 * xx + 120 * np.sin(yy / 7.0) + 60 * np.sin(xx / 11.0)
    arcsec = 1 / 3600
    path = tmp_path / "srtm_60n.tif"
    prof = dict(driver="GTiff", height=h, width=w, count=1, dtype="float32", crs="EPSG:4326",
                transform=from_origin(10.0, 60.0 + h * arcsec / 2, arcsec, arcsec), nodata=np.nan)
    with rasterio.open(path, "w", **prof) as ds:
        ds.write(z.astype(np.float32), 1)
    scene = engine.open_scene(path, plugin="earth")
    px, py = scene.pixel_size
    assert min(px, py) < COARSE_DEM_M < max(px, py)  # ~15.5 m x ~30.9 m
    result = engine.segment(scene, QUERY, plugin="earth", options={"matcher": "keyword"})
    assert result.plan.template.endswith("landslide")
    (text,) = _coarse_caveats(result)
    assert f"{max(px, py):.3g} m" in text
