"""The GeoTIFF reader: roles, masks, CRS/pixel size, aux rasters, laziness and bad inputs."""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

import numpy as np
import pytest
from rasterio.enums import ColorInterp

from rscore.errors import InputError, OptionError
from rscore.types import Window

from rscore_earth.reader import GeoRasterReader, RasterSource, parse_roles

READER = GeoRasterReader()


def open_(path: Path, **options):
    return READER.open(path, options)


def test_sniffs_tiff_and_bigtiff_magic(tmp_path):
    assert READER.sniff(tmp_path / "a", b"II*\x00rest")
    assert READER.sniff(tmp_path / "a", b"MM\x00+rest")
    assert not READER.sniff(tmp_path / "a", b"\x89PNG\r\n\x1a\n")


def test_dem_with_nodata(write_tif):
    z = np.arange(40 * 50, dtype=np.float32).reshape(40, 50)
    z[:5, :7] = -9999
    scene = open_(write_tif("dem.tif", z, nodata=-9999))
    assert scene.kind == "raster" and scene.band_roles == ("elevation",)
    assert scene.geo.crs == "EPSG:32633" and scene.geo.transform == (10.0, 0.0, 500000.0, 0.0, -10.0, 5120000.0)
    assert scene.geo.nodata == -9999 and scene.pixel_size == (10.0, 10.0) and scene.unit == "m"
    assert isinstance(scene.source, RasterSource)  # lazy: nothing read until asked
    valid = scene.valid(Window(0, 0, 40, 50))
    assert not valid[:5, :7].any() and valid[5:, :].all() and valid[:, 7:].all()
    win = Window(10, 20, 5, 6)
    assert np.array_equal(scene.read(win)[0], z[10:15, 20:26])
    assert scene.warnings == ()


def test_internal_mask_is_respected(write_tif):
    data = np.full((3, 32, 32), 100, np.uint8)
    mask = np.ones((32, 32), bool)
    mask[:, :8] = False
    scene = open_(
        write_tif("rgb.tif", data, mask=mask, colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue])
    )
    assert scene.band_roles == ("red", "green", "blue")
    assert np.array_equal(scene.valid(), mask)


def test_nan_float_without_nodata_is_invalid(write_tif):
    z = np.ones((20, 20), np.float32)
    z[3, 4] = np.nan
    valid = open_(write_tif("nan.tif", z)).valid()
    assert valid is not None and not valid[3, 4] and valid.sum() == 399


def test_no_crs_processes_in_pixel_units_with_a_warning(write_tif):
    scene = open_(write_tif("nocrs.tif", np.ones((20, 20), np.float32), crs=None))
    assert scene.pixel_size is None and scene.unit is None
    assert any("no CRS" in w and "pixel units" in w for w in scene.warnings)
    fixed = open_(write_tif("nocrs2.tif", np.ones((20, 20), np.float32), crs=None), pixel_size_m="30")
    assert fixed.pixel_size == (30.0, 30.0) and fixed.unit == "m"
    with pytest.raises(OptionError, match="pixel_size_m"):
        open_(write_tif("nocrs3.tif", np.ones((20, 20), np.float32), crs=None), pixel_size_m="-1")


def test_crs_ground_units():
    from rasterio.crs import CRS

    from rscore_earth.geo import ground_units, pixel_size_m

    local = ground_units(CRS.from_wkt('LOCAL_CS["unnamed",UNIT["unknown",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'))
    assert local.kind == "unknown" and "unknown units" in local.problem
    assert pixel_size_m((90.0, 0, 0, 0, -90.0, 0), local, 10, 10) is None
    assert ground_units(None).kind == "unknown"
    assert ground_units(CRS.from_epsg(4326)).kind == "geographic"
    utm = ground_units(CRS.from_epsg(32633))
    assert (utm.kind, utm.factor) == ("projected", 1.0)
    # rotated transform: pixel size is the length of the pixel's edge vectors
    assert pixel_size_m((6.0, 8.0, 0, 8.0, -6.0, 0), utm, 10, 10) == (10.0, 10.0)


def test_feet_crs_is_converted_to_metres(write_tif):
    scene = open_(write_tif("ft.tif", np.ones((20, 20), np.float32), crs="EPSG:2227", res=10.0))
    assert scene.pixel_size[0] == pytest.approx(3.048006, rel=1e-6)
    assert any("z_factor" in w for w in scene.warnings)


