"""What GIS users open: COGs with transparent 0, nodata and category names (RAT in the .aux.xml, QGIS .qml),
overviews on small rasters too, RFC 7946 GeoJSON in WGS 84, areas explained per CRS kind, a readable map.png."""

from __future__ import annotations

import json
import math
from xml.etree import ElementTree as ET

import numpy as np
import pytest
from rasterio.transform import from_origin

from rscore import engine
from rscore.tiling import read_window

from rscore_earth import synthetic

EXAMPLE = synthetic.example_path()


@pytest.fixture(scope="module")
def landslide(tmp_path_factory):
    out = tmp_path_factory.mktemp("gis") / "out"
    result = engine.run(EXAMPLE, "landslide-prone areas", plugin="earth", out_dir=out,
                        options={"matcher": "keyword", "min_area_m2": 0, "simplify_m": 0})  # fmt: skip
    return result, out


def test_classes_have_nodata_categories_rat_and_qml(landslide):
    import rasterio

    result, out = landslide
    with rasterio.open(out / "classes.tif") as ds:
        assert ds.nodata == 255
        assert ds.colormap(1)[3][:3] == (211, 47, 47)  # TIFF palettes hold no alpha: 0 is transparent in the RAT/qml
        data = ds.read(1)
        assert np.array_equal(data, read_window(result.class_map))
        assert len(ds.overviews(1)) >= 1
    aux = ET.parse(out / "classes.tif.aux.xml").getroot()
    assert [c.text for c in aux.iter("Category")] == ["none", "low", "medium", "high"]
    rows = [[f.text for f in row.iter("F")] for row in aux.iter("Row")]
    assert rows[0][:2] == ["0", "none"] and rows[0][-1] == "0" and rows[3][:2] == ["3", "high"]
    qml = ET.parse(out / "classes.qml").getroot()
    entries = {e.get("value"): e for e in qml.iter("paletteEntry")}
    assert entries["0"].get("alpha") == "0" and entries["3"].get("label") == "high"
    assert qml.find("pipe/rasterrenderer").get("type") == "paletted"
    assert ET.parse(out / "score.qml").getroot().find("pipe/rasterrenderer").get("type") == "singlebandpseudocolor"
    assert [e.get("alpha") for e in ET.parse(out / "mask.qml").getroot().iter("paletteEntry")] == ["0", "255"]
    assert {"classes_qml", "classes_aux", "mask_qml", "score_qml"} <= set(result.outputs)


def test_cogs_are_zstd_compressed_and_lossless(landslide):
    """One ZSTD level 1 pass (issue 22: 2.2x less CPU than DEFLATE on the float score): the pixels read back are
    the result's, bit for bit, for the mask, the classes and the float score."""
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    result, out = landslide
    valid = np.isfinite(read_window(result.score))
    expected = {
        "mask.tif": np.where(valid, np.asarray(read_window(result.mask), np.uint8), 255),
        "classes.tif": np.where(valid, read_window(result.class_map), 255),
        "score.tif": np.asarray(read_window(result.score), np.float32),
    }
    for name, want in expected.items():
        assert cog_validate(str(out / name), quiet=True)[0]
        with rasterio.open(out / name) as ds:
            assert ds.compression.name == "zstd"
            assert np.array_equal(ds.read(1), want, equal_nan=True)


def test_small_rasters_get_overviews_too(write_tif, tmp_path):
    import rasterio
    from rio_cogeo.cogeo import cog_validate

    from dataclasses import replace
    z = synthetic.generate_dem(replace(synthetic.EXAMPLE_SPEC, height=100, width=100))
    path = write_tif("small.tif", z)
    engine.run(path, "steep terrain", plugin="earth", out_dir=tmp_path / "o", options={"matcher": "keyword"})
    for name in ("mask.tif", "classes.tif", "score.tif"):
        assert cog_validate(str(tmp_path / "o" / name), quiet=True)[0]
        with rasterio.open(tmp_path / "o" / name) as ds:
            assert ds.overviews(1) == [2]


