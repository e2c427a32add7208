"""#18: the input's nodata is not drawn as data. ``basemap.png`` (the viewer's offline basemap, georeferenced by its
world file) is transparent exactly where the input has no data, and ``map.png`` shows the page's white with a light
grey hatch there (named "no data" in the legend), never black and never a class colour. Checked on the real Ecuador
DEM (619 NaN pixels), on a DEM with a nodata value, whole and from the tiles' previews (workers too), on a 4-band
image with a nodata value and an RGB image with an alpha band, read back with Pillow and GDAL, and through the
viewer's map view."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from rasterio.enums import ColorInterp

from rscore import engine
from rscore_earth import mapplot
from rscore_earth.mapplot import HATCH, MARGIN, MIN_MAP, NODATA_BG, NODATA_LINE, TITLE_H

ECUADOR = "eo/landslides_rbsf_ecuador/dem_elev.tif"


def _alpha(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """basemap.png's transparency as Pillow and as GDAL read it (True = see-through)."""
    import warnings

    import rasterio
    from PIL import Image
    from rasterio.errors import NotGeoreferencedWarning

    with Image.open(path) as im:
        pil = np.asarray(im.convert("RGBA"))[..., 3] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            gdal = ds.dataset_mask() == 0
    return pil, gdal


def _map_area(folder: Path, shape: tuple[int, int]) -> np.ndarray:
    """The map area of map.png (the preview, enlarged by whole pixels for small rasters) as (h, w, 3) int."""
    from PIL import Image

    up = max(1, MIN_MAP // max(shape))
    with Image.open(folder / "map.png") as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    return rgb[TITLE_H + MARGIN : TITLE_H + MARGIN + shape[0] * up, MARGIN : MARGIN + shape[1] * up], up


def _hatched_exactly_at(area: np.ndarray, nodata: np.ndarray, up: int, hillshade: bool = True) -> None:
    """The map area is the hatch (white, grey diagonals) on ``nodata`` (preview pixels); on a hillshade (grey
    40-255, tinted or not) no data pixel is black, as nodata was."""
    big = np.repeat(np.repeat(nodata, up, axis=0), up, axis=1)
    ys, xs = np.nonzero(big)
    line = (ys + xs) % HATCH < 2
    assert big.any()
    assert (area[ys[line], xs[line]] == NODATA_LINE).all()
    assert (area[ys[~line], xs[~line]] == NODATA_BG).all()
    if hillshade:
        assert not (area[~big] == (0, 0, 0)).all(axis=-1).any()


@pytest.mark.shared_data
@pytest.mark.parametrize("options", [{}, {"tile_size": 128, "workers": 2}, "reread"])
def test_ecuador_dem_nodata_is_transparent_in_the_basemap_and_hatched_on_the_map(shared_data, tmp_path, options,
                                                                                monkeypatch):  # fmt: skip
    """Whole (one tile's preview), in 128 px tiles in worker processes (the stitched previews), and read again
    (a result without the tiles' previews, e.g. another reasoner's)."""
    import rasterio

    from rscore_earth.mapplot import MapPngWriter

    path = shared_data / ECUADOR
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with rasterio.open(path) as ds:
        nodata = ds.read_masks(1) == 0
    assert nodata.sum() == 619
    if options == "reread":
        scene = engine.open_scene(path, plugin="earth", options={"matcher": "keyword"})
        res = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword"})
        (tmp_path / "o").mkdir()
        MapPngWriter().write(scene, res.replace(tile_summaries=()), tmp_path / "o")
    else:  # the tiles' previews make the map: the writer must not read the input again
        monkeypatch.setattr(mapplot, "_read_float", lambda *a: pytest.fail("the map writer re-read the input"))
        res = engine.run(path, "landslide-prone areas", plugin="earth", out_dir=tmp_path / "o",
                         options={"matcher": "keyword", **options})  # fmt: skip
        assert res.tile_summaries == ()  # dropped once written: the patched reader above proves the map used them
    assert not res.absent
    pil, gdal = _alpha(tmp_path / "o" / "basemap.png")
    assert np.array_equal(pil, nodata) and np.array_equal(gdal, nodata)  # exactly the DEM's nodata, both readers
    area, up = _map_area(tmp_path / "o", nodata.shape)
    assert up == 2
    _hatched_exactly_at(area, nodata, up)


@pytest.mark.shared_data
def test_no_class_tint_over_nodata_whatever_the_mask_holds(shared_data, tmp_path):
    """A mask (and classes) that mark every pixel, nodata too: the map's nodata is still the hatch alone."""
    from rscore_earth.mapplot import MapPngWriter

    path = shared_data / ECUADOR
    if not path.exists():
        pytest.skip(f"{path} is absent")
    scene = engine.open_scene(path, plugin="earth", options={"matcher": "keyword"})
    res = engine.segment(scene, "landslide-prone areas", plugin="earth", options={"matcher": "keyword"})
    full = res.replace(mask=np.ones(scene.shape, bool), class_map=np.full(scene.shape, 3, np.uint8))
    (tmp_path / "o").mkdir()
    MapPngWriter().write(scene, full, tmp_path / "o")
    nodata = ~np.asarray(scene.valid(), bool)
    area, up = _map_area(tmp_path / "o", scene.shape)
    _hatched_exactly_at(area, nodata, up)


def _dem_with_hole(h: int = 150, w: int = 170) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    z = 300 + 4 * xx + 200 * np.sin(yy / 9) * np.cos(xx / 13)
    hole = ((yy - 60) ** 2 + (xx - 90) ** 2 < 25**2) | (xx + yy > 280)
    return np.where(hole, np.float32(-9999), z).astype(np.float32), hole


@pytest.mark.parametrize("preview_max,options", [(None, {}), (60, {"tile_size": 64}), (None, {"tile_size": 48})])
def test_a_nodata_value_dem_whole_and_tiled(write_tif, tmp_path, monkeypatch, preview_max, options):
    """-9999 (not NaN) marks the hole; with a reduction factor a preview pixel is nodata when its whole block is."""
    z, hole = _dem_with_hole()
    path = write_tif("dem.tif", z, nodata=-9999)
    if preview_max is not None:
        monkeypatch.setattr(mapplot, "PREVIEW_MAX", preview_max)
    res = engine.run(path, "steep terrain", plugin="earth", out_dir=tmp_path / "o", options={"matcher": "keyword",
                                                                                          **options})  # fmt: skip
    assert not res.absent and res.mask.any()
    f = mapplot.preview_factor(*z.shape)
    h, w = -(-z.shape[0] // f), -(-z.shape[1] // f)
    padded = np.ones((h * f, w * f), bool)
    padded[: z.shape[0], : z.shape[1]] = hole
    expected = padded.reshape(h, f, w, f).all(axis=(1, 3))
    assert expected.any() and (f == 1 or expected.sum() < hole.sum())
    pil, gdal = _alpha(tmp_path / "o" / "basemap.png")
    assert np.array_equal(pil, expected) and np.array_equal(gdal, expected)
    area, up = _map_area(tmp_path / "o", expected.shape)
    _hatched_exactly_at(area, expected, up)


def _rgbn(h: int = 96, w: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    arr = np.zeros((4, h, w), np.float32)
    arr[:, :, : w // 2] = np.array([0.03, 0.06, 0.08, 0.02])[:, None, None]  # water
    arr[:, :, w // 2 :] = np.array([0.04, 0.08, 0.03, 0.45])[:, None, None]  # vegetation
    arr += rng.normal(0, 0.004, arr.shape).astype(np.float32)
    hole = np.zeros((h, w), bool)
    hole[10:40, 40:100] = True
    hole[70:, :20] = True
    return arr, hole


def test_a_four_band_image_with_a_nodata_value(write_tif, tmp_path):
    """R,G,B,NIR reflectance with nodata -1: the basemap (an image) gets an alpha channel, 0 exactly there; the
    water answer is not tinted over it."""
    from PIL import Image

    arr, hole = _rgbn()
    arr[:, hole] = -1
    path = write_tif("rgbn.tif", arr, nodata=-1, descriptions=["red", "green", "blue", "nir"])
    res = engine.run(path, "open water", plugin="earth", out_dir=tmp_path / "o", options={"template": "water"})
    assert not res.absent and res.mask[:, : arr.shape[2] // 2][~hole[:, : arr.shape[2] // 2]].all()
    with Image.open(tmp_path / "o" / "basemap.png") as im:
        assert im.mode == "RGBA"
    pil, gdal = _alpha(tmp_path / "o" / "basemap.png")
    assert np.array_equal(pil, hole) and np.array_equal(gdal, hole)
    area, up = _map_area(tmp_path / "o", hole.shape)
    _hatched_exactly_at(area, hole, up, hillshade=False)


def test_an_rgb_image_with_an_alpha_band(tmp_path):
    """RGB + alpha (no answer: no template reads RGB alone; the map and basemap are written all the same)."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(4)
    arr, hole = _rgbn()
    img = rng.integers(0, 256, (4, *hole.shape), dtype=np.uint8)
    img[3] = np.where(hole, 0, 255)
    path = tmp_path / "rgba.tif"  # GDAL's ALPHA=YES: the fourth band is an alpha band (GeoTIFF ExtraSamples)
    with rasterio.open(path, "w", driver="GTiff", width=img.shape[2], height=img.shape[1], count=4, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500_000, 5_100_000, 10, 10), photometric="RGB",
                       alpha="YES") as dst:  # fmt: skip
        dst.write(img)
    with rasterio.open(path) as ds:
        assert ds.colorinterp[3] == ColorInterp.alpha
    scene = engine.open_scene(path, plugin="earth")
    assert scene.band_roles[3] == "alpha" and np.array_equal(~np.asarray(scene.valid(), bool), hole)
    engine.run(path, "bright areas", plugin="earth", out_dir=tmp_path / "o", options={"matcher": "keyword"})
    pil, gdal = _alpha(tmp_path / "o" / "basemap.png")
    assert np.array_equal(pil, hole) and np.array_equal(gdal, hole)
    area, up = _map_area(tmp_path / "o", hole.shape)
    _hatched_exactly_at(area, hole, up, hillshade=False)


def test_an_image_without_nodata_keeps_an_rgb_basemap(write_tif, tmp_path):
    """No nodata: no alpha channel to encode (the writer's cost stays), and no "no data" hatch on the map."""
    from PIL import Image

    arr, _ = _rgbn()
    path = write_tif("rgbn.tif", arr, descriptions=["red", "green", "blue", "nir"])
    engine.run(path, "open water", plugin="earth", out_dir=tmp_path / "o", options={"template": "water"})
    with Image.open(tmp_path / "o" / "basemap.png") as im:
        assert im.mode == "RGB"
    area, up = _map_area(tmp_path / "o", arr.shape[1:])
    ys, xs = np.nonzero(np.ones(area.shape[:2], bool))
    hatch = np.where(((ys + xs) % HATCH < 2)[:, None], NODATA_LINE, NODATA_BG).reshape(area.shape)
    assert (area != hatch).any(axis=-1).mean() > 0.99  # (a pixel of the image may happen to be white or grey)


@pytest.mark.skipif(importlib.util.find_spec("fastapi") is None, reason="the service needs fastapi")
def test_the_viewer_basemap_is_transparent_over_nodata(write_tif, tmp_path):
    """The viewer's map view serves the basemap warped to Web Mercator: a DEM already in EPSG:3857 keeps its grid,
    so the basemap's alpha is 0 exactly on the hole (it was 255: the hole was drawn black)."""
    import base64
    import io

    from PIL import Image

    from rscore.service.viewer import map_layers

    z, hole = _dem_with_hole()
    path = write_tif("dem.tif", z, nodata=-9999, crs="EPSG:3857", origin=(1_000_000.0, 5_000_000.0))
    engine.run(path, "steep terrain", plugin="earth", out_dir=tmp_path / "o", options={"matcher": "keyword"})
    view = map_layers(tmp_path / "o")
    with Image.open(io.BytesIO(base64.b64decode(view["base"].split(",", 1)[1]))) as im:
        base = np.asarray(im)
    assert base.shape == (*hole.shape, 4)
    assert np.array_equal(base[..., 3] == 0, hole)
    grey = np.asarray(Image.open(tmp_path / "o" / "basemap.png"))
    assert np.array_equal(base[..., 0][~hole], grey[~hole])  # the data pixels are the basemap's, unchanged
    with Image.open(io.BytesIO(base64.b64decode(view["overlay"].split(",", 1)[1]))) as im:
        overlay = np.asarray(im)
    assert overlay.shape == base.shape and (overlay[..., 3][hole] == 0).all()  # no class tint over nodata
    assert (overlay[..., 3][~hole] == 255).any()


@pytest.mark.parametrize("channels,key", [(1, 0), (3, (0, 0, 0)), (2, None), (4, None)])
def test_png_writer_transparency(tmp_path, channels, key):
    """Grey / RGB with a tRNS key, grey + alpha and RGBA: Pillow and GDAL see the same pixels and transparency."""
    import warnings

    import rasterio
    from PIL import Image

    from rscore_earth.png import save_png

    rng = np.random.default_rng(2)
    shape = (23, 31) if channels == 1 else (23, 31, channels)
    px = rng.integers(1, 256, shape, dtype=np.uint8)
    clear = rng.random((23, 31)) < 0.2
    if key is not None:
        px[clear] = key
    else:
        px[..., -1] = np.where(clear, 0, 255)
    save_png(tmp_path / "x.png", px, transparent=key, row_filter="sub")
    with Image.open(tmp_path / "x.png") as im:
        assert np.array_equal(np.asarray(im), px)
    pil, gdal = _alpha(tmp_path / "x.png")
    assert np.array_equal(pil, clear) and np.array_equal(gdal, clear)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not georeferenced
        with rasterio.open(tmp_path / "x.png") as ds:
            assert ds.count == channels
    with pytest.raises(ValueError, match="transparent key"):
        save_png(tmp_path / "y.png", px, transparent=(1, 2) if channels in (1, 3) else 0)