def test_bands_option(write_tif):
    data = np.ones((4, 16, 16), np.uint16)
    path = write_tif("img.tif", data)
    assert open_(path).band_roles == ("band1", "band2", "band3", "band4")
    assert open_(path, bands="red,green,blue,nir").band_roles == ("red", "green", "blue", "nir")
    assert open_(path, bands=["Red", "green", "-", "NIR"]).band_roles == ("red", "green", "other", "nir")
    with pytest.raises(OptionError, match="names 3 roles but the input has 4 bands"):
        open_(path, bands="red,green,blue")
    with pytest.raises(OptionError, match="unknown band role 'purple'"):
        open_(path, bands="red,green,purple,nir")
    with pytest.raises(OptionError, match="more than once"):
        parse_roles("red,red")


def test_band_roles_from_descriptions_and_colour(write_tif):
    data = np.ones((4, 16, 16), np.uint16)
    s2 = open_(write_tif("s2.tif", data, descriptions=["B02", "B03", "B04", "B08"]))
    assert s2.band_roles == ("blue", "green", "red", "nir")
    rgbn = open_(
        write_tif(
            "rgbn.tif", data.astype(np.uint8), photometric="RGB",
            colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined],
        )
    )  # fmt: skip
    assert rgbn.band_roles == ("red", "green", "blue", "nir")
    assert any("taken as NIR" in w for w in rgbn.warnings)
    alpha = open_(
        write_tif(
            "rgba.tif", data.astype(np.uint8),
            colorinterp=[ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha],
        )
    )  # fmt: skip
    assert alpha.band_roles == ("red", "green", "blue", "alpha")


def test_single_band_defaults(write_tif):
    assert open_(write_tif("f.tif", np.ones((16, 16), np.float32))).band_roles == ("elevation",)
    assert open_(write_tif("i.tif", np.ones((16, 16), np.int16))).band_roles == ("elevation",)
    u16 = open_(write_tif("u.tif", np.ones((16, 16), np.uint16)))
    assert u16.band_roles == ("elevation",) and any("taken as elevation" in w for w in u16.warnings)
    assert open_(write_tif("b.tif", np.ones((16, 16), np.uint8))).band_roles == ("gray",)


def test_scale_and_offset_are_applied(write_tif):
    scene = open_(write_tif("s.tif", np.full((16, 16), 100, np.int16), scales=[0.5], offsets=[10.0]))
    assert scene.source.dtype == "float32"
    assert np.allclose(scene.read(), 60.0)


def test_landsat_mtl_gives_toa_reflectance(write_tif, tmp_path):
    path = write_tif("LC08_X_B4.tif", np.full((16, 16), 10000, np.uint16))
    (tmp_path / "LC08_X_MTL.txt").write_text(
        "GROUP = L1_METADATA_FILE\n    SUN_ELEVATION = 30.0\n    REFLECTANCE_MULT_BAND_4 = 2.0000E-05\n"
        "    REFLECTANCE_ADD_BAND_4 = -0.100000\nEND\n"
    )
    scene = open_(path, bands="red")
    assert np.allclose(scene.read(), (2e-5 * 10000 - 0.1) / 0.5)
    assert any("TOA reflectance" in w for w in scene.warnings)


def test_aux_on_another_grid_and_crs_is_warped_lazily(write_tif):
    from rasterio.warp import transform as warp_transform

    # primary: 10 m UTM DEM; aux: a 0.0005 deg EPSG:4326 image whose value is a linear ramp of longitude
    dem = write_tif("dem.tif", np.zeros((60, 60), np.float32))
    lon, lat = warp_transform("EPSG:32633", "EPSG:4326", [500_000.0 - 200], [5_120_000.0 + 200])
    res = 0.0005
    cols = np.arange(16)  # ~620 m wide from 200 m west of the DEM: the DEM's eastern ~180 m are not covered
    lon_c = lon[0] + (cols + 0.5) * res
    ramp = np.tile((lon_c - lon[0]) * 10000, (30, 1)).astype(np.float32)  # value = 10000 * (lon - lon0)
    img = write_tif("img.tif", ramp, crs="EPSG:4326", res=res, origin=(lon[0], lat[0]), descriptions=["nir"])
    scene = open_(dem, aux=str(img))
    assert scene.band_roles == ("elevation", "nir")
    assert scene.shape == (60, 60)
    data = scene.read(Window(10, 10, 20, 20), ["nir"])[0]
    xs = 500_000.0 + (np.arange(10, 30) + 0.5) * 10
    ys = 5_120_000.0 - (np.arange(10, 30) + 0.5) * 10
    gx, gy = np.meshgrid(xs, ys)
    glon, _ = warp_transform("EPSG:32633", "EPSG:4326", gx.ravel(), gy.ravel())
    expected = ((np.asarray(glon) - lon[0]) * 10000).reshape(20, 20)
    assert np.abs(data - expected).max() < 0.05  # bilinear reproduces a linear ramp
    valid = scene.valid()
    assert valid is not None and valid[10:30, 10:30].all()
    assert not valid[:, -10:].any()
    assert any("covers only about" in w for w in scene.warnings)