def test_geojson_is_rfc7946_in_wgs84_and_matches_the_gpkg(landslide):
    import pyogrio.raw
    import shapely
    from pyproj import Geod, Transformer

    _, out = landslide
    doc = json.loads((out / "polygons.geojson").read_text())
    assert "crs" not in doc and doc["type"] == "FeatureCollection"
    assert "planar area in the projected CRS EPSG:32633" in doc["area_m2_method"]
    meta, _, wkb, fields = pyogrio.raw.read(out / "polygons.gpkg")
    assert len(doc["features"]) == len(wkb) > 0
    assert "planar" in pyogrio.read_info(out / "polygons.gpkg")["layer_metadata"]["area_m2_method"]
    to_wgs = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    geod = Geod(ellps="WGS84")
    native = shapely.from_wkb(wkb)
    areas = dict(zip(meta["fields"], fields))["area_m2"]
    for i in (0, len(native) // 2, len(native) - 1):
        f = doc["features"][i]
        g = shapely.geometry.shape(f["geometry"])
        lon, lat = to_wgs.transform(*native[i].representative_point().coords[0])
        assert -180 <= lon <= 180 and -90 <= lat <= 90
        assert g.contains(shapely.Point(lon, lat)) or g.distance(shapely.Point(lon, lat)) < 1e-6
        # exterior rings counter-clockwise (RFC 7946 3.1.6)
        assert all(shapely.is_ccw(p.exterior) for p in g.geoms)
        # geodesic area of the WGS 84 polygon ~ planar UTM area (UTM scale factor ~0.9996 near the meridian)
        assert abs(geod.geometry_area_perimeter(g)[0]) == pytest.approx(areas[i], rel=2e-3)
        assert f["properties"]["area_m2"] == pytest.approx(areas[i])


def test_geographic_crs_areas_are_geodesic_and_local_crs_explained(write_tif, tmp_path):
    import pyogrio
    import pyogrio.raw
    from pyproj import Geod

    res, lat0 = 0.0005, 60.0
    z = np.tile(np.linspace(0, 400, 60, dtype=np.float32), (50, 1))
    path = write_tif("geo.tif", z, crs="EPSG:4326", transform=from_origin(10.0, lat0, res, res))
    engine.run(path, "steep terrain", plugin="earth", out_dir=tmp_path / "g",
               options={"slope_min_deg": 0, "min_area_m2": 0, "simplify_m": 0, "matcher": "keyword"})  # fmt: skip
    meta, _, wkb, fields = pyogrio.raw.read(tmp_path / "g" / "polygons.gpkg")
    import shapely

    geod = Geod(ellps="WGS84")
    area = dict(zip(meta["fields"], fields))["area_m2"]
    for g, a in zip(shapely.from_wkb(wkb), area):
        assert a == pytest.approx(abs(geod.geometry_area_perimeter(g)[0]), rel=1e-9)
        # a degree of longitude at 60 N is half of one at the equator: a planar-degree area would be far off
        assert a < g.area * 111_320**2 * 0.55
    assert "geodesic" in pyogrio.read_info(tmp_path / "g" / "polygons.gpkg")["layer_metadata"]["area_m2_method"]
    # a raster without CRS: the area comes from pixel_size_m, said so; no GeoJSON (its coordinates would be wrong)
    nocrs = write_tif("nocrs.tif", z, crs=None)
    res = engine.run(nocrs, "steep terrain", plugin="earth", out_dir=tmp_path / "n",
                     options={"slope_min_deg": 0, "pixel_size_m": "30", "matcher": "keyword"})  # fmt: skip
    method = pyogrio.read_info(tmp_path / "n" / "polygons.gpkg")["layer_metadata"]["area_m2_method"]
    assert "pixel_size_m" in method and "no CRS" in method
    assert "polygons_geojson" not in res.outputs and not (tmp_path / "n" / "polygons.geojson").exists()


def test_map_png_is_readable_and_georeferenced(write_tif, tmp_path):
    import rasterio
    from dataclasses import replace
    from PIL import Image

    from rscore_earth.mapplot import MIN_MAP

    z = synthetic.generate_dem(replace(synthetic.EXAMPLE_SPEC, height=100, width=120))
    path = write_tif("small.tif", z)
    res = engine.run(path, "steep terrain", plugin="earth", out_dir=tmp_path / "o", options={"matcher": "keyword"})
    assert {"map_png", "map_pgw", "map_aux"} <= set(res.outputs)
    with Image.open(tmp_path / "o" / "map.png") as im:
        assert im.width >= MIN_MAP  # a 120 px DEM still gives a map people can read
        rgb = np.asarray(im.convert("RGB"))
    with rasterio.open(path) as src, rasterio.open(tmp_path / "o" / "map.png") as m:
        assert m.crs == src.crs  # from map.png.aux.xml
        up = round(src.res[0] / m.res[0])
        assert up >= 2 and src.res[0] / m.res[0] == pytest.approx(up, rel=1e-12)
        # the DEM's corners land on the map area's corners (the frame lies outside the raster's extent)
        (r0, c0), (r1, c1) = m.index(src.bounds.left + 1e-6, src.bounds.top - 1e-6), m.index(
            src.bounds.right - 1e-6, src.bounds.bottom + 1e-6)
        assert (r1 - r0 + 1, c1 - c0 + 1) == (100 * up, 120 * up)
    # inside the map area: the hillshade (grey varies); the frame around it is white with a title
    area = rgb[r0 : r1 + 1, c0 : c1 + 1]
    assert area.std() > 10 and (rgb[: r0 - 2] == 255).mean() > 0.8 and (rgb[: r0 - 2] < 100).any()
