"""benchmarks/landslide/eval_landslide.py with the inventory kinds the independent leads come as (DATA.md, sixth
search): a landslide raster (mapped-source mask) on a fine DEM, scored at the DEM's own pixel and aggregated to 10 m.

Real GeoTIFFs written with rasterio, the real inventory reader (``rscore_earth.fit.read_inventory``) and, in the last
test, the whole script (engine + fitted adapter) on them."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("geopandas")
fit = pytest.importorskip("rscore_earth.fit")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "landslide" / "eval_landslide.py"


def _load():
    spec = importlib.util.spec_from_file_location("eval_landslide", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("eval_landslide", mod)
    spec.loader.exec_module(mod)
    return mod


EV = _load()
CRS = "EPSG:32633"


def _write(path: Path, a: np.ndarray, px: float, nodata=None) -> Path:
    t = rasterio.transform.from_origin(500000.0, 5100000.0, px, px)
    with rasterio.open(path, "w", driver="GTiff", height=a.shape[0], width=a.shape[1], count=1, dtype=a.dtype,
                       crs=CRS, transform=t, nodata=nodata) as ds:
        ds.write(a, 1)
    return path


def _terrain(n: int = 300, px: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Hillslopes around a winding valley, with hollows where the slides are mapped (2 m pixels)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:n, 0:n] * px
    valley = 0.5 * n * px + 40.0 * np.sin(x / 90.0)
    z = 0.35 * np.abs(y - valley) ** 1.15 + 0.05 * x + rng.normal(0.0, 0.05, (n, n))
    mask = np.zeros((n, n), np.uint8)
    for cy, cx in ((60, 60), (80, 200), (230, 90), (220, 240), (150, 30), (40, 270)):
        yy, xx = np.ogrid[:n, :n]
        blob = ((yy - cy) / 9.0) ** 2 + ((xx - cx) / 5.0) ** 2 <= 1.0
        mask[blob] = 1
        z[blob] -= 1.5  # a hollow
    return z.astype(np.float32), mask


def test_a_landslide_raster_comes_back_cell_for_cell_as_a_polygon_inventory(tmp_path):
    z, mask = _terrain(120)
    mask[0, :] = 255  # nodata row: never a landslide
    dem = _write(tmp_path / "dem.tif", z, 2.0)
    m = _write(tmp_path / "mask.tif", mask, 2.0, nodata=255)
    gpkg = EV.mask_to_polygons(m, tmp_path / "inv.gpkg")
    with rasterio.open(dem) as ds:
        inv = fit.read_inventory(gpkg, ds, seed=0)
    got = {(int(r), int(c)) for r, c, lab in zip(inv.rows, inv.cols, inv.labels) if lab == 1}
    want = {(int(r), int(c)) for r, c in zip(*np.nonzero(mask == 1))}
    assert got == want
    assert int((inv.labels == 0).sum()) == len(want)  # as many random non-landslide cells
    assert not any(mask[r, c] == 1 for r, c, lab in zip(inv.rows, inv.cols, inv.labels) if lab == 0)


def test_a_raster_without_any_landslide_cell_is_refused_naming_it(tmp_path):
    m = _write(tmp_path / "empty.tif", np.zeros((20, 20), np.float32), 2.0)
    with pytest.raises(SystemExit, match="empty.tif: no landslide cell"):
        EV.mask_to_polygons(m, tmp_path / "inv.gpkg")


def test_a_2_m_dem_is_aggregated_to_10_m_block_means(tmp_path):
    z, _ = _terrain(103)  # not a multiple of 5: the ragged edge is dropped
    dem = _write(tmp_path / "dem.tif", z, 2.0)
    assert EV.aggregation_factor(dem, 10.0) == 5
    out = EV.aggregate_dem(dem, 5, tmp_path / "dem10.tif")
    with rasterio.open(out) as ds:
        assert ds.res == (10.0, 10.0) and ds.shape == (20, 20)
        zc = ds.read(1)
    assert zc[3, 7] == pytest.approx(float(z[15:20, 35:40].astype(np.float64).mean()), rel=1e-6)
    coarse = _write(tmp_path / "dem_coarse.tif", z, 12.5)
    assert EV.aggregation_factor(coarse, 10.0) == 1  # not finer than 10 m: no aggregated run


def test_the_script_scores_a_mask_inventory_at_its_own_pixel_and_at_10_m(tmp_path, monkeypatch):
    monkeypatch.setenv("RSCORE_SHARED_DATA", str(tmp_path))  # an empty data folder: only the given inventory
    z, mask = _terrain(300)
    dem = _write(tmp_path / "dem.tif", z, 2.0)
    m = _write(tmp_path / "mask.tif", mask, 2.0)
    out = tmp_path / "fig.json"
    assert EV.main(["--inventory", f"synth={m},{dem}", "--aggregate-to", "10", "--json", str(out)]) == 0
    figs = json.loads(out.read_text())
    assert set(figs) == {"synth", "synth @x5"}
    native, coarse = figs["synth"], figs["synth @x5"]
    assert native["n_landslide"] == int(mask.sum()) and native["n"] == 2 * int(mask.sum())
    assert native["inventory"] == str(m) and coarse["dem"].endswith("_x5.tif")
    assert 0 < coarse["n_landslide"] < native["n_landslide"]  # the same polygons on 25x larger cells
    for f in (native, coarse):
        for k in ("auroc_slope", "auroc_default", "auroc_fitted_cv_mean"):
            assert 0.0 <= f[k] <= 1.0


def test_a_rotated_dem_is_aggregated_on_its_own_rotated_grid(tmp_path):
    """The coarse grid is the fine one scaled by the factor, rotation terms included (only a and e were scaled:
    a rotated DEM's blocks landed on a sheared grid)."""
    z, _ = _terrain(50)
    t = rasterio.transform.from_origin(500000.0, 5100000.0, 2.0, 2.0) * rasterio.Affine.rotation(20.0)
    dem = tmp_path / "rot.tif"
    with rasterio.open(dem, "w", driver="GTiff", height=50, width=50, count=1, dtype="float32", crs=CRS,
                       transform=t) as ds:  # fmt: skip
        ds.write(z, 1)
    with rasterio.open(EV.aggregate_dem(dem, 5, tmp_path / "rot10.tif")) as ds:
        assert ds.transform.almost_equals(t * rasterio.Affine.scale(5))