def test_aux_nodata_becomes_invalid(write_tif):
    dem = write_tif("dem.tif", np.zeros((20, 20), np.float32))
    img = np.full((10, 10), 7, np.uint16)
    img[:, :5] = 0
    scene = open_(dem, aux=write_tif("img.tif", img, res=20.0, nodata=0), aux_resampling="nearest")
    valid = scene.valid()
    assert not valid[:, :10].any() and valid[:, 10:].all()
    assert scene.band_roles == ("elevation", "elevation_2")  # a single uint16 band defaults to elevation too
    assert (scene.read(roles=["elevation_2"])[0][:, 10:] == 7).all()
    with pytest.raises(OptionError, match="unknown aux_resampling"):
        open_(dem, aux=write_tif("img2.tif", img, res=20.0), aux_resampling="fancy")


def test_aux_roles_and_combined_bands(write_tif):
    dem = write_tif("dem.tif", np.zeros((20, 20), np.float32))
    img = write_tif("img.tif", np.ones((2, 10, 10), np.uint16), res=20.0)
    scene = open_(dem, aux=img, aux_bands="red,nir")
    assert scene.band_roles == ("elevation", "red", "nir")
    scene = open_(dem, aux=[img], bands="elevation,red,nir")
    assert scene.band_roles == ("elevation", "red", "nir")
    with pytest.raises(OptionError, match="aux_bands names 1 roles"):
        open_(dem, aux=img, aux_bands="red")


def test_aux_without_overlap_names_the_aux_file(write_tif):
    dem = write_tif("dem.tif", np.zeros((20, 20), np.float32))
    far = write_tif("far.tif", np.ones((20, 20), np.float32), origin=(700_000.0, 5_120_000.0))
    with pytest.raises(InputError, match="does not overlap dem.tif") as err:
        open_(dem, aux=far)
    assert err.value.path == far


def test_aux_without_crs_on_another_grid_is_refused(write_tif):
    dem = write_tif("dem.tif", np.zeros((20, 20), np.float32))
    img = write_tif("img.tif", np.ones((10, 10), np.float32), crs=None)
    with pytest.raises(InputError, match="has no CRS") as err:
        open_(dem, aux=img)
    assert err.value.path == img


def test_corrupt_and_truncated_tiffs(write_tif, tmp_path):
    garbage = tmp_path / "garbage.tif"
    garbage.write_bytes(b"II*\x00" + bytes(range(256)) * 8)
    with pytest.raises(InputError, match="not a readable raster") as err:
        open_(garbage)
    assert err.value.path == garbage
    good = write_tif("good.tif", np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32), tiled=False)
    cut = tmp_path / "cut.tif"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(InputError) as err:
        scene = open_(cut)
        scene.read()  # a file whose header survived fails at the latest on reading, still as an InputError
    assert err.value.path == cut
    with pytest.raises(InputError, match="no such file"):
        open_(tmp_path / "missing.tif")


def test_all_nodata_raster_is_refused(write_tif):
    with pytest.raises(InputError, match="contains no valid pixels"):
        open_(write_tif("empty.tif", np.full((300, 300), -9999, np.float32), nodata=-9999))
    with pytest.raises(InputError, match="contains no valid pixels"):
        open_(write_tif("nan.tif", np.full((40, 40), np.nan, np.float32)))
    # one valid pixel that the sampling grid misses is still found by the full scan
    z = np.full((300, 300), -9999, np.float32)
    z[151, 153] = 5.0
    assert open_(write_tif("one.tif", z, nodata=-9999)).valid().sum() == 1


def test_source_is_thread_safe_and_picklable(write_tif):
    z = np.random.default_rng(2).normal(size=(128, 128)).astype(np.float32)
    scene = open_(write_tif("z.tif", z))
    wins = [Window(r, c, 32, 32) for r in range(0, 128, 32) for c in range(0, 128, 32)]
    results: dict[int, bool] = {}

    def work(k: int) -> None:
        ok = True
        for _ in range(5):
            for w in wins:
                ok &= bool(np.array_equal(scene.read(w)[0], z[w.slices]))
        results[k] = ok

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {0: True, 1: True, 2: True, 3: True}
    clone = pickle.loads(pickle.dumps(scene.source))
    assert np.array_equal(clone.read(wins[5])[0], z[wins[5].slices])
    scene.source.close()
    assert np.array_equal(scene.read(wins[0])[0], z[wins[0].slices])  # reopens after close
